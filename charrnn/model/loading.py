"""A model from a saved run: built fresh or restored to train on (its vocabulary grown for
fine-tuning), or loaded from a checkpoint ready for inference. Sampling, ``info``, ``eval``,
``export`` and ``vocab`` load their model here, without any training code."""

from __future__ import annotations

from pathlib import Path

import torch

from charrnn.data.vocab_kinds import restore_vocab
from charrnn.device import available_memory, resolve_device
from charrnn.errors import CheckpointError, InsufficientMemory
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.saved import SavedRun

# Bytes per parameter while training: the fp32 weight, its gradient, AdamW's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_fits(config: ModelConfig, device: torch.device) -> None:
    """Refuse a model whose training state cannot fit in the device's memory, saying how big
    it is, before allocating it (a failed allocation says less, and may take minutes of
    swapping first). The model is built on the CPU before it moves to a GPU."""
    parameters = config.num_parameters()
    needs = [(device, parameters * TRAINING_BYTES_PER_PARAMETER, "weights, gradients and AdamW state")]
    if device.type != "cpu":
        needs.append((torch.device("cpu"), parameters * 4, "weights, built on the CPU first"))
    for where, need, what in needs:
        free = available_memory(where)
        if free is not None and need > free:
            raise InsufficientMemory(
                f"a {config.layers}x{config.hidden} {config.cell.upper()} with vocabulary "
                f"{config.vocab_size} has {parameters:,} parameters: training needs "
                f"{need / 2**30:,.1f} GiB ({what}), more than the {free / 2**30:,.1f} GiB of "
                f"{'GPU ' if where.type == 'cuda' else ''}memory available; choose a smaller "
                "--hidden, --layers or --embed"
            )


def build_model(config: ModelConfig, saved: SavedRun | None, device: torch.device) -> CharRNN:
    """The model to train, on ``device``: fresh (drawn from torch's generator as seeded now),
    or with ``saved``'s weights, rows for characters new to a grown vocabulary left fresh."""
    model = CharRNN(config)
    if saved is not None:
        model.load_state_dict(grown_weights(saved.weights, model, len(saved.vocab)))
    model.to(device)
    if device.type == "cuda":
        model.rnn.flatten_parameters()
    return model


def grown_weights(weights: dict, model: CharRNN, old_vocab: int) -> dict:
    """``weights`` for ``model``: when its vocabulary is bigger, the old rows copied into the
    bigger embedding and decoder, and the new characters' rows kept as ``model`` drew them."""
    if model.config.vocab_size <= old_vocab:
        return weights
    fresh = model.state_dict()
    grown = dict(weights)
    for name in ("embedding.weight", "decoder.weight", "decoder.bias"):
        rows = fresh[name].clone()
        rows[:old_vocab] = weights[name]
        grown[name] = rows
    return grown


def load_model(path: Path, which: str = "last", device: str = "auto"):
    """A model ready for inference from a checkpoint file or run directory, on any device:
    (model, vocabulary, the ``SavedRun`` it came from)."""
    target = resolve_device(device)
    saved = SavedRun.load(path, which)
    try:
        model = CharRNN(saved.model_config)
        model.load_state_dict(saved.weights)
        vocab = restore_vocab(saved.vocab)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint content is inconsistent ({exc})") from None
    model.to(target).eval()
    if target.type == "cuda":
        model.rnn.flatten_parameters()
    return model, vocab, saved
