"""A training run on disk: resolve options, load the corpus, build or restore the model and
trainer, and keep the run directory (checkpoints, metrics log, resolved config) up to date.

Run directory::

    checkpoints/<name>/
        last.pt          latest state (periodic, and at the end or on interruption)
        best.pt          state at the best validation loss so far
        metrics.jsonl    one JSON object per step and per evaluation
        samples.txt      a short sample at every evaluation, to watch the text improve
        config.json      the resolved model, training and corpus options
        config.toml      the same as options for `charrnn train --config` (repeats the run)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from charrnn import __version__, checkpoint, distributed
from charrnn.batches import plan_layout
from charrnn.corpus import Corpus, Sources, load_corpus, resolve_sources
from charrnn.device import (
    MAX_SEED,
    available_memory,
    check_deterministic_resume,
    resolve_device,
    resolve_precision,
    seed_everything,
    use_deterministic_algorithms,
)
from charrnn.errors import CheckpointError, ConfigError, InsufficientMemory
from charrnn.model import CharRNN, ModelConfig
from charrnn.presets import preset_training, resolve_preset
from charrnn.train import Callback, EvalStats, StepStats, TrainConfig, Trainer, default_batch_size
from charrnn.tokenizer_modes import SubwordVocab, load_token_corpus, tokenizer_kind, vocab_from_payload
from charrnn.vocab import Vocab

ARCHITECTURE_KEYS = ("cell", "layers", "hidden", "embed")
MAX_INTEGER = 2**63 - 1
MODEL_KEYS = ARCHITECTURE_KEYS + ("dropout",)
DEFAULT_MINUTES = 10.0
EVAL_SAMPLE_CHARS = 200


@dataclass
class RunRequest:
    """What the user asked for. ``None`` means "not given": take it from the checkpoint being
    resumed, then the preset, then the defaults."""

    sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)
    encoding: str | None = None
    val_frac: float | None = None
    out: Path | None = None
    resume: Path | None = None
    extend_vocab: bool = False
    tokenizer: str | None = None  # "chars" (the default), "bytes" or "bpe"
    vocab_size: int | None = None  # BPE only
    preset: str | None = None
    model: dict = field(default_factory=dict)  # cell, layers, hidden, embed, dropout
    train: dict = field(default_factory=dict)  # TrainConfig fields
    epochs: float | None = None
    device: str = "auto"
    checkpoints_root: Path = Path("checkpoints")


@dataclass
class Run:
    directory: Path
    corpus: Corpus
    model: CharRNN
    trainer: Trainer
    corpus_options: dict
    resumed_from: Path | None = None

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab

    def payload(self) -> dict:
        """Everything a checkpoint holds: enough to sample alone, or to continue exactly."""
        progress = self.trainer.progress
        return {
            "charrnn_version": __version__,
            "model_config": self.model.config.to_dict(),
            "vocab": list(self.vocab.chars),
            **({"tokenizer": self.vocab.payload()} if isinstance(self.vocab, SubwordVocab) else {}),
            "train_config": self.trainer.config.to_dict(),
            "corpus": self.corpus_options,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "trainer": self.trainer.state_dict(),
            "metrics": {
                "step": progress.step,
                "elapsed": progress.elapsed,
                "best_val_loss": progress.best_val_loss,
                "best_val_bpc": None
                if progress.best_val_loss is None
                else progress.best_val_loss * self.trainer.tokens_per_char / math.log(2),
            },
        }


class CheckpointWriter(Callback):
    def __init__(self, run: Run) -> None:
        self.run = run

    def on_checkpoint(self, trainer: Trainer, best: bool) -> None:
        name = checkpoint.BEST if best else checkpoint.LAST
        payload = self.run.payload()  # under torchrun, a collective: every rank takes part
        if distributed.is_main():
            checkpoint.save(payload, self.run.directory / name)


class MetricsLog(Callback):
    """Appends one JSON line per step and per evaluation, flushed so a crash loses nothing."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            # Steps after the checkpoint will be trained again: drop their old lines, and the
            # torn last line a kill -9 may have left. Rewritten atomically: a crash now must
            # not lose the history either.
            kept = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                step = _line_step(line)
                if step is not None and step <= resume_step:
                    kept.append(line)
            checkpoint.atomic_write(path, "".join(line + "\n" for line in kept).encode("utf-8"), "metrics log")
        try:
            self.handle = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot write the metrics log {path}: {exc.strerror}") from None

    def _write(self, record: dict) -> None:
        try:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        except OSError as exc:
            raise CheckpointError(
                f"cannot append to the metrics log {self.path}: {exc.strerror}; "
                "the checkpoints written so far are intact"
            ) from None

    def on_step(self, trainer: Trainer, stats: StepStats) -> None:
        self._write(
            {
                "event": "step",
                "step": stats.step,
                "epoch": stats.epoch,
                "loss": stats.loss,
                "lr": stats.lr,
                "grad_norm": stats.grad_norm,
                "chars_per_s": stats.chars / stats.seconds if stats.seconds else None,
                "elapsed": stats.elapsed,
                "time": time.time(),
            }
        )

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        self._write(
            {
                "event": "eval",
                "step": stats.step,
                "val_loss": stats.val_loss,
                "val_bpc": stats.val_bpc,
                "improved": stats.improved,
                "elapsed": trainer.progress.elapsed,
                "time": time.time(),
            }
        )

    def close(self) -> None:
        self.handle.close()


def _line_step(line: str) -> int | None:
    """The step a metrics line belongs to, or None for a line that is not a whole record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class EvalSamples(Callback):
    """Appends a short sample to ``samples.txt`` after every evaluation. The seed is the same
    each time, so successive samples differ only by what the model has learnt; sampling has
    its own generator, so training's random streams (and exact resume) are untouched."""

    def __init__(self, path: Path, vocab: Vocab, chars: int, seed: int, resume_step: int | None = None) -> None:
        self.path = path
        self.vocab = vocab
        self.chars = chars
        self.seed = seed
        if resume_step is not None and path.exists():
            self._append(f"=== resumed at step {resume_step} ===\n\n")

    def _append(self, text: str) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CheckpointError(f"cannot append to {self.path}: {exc.strerror}") from None

    def on_eval(self, trainer: Trainer, stats: EvalStats) -> None:
        from charrnn.sample import SampleConfig, generate_batch

        if self.chars <= 0:
            return
        # A run from before seeds were range-checked may hold a negative one: fold it in.
        config = SampleConfig(length=self.chars, temperature=0.8, seed=self.seed % (MAX_SEED + 1))
        (text,) = generate_batch(trainer.model, self.vocab, config, trainer.device)
        self._append(f"=== step {stats.step}, val {stats.val_bpc:.4f} bpc ===\n{text}\n\n")


def _default_run_name(sources: Sources) -> str:
    stem = sources.train[0].stem if sources.train else "run"
    return f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _resolve_model_options(request: RunRequest, stored: dict | None, preset_options: dict) -> dict:
    options = dict(preset_options)
    options["cell"] = "lstm"
    if stored is not None:
        options.update({k: stored[k] for k in MODEL_KEYS})
        for key in ARCHITECTURE_KEYS:
            given = request.model.get(key)
            if given is not None and given != stored[key]:
                raise ConfigError(
                    f"--{key} {given} differs from the checkpoint's {stored[key]}; "
                    "a resumed model keeps its architecture"
                )
    options.update({k: v for k, v in request.model.items() if v is not None})
    return options


def _check_numbers(request: RunRequest) -> None:
    """Refuse what no later check catches before the run directory exists: NaN and infinity
    (NaN fails no comparison, so ranges let it through; infinity passes open ranges and cannot
    be written to config.toml), integers past 64 bits, seeds the random generators cannot
    take, and an empty encoding (which would silently mean the default)."""
    numbers = {
        **{f"--{k.replace('_', '-')}": v for k, v in {**request.model, **request.train}.items()},
        "--val-frac": request.val_frac,
        "--epochs": request.epochs,
        "--vocab-size": request.vocab_size,
    }
    for option, value in numbers.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option} must be a finite number, not {value}")
        if isinstance(value, int) and value > MAX_INTEGER:
            # Checkpoints and config.toml hold 64-bit integers; a bigger count is a typo.
            raise ConfigError(f"{option} must be at most {MAX_INTEGER} (2**63 - 1), not {value}")
    seed = request.train.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
        raise ConfigError(f"--seed must be in 0..{MAX_SEED} (2**63 - 1), not {seed}")
    if request.encoding is not None and not request.encoding.strip():
        raise ConfigError("--encoding must not be empty: name a text encoding such as utf-8")


# Bytes per parameter while training: the fp32 weight, its gradient, AdamW's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def _check_model_fits(config: ModelConfig, device) -> None:
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


def prepare_run(request: RunRequest) -> Run:
    """Everything up to the first training step; raises ``CharRNNError`` on bad input."""
    _check_numbers(request)
    device = resolve_device(request.device)
    stored = None
    resumed_from = None
    if request.extend_vocab and request.resume is None:
        raise ConfigError("--extend-vocab fine-tunes a trained model: it needs --resume RUN")
    if request.resume is not None:
        resumed_from = checkpoint.resolve(request.resume)
        stored = checkpoint.load(resumed_from)

    # -- corpus ------------------------------------------------------------------
    stored_corpus = stored["corpus"] if stored else {}
    specs = request.sources or stored_corpus.get("train_files", [])
    val_specs = request.val_sources or ([] if request.sources else stored_corpus.get("val_files", []))
    encoding = request.encoding or stored_corpus.get("encoding", "utf-8")
    val_frac = request.val_frac if request.val_frac is not None else stored_corpus.get("val_frac", 0.1)
    if not 0 <= val_frac < 1:
        raise ConfigError("--val-frac must be in [0, 1)")
    sources = resolve_sources(specs, val_specs, encoding)
    kind = tokenizer_kind(request.tokenizer, stored)
    if kind == "chars" and request.vocab_size is not None:
        raise ConfigError(
            "--vocab-size applies to --tokenizer bpe only; the chars tokenizer's vocabulary "
            "is every character of the text"
        )
    tokens_per_char = 1.0
    if kind == "chars":
        vocab = Vocab(tuple(stored["vocab"])) if stored else None
        corpus = load_corpus(sources, encoding, val_frac, vocab, request.extend_vocab)
    else:
        corpus, tokens_per_char = load_token_corpus(
            sources, encoding, val_frac, kind, request.vocab_size, stored, request.extend_vocab
        )
    corpus_options = {
        "train_files": [str(p.resolve()) for p in sources.train],
        "val_files": [str(p.resolve()) for p in sources.val],
        "encoding": encoding,
        "val_frac": val_frac,
        "tokenizer": kind,
        **({"vocab_size": len(corpus.vocab)} if kind == "bpe" else {}),
    }

    # -- configs -----------------------------------------------------------------
    preset, preset_options = resolve_preset(request.preset, device.type)
    model_options = _resolve_model_options(request, stored["model_config"] if stored else None, preset_options)
    model_config = ModelConfig(vocab_size=len(corpus.vocab), **model_options)
    train_options = TrainConfig.from_dict(stored["train_config"]).to_dict() if stored else {}
    train_options.update({k: v for k, v in request.train.items() if v is not None})
    train_options.setdefault("batch_size", default_batch_size(device))
    if not stored:
        for name, value in preset_training(preset).items():
            train_options.setdefault(name, value)
    if request.epochs is not None:
        if request.epochs <= 0:
            raise ConfigError("--epochs must be positive")
        train_options["max_steps"] = None  # computed below from the batch layout
    if (
        not stored
        and request.epochs is None
        and train_options.get("max_steps") is None
        and train_options.get("minutes") is None
    ):
        train_options["minutes"] = DEFAULT_MINUTES
    train_config = TrainConfig(**train_options) if request.epochs is None else None
    if train_options.get("deterministic"):
        check_deterministic_resume(device, model_config.layers, model_config.dropout)

    # -- model and trainer -------------------------------------------------------
    _check_model_fits(model_config, device)
    if not stored:
        seed_everything(TrainConfig(**train_options).seed)
    model = CharRNN(model_config)
    if stored:
        old_vocab = len(stored["vocab"])
        weights = stored["model"]
        if len(corpus.vocab) > old_vocab:
            weights = _extend_weights(weights, model, old_vocab)
        model.load_state_dict(weights)
    model.to(device)
    if device.type == "cuda":
        model.rnn.flatten_parameters()
    use_deterministic_algorithms(bool(train_options.get("deterministic", False)))
    amp_dtype = resolve_precision(train_options.get("precision", "auto"), device)
    if train_config is None:
        provisional = TrainConfig(**train_options)
        windows = plan_layout(len(corpus.train), provisional.batch_size, provisional.seq_len).windows
        train_options["max_steps"] = max(1, math.ceil(request.epochs * windows))
        train_config = TrainConfig(**train_options)
    ddp_model = None
    if distributed.active():
        if not stored:
            # The weights were drawn alike on every rank; dropout should not be.
            seed_everything(train_config.seed + distributed.rank())
        ddp_model = distributed.wrap(model, device)
    trainer = Trainer(
        model,
        train_config,
        corpus.train,
        corpus.val,
        device,
        amp_dtype,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
        ddp_model=ddp_model,
    )
    trainer.tokens_per_char = tokens_per_char
    if stored:
        if len(corpus.vocab) == len(stored["vocab"]):
            trainer.load_state_dict(stored["trainer"])
        else:
            # New characters change the parameter shapes: the optimizer starts afresh.
            trainer.progress.step = int(stored["trainer"]["progress"]["step"])

    # -- directory ---------------------------------------------------------------
    if request.out is not None:
        directory = Path(request.out)
    elif resumed_from is not None:
        directory = resumed_from.parent
    else:
        directory = request.checkpoints_root / _default_run_name(sources)
    continues_in_place = resumed_from is not None and _same_dir(directory, resumed_from.parent)
    if (directory / checkpoint.LAST).exists() and not continues_in_place:
        raise ConfigError(
            f"{directory} already holds a run; continue it with --resume {directory} "
            "or choose another --out"
        )
    if continues_in_place and stored and len(corpus.vocab) != len(stored["vocab"]):
        # The grown model cannot continue the old run: writing it there would replace the
        # original model's checkpoints.
        raise ConfigError(
            "--extend-vocab makes a new model with a bigger vocabulary; give it its own "
            "run directory with --out DIR (the original run is kept)"
        )
    run = Run(directory, corpus, model, trainer, corpus_options, resumed_from)
    if distributed.is_main():  # the only rank that writes files
        created = _first_missing(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create run directory {directory}: {exc.strerror}") from None
        try:
            checkpoint.remove_stale_temporaries(directory)
            _write_config(run)
        except BaseException:
            # A failed start leaves no half-made run behind: only what this call created.
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
    return run


def _first_missing(directory: Path) -> Path | None:
    """The outermost of ``directory`` and its parents that does not exist yet (what
    ``mkdir(parents=True)`` creates), or None when ``directory`` exists."""
    missing = None
    for candidate in (directory, *directory.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    return missing


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _extend_weights(weights: dict, model: CharRNN, old_vocab: int) -> dict:
    """Copy old rows into the bigger embedding and decoder; new characters keep fresh weights."""
    fresh = model.state_dict()
    extended = dict(weights)
    for name in ("embedding.weight", "decoder.weight", "decoder.bias"):
        grown = fresh[name].clone()
        grown[:old_vocab] = weights[name]
        extended[name] = grown
    return extended


def _write_config(run: Run) -> None:
    config = {
        "charrnn_version": __version__,
        "model": run.model.config.to_dict(),
        "train": run.trainer.config.to_dict(),
        "corpus": run.corpus_options,
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
    }
    from charrnn.config_file import resolved_options, to_toml

    options = resolved_options(config["model"], config["train"], config["corpus"])
    header = (
        f"charrnn {__version__}: the resolved options of this run.\n"
        "Repeat it with: charrnn train --config THIS_FILE --out NEW_DIR"
    )
    # Both made before either is written: a value one cannot hold leaves neither behind.
    as_json = (json.dumps(config, indent=2) + "\n").encode("utf-8")
    as_toml = to_toml(options, header).encode("utf-8")
    checkpoint.atomic_write(run.directory / "config.json", as_json, "run config")
    checkpoint.atomic_write(run.directory / "config.toml", as_toml, "run config")


def train_run(
    run: Run,
    callbacks: list[Callback] = (),
    sample_chars: int = EVAL_SAMPLE_CHARS,
    tensorboard: bool = False,
):
    """Fit with the checkpoint writer, metrics log and evaluation samples attached (0
    ``sample_chars`` turns the samples off; ``tensorboard`` mirrors the metrics into
    RUN_DIR/tensorboard); returns the ``FitResult``."""
    if not distributed.is_main():
        # Other ranks take part in checkpoints (their state is gathered) but write nothing.
        run.trainer.callbacks = [CheckpointWriter(run)]
        return run.trainer.fit()
    resume_step = run.trainer.step if run.resumed_from is not None else None
    metrics = MetricsLog(run.directory / "metrics.jsonl", resume_step)
    samples = EvalSamples(run.directory / "samples.txt", run.vocab, sample_chars, run.trainer.config.seed, resume_step)
    board = None
    if tensorboard:
        from charrnn.tensorboard_log import TensorBoardLog

        board = TensorBoardLog(run.directory / "tensorboard", resume_step)
    run.trainer.callbacks = [CheckpointWriter(run), metrics, samples, *([board] if board else []), *callbacks]
    try:
        return run.trainer.fit()
    finally:
        metrics.close()
        if board is not None:
            board.close()


def load_model(path: Path, which: str = "last", device: str = "auto") -> tuple[CharRNN, Vocab, dict]:
    """A model ready for inference from a checkpoint file or run directory, on any device."""
    target = resolve_device(device)
    payload = checkpoint.load(path, which)
    try:
        model = CharRNN(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["model"])
        vocab = vocab_from_payload(payload)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint content is inconsistent ({exc})") from None
    model.to(target).eval()
    if target.type == "cuda":
        model.rnn.flatten_parameters()
    return model, vocab, payload
