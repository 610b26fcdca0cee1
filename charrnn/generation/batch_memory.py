"""The memory a batch of samples takes, estimated before it is allocated, and the size of the
pieces a big batch is stepped in (so that a Ctrl-C between pieces is taken at once)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from charrnn.cells import CELLS
from charrnn.memory import largest_fitting, require_memory

if TYPE_CHECKING:
    from charrnn.generation.sample import SampleConfig


def gate_products(model_config) -> int:
    """Values of one step's gate products per sample: one block per gate, twice where the
    state's products are kept apart from the input's."""
    cell = CELLS[model_config.cell]
    return cell.weight_blocks * model_config.hidden * (2 if cell.state_products_apart else 1)


def state_bytes(model_config) -> int:
    """Bytes of one sample's recurrent state (float32), every layer."""
    return model_config.layers * model_config.hidden * 4 * CELLS[model_config.cell].state_parts


# Floating-point work of one piece of a batch stepped at once: 10-50 ms on a busy 2-core CPU
# (torch's matrix products ran at 10-40 GFLOP/s there), so that a Ctrl-C asked between pieces
# is taken at once. Larger pieces left more of the freed temporaries of the pieces before
# them in the process (peak RSS 10.1 KB a sample for 20,000 samples of a 2x256 LSTM at 2e9,
# 8.6 KB at 5e8, where the states and noise take 8.4). Smaller batches are stepped whole.
PIECE_FLOPS = {"cpu": 5e8, "cuda": 2e11}


def step_flops(model_config) -> int:
    """Multiply-adds x 2 of one step of one sample: every layer's gates and the decoder."""
    gates = CELLS[model_config.cell].weight_blocks * model_config.hidden
    widths = [model_config.embed] + [model_config.hidden] * (model_config.layers - 1)
    recurrent = sum(gates * (width + model_config.hidden) for width in widths)
    return 2 * (recurrent + model_config.hidden * model_config.vocab_size)


def piece_rows(model_config, device: torch.device | str = "cpu", steps: int = 1) -> int:
    """Samples stepped together, ``steps`` steps at a time (a prime runs all its characters
    in one call), for one piece of a batch."""
    budget = PIECE_FLOPS["cuda" if torch.device(device).type == "cuda" else "cpu"]
    return max(1, int(budget // (step_flops(model_config) * steps)))


# What a batch keeps per sample in Python objects, measured (tracemalloc, and peak RSS of
# `charrnn sample` less that of a single sample, 1x32 to 2x256 models): its list of pieces
# not yet given out and the lists, texts and separator lines the command keeps for it; and
# per character of its text, the pointers to its pieces and the slack of the lists that
# hold them, beside two copies of the text itself (counted at the vocabulary's widest
# character: 1, 2 or 4 bytes).
PYTHON_BYTES_PER_SAMPLE = 400
PYTHON_BYTES_PER_CHAR = 14
# Values of a vocabulary's size per sample while a step draws: the logits, scaled by the
# temperature, the probabilities and the noise; with top-k, top-p, min-p or a repetition
# penalty, the filters' copies, masks and sort (its int64 order counts twice).
LOGIT_COPIES = 4
FILTERED_LOGIT_COPIES = 12


def sample_memory(model_config, config: SampleConfig, device: torch.device | str = "cpu", vocab=None) -> int:
    """Bytes ``generate_ids`` and ``stream_samples`` take for ``config``'s batch, and the texts
    a caller keeps.

    Every sample keeps its state twice during a step (the old one and the new), a row of
    noise, its ids, the penalty's int64 history (twice while it grows) and its Python
    objects. The samples stepped at once (the whole batch, or one piece of a big one) also
    take a step's temporaries (counted twice, see below): the embedding, the layer's gate
    products (a GRU keeps the input's and the state's apart), its output and new state, and
    a row of logits; or, if more, the draw's copies of the logits. The prime runs all its
    characters in one call, which keeps every character's products and logits until its
    last one is drawn from."""
    n, v = config.num_samples, model_config.vocab_size
    hidden, embed = model_config.hidden, model_config.embed
    gates, state = gate_products(model_config), state_bytes(model_config)
    window = config.repetition_window if config.repetition_penalty != 1.0 else 0
    copies = LOGIT_COPIES if config.is_plain() else FILTERED_LOGIT_COPIES
    prime = max(1, len(config.prime))
    per_sample = (
        2 * state + 4 * v + 16 + 2 * 8 * min(window, prime + config.length)
        + PYTHON_BYTES_PER_SAMPLE + config.length * (PYTHON_BYTES_PER_CHAR + 2 * char_width(vocab))
    )
    layer_step = embed + gates + 2 * hidden + v
    # Twice: the heap keeps the freed temporaries of the step before beside the new ones (peak
    # RSS of 10,000 to 50,000 samples of a 1x32 LSTM, stepped whole, grew by 1.9-2.1 KB a
    # sample beyond the states, noise and objects, for 1 KB of temporaries).
    step = 2 * 4 * max(layer_step, copies * v)
    primed = 4 * max(prime * layer_step, (prime + copies - 1) * v)
    rows, prime_rows = piece_rows(model_config, device), piece_rows(model_config, device, prime)
    return n * per_sample + max(min(n, rows) * step, min(n, prime_rows) * primed)


def char_width(vocab) -> int:
    """Bytes per character of a str made of ``vocab``'s characters (CPython stores a str at
    its widest character's width); 4 where the pieces are not known."""
    chars = getattr(vocab, "chars", None)
    if vocab is None or getattr(vocab, "kind", "chars") != "chars" or not chars:
        return 4
    widest = max(ord(ch) for ch in chars)
    return 1 if widest < 0x100 else 2 if widest < 0x10000 else 4


def texts_memory(vocab, config: SampleConfig) -> int:
    """The part of ``sample_memory`` that does not depend on the model: every sample's Python
    objects and text, its ids and its row of noise."""
    per_sample = (
        4 * len(vocab) + 16 + PYTHON_BYTES_PER_SAMPLE + config.length * (PYTHON_BYTES_PER_CHAR + 2 * char_width(vocab))
    )
    return config.num_samples * per_sample


def check_texts_memory(vocab, config: SampleConfig) -> None:
    need = texts_memory(vocab, config)
    per_sample = need / config.num_samples
    fit = largest_fitting(per_sample)
    require_memory(
        need,
        f"{config.num_samples:,} samples of {config.length:,} characters (at least {int(per_sample):,} bytes "
        "each for their texts, whatever the model)",
        f"at most --num-samples {fit:,} fits" if fit else "lower --length",
    )


def check_sample_memory(model_config, config: SampleConfig, device: torch.device | str = "cpu", vocab=None) -> None:
    """Refuse a batch whose memory would not fit, naming the largest --num-samples that would."""
    need = sample_memory(model_config, config, device, vocab)
    if config.num_samples == 1:
        per_sample = need
    else:
        single = sample_memory(model_config, replace(config, num_samples=1), device, vocab)
        per_sample = max(1, (need - single) / (config.num_samples - 1))
    fit = largest_fitting(per_sample, fixed=0)
    require_memory(
        need,
        f"{config.num_samples:,} samples of {config.length:,} characters ({int(per_sample):,} bytes each)",
        f"at most --num-samples {fit:,} fits" if fit else "lower --length, or use a smaller model",
        torch.device(device),
    )
