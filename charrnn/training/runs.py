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

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from charrnn import __version__, checkpoint
from charrnn.training import distributed
from charrnn.data.batches import StreamLayout, plan_layout
from charrnn.data.corpus import Corpus, Sources, load_corpus, resolve_sources
from charrnn.device import (
    available_memory,
    check_deterministic_resume,
    resolve_device,
    resolve_precision,
    seed_everything,
    use_deterministic_algorithms,
)
from charrnn.errors import CheckpointError, ConfigError, CorpusError, InsufficientMemory
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.options import MAX_SEED
from charrnn.model.presets import preset_training, resolve_preset
from charrnn.threads import ThreadGovernor, ThreadPolicy, resolve_policy
from charrnn.units import nats_to_bpc
from charrnn.training.trainer import Callback, EvalStats, StepStats, TrainConfig, Trainer, default_batch_size
from charrnn.data.vocab_kinds import SubwordVocab, load_token_corpus, tokenizer_kind, vocab_from_payload
from charrnn.data.vocab import Vocab

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
    # With --resume: added to the stored budget (--max-steps, --epochs and --minutes are totals).
    extend_steps: int | None = None
    extend_epochs: float | None = None
    extend_minutes: float | None = None
    device: str = "auto"
    threads: int | None = None  # --threads: a fixed count; None lets the governor choose
    checkpoints_root: Path = Path("checkpoints")


@dataclass
class Run:
    directory: Path
    corpus: Corpus
    model: CharRNN
    trainer: Trainer
    corpus_options: dict
    resumed_from: Path | None = None
    extended_by: dict = field(default_factory=dict)  # "steps", "minutes": what a resume added
    # One line each about a resume that cannot continue exactly as it was: the caller shows them.
    notices: list[str] = field(default_factory=list)
    threads: ThreadPolicy | None = None

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
                else nats_to_bpc(progress.best_val_loss, self.trainer.tokens_per_char),
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


class GovernThreads(Callback):
    """Feeds each training step's speed to the thread governor, which may change the count
    between steps (the result does not depend on it, only the speed)."""

    def __init__(self, governor: ThreadGovernor) -> None:
        self.governor = governor

    def on_step(self, trainer: Trainer, stats: StepStats) -> None:
        self.governor.observe(stats.seconds, stats.chars)


def thread_callbacks(run: Run) -> list[Callback]:
    """Apply the run's thread policy: a fixed count now, or a governor that paces the steps.
    Only on the CPU: a GPU step's speed does not depend on the CPU's thread count."""
    policy = run.threads or resolve_policy(None)
    if run.trainer.device.type != "cpu":
        return []
    governor = ThreadGovernor.for_policy(policy)
    return [] if governor is None else [GovernThreads(governor)]


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
                "threads": stats.threads,
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
        from charrnn.generation.sample import SampleConfig, generate_batch

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
    for option, value in _extensions(request):
        if request.resume is None:
            raise ConfigError(f"{option} adds to the budget of a run being resumed: it needs --resume RUN")
        if value <= 0:
            raise ConfigError(f"{option} must be positive")
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
    given = {k: v for k, v in request.train.items() if v is not None}
    # A resumed run keeps its budget: totals given again are checked against it once the
    # trainer stands where the checkpoint left it (``_resolve_budget``).
    given_totals = {k: given.pop(k) for k in BUDGET_KEYS if stored and k in given}
    train_options.update(given)
    train_options.setdefault("batch_size", default_batch_size(device))
    if not stored:
        for name, value in preset_training(preset).items():
            train_options.setdefault(name, value)
    if request.epochs is not None:
        if request.epochs <= 0:
            raise ConfigError("--epochs must be positive")
        if not stored:
            train_options["max_steps"] = None  # computed below from the batch layout
    if (
        not stored
        and request.epochs is None
        and train_options.get("max_steps") is None
        and train_options.get("minutes") is None
    ):
        train_options["minutes"] = DEFAULT_MINUTES
    train_config = TrainConfig(**train_options) if request.epochs is None or stored else None
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
        # Steps per pass over the text: under torchrun each step reads a window on every rank.
        windows = plan_layout(
            len(corpus.train), provisional.batch_size, provisional.seq_len, distributed.world_size()
        ).windows
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
    fingerprint = _text_fingerprint(corpus.train, trainer.val_ids)
    corpus_options["fingerprint"] = fingerprint
    notices: list[str] = []
    extended_by: dict = {}
    if stored:
        if len(corpus.vocab) == len(stored["vocab"]):
            trainer.load_state_dict(stored["trainer"])
        else:
            # New characters change the parameter shapes: the optimizer starts afresh, and the
            # run's place in its budget and schedule carries on.
            trainer.load_schedule_position(stored["trainer"]["progress"])
        stored_config = TrainConfig.from_dict(stored["train_config"])
        notices += _check_continuation(trainer, stored_config, stored_corpus.get("fingerprint"), fingerprint, kind)
        extended_by = _resolve_budget(request, given_totals, trainer)

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
    run = Run(
        directory, corpus, model, trainer, corpus_options, resumed_from, extended_by, notices, resolve_policy(request.threads)
    )
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


BUDGET_KEYS = ("max_steps", "minutes")


def _extensions(request: RunRequest) -> list[tuple[str, float]]:
    given = [
        ("--extend-steps", request.extend_steps),
        ("--extend-epochs", request.extend_epochs),
        ("--extend-minutes", request.extend_minutes),
    ]
    return [(option, value) for option, value in given if value is not None]


def describe_budget(config: TrainConfig) -> str:
    """A budget in words: "400 steps", "10 min" or "400 steps + 10 min"."""
    parts = [f"{config.max_steps} steps" if config.max_steps else "", f"{config.minutes:g} min" if config.minutes else ""]
    return " + ".join(part for part in parts if part)


def _resolve_budget(request: RunRequest, totals: dict, trainer: Trainer) -> dict:
    """Extend a resumed run's budget as asked, refuse what would silently change or not use it,
    and return what was added ({"steps": N, "minutes": M}, empty when nothing was).

    With --resume, --max-steps, --epochs and --minutes are totals: the stored value again
    changes nothing, a bigger one extends the run to it (as --extend-* would), a smaller one is
    refused. A run whose budget is spent is refused unless the resume extends it."""
    config = trainer.config
    windows = trainer.batches.layout.windows  # steps per pass over the text, on every rank
    steps = request.extend_steps or 0
    if request.extend_epochs:
        steps += max(1, math.ceil(request.extend_epochs * windows))
    minutes = request.extend_minutes or 0.0
    named = describe_budget(config)
    total_steps = []  # (the option as given, the step total it asks for)
    if "max_steps" in totals:
        total_steps.append((f"--max-steps {totals['max_steps']}", totals["max_steps"]))
    if request.epochs is not None:
        epoch_steps = max(1, math.ceil(request.epochs * windows))
        total_steps.append((f"--epochs {request.epochs:g} ({epoch_steps} steps)", epoch_steps))
    for label, total in total_steps:
        if config.max_steps is None:
            raise ConfigError(
                f"{label} adds a step budget to a run planned in minutes ({named}); "
                "extend it with --extend-minutes M"
            )
        if steps:
            raise ConfigError(f"give {label.split()[0]} (the new total) or --extend-steps / --extend-epochs, not both")
        if total < config.max_steps:
            raise ConfigError(
                f"{label} is below this run's budget of {config.max_steps} steps: with --resume "
                "the budget is a total; to train N more steps, give --extend-steps N"
            )
        steps = total - config.max_steps
    if "minutes" in totals:
        total = totals["minutes"]
        if config.minutes is None:
            raise ConfigError(
                f"--minutes {total:g} adds a time budget to a run planned in steps ({named}); "
                "extend it with --extend-steps N"
            )
        if minutes:
            raise ConfigError("give --minutes (the new total) or --extend-minutes, not both")
        if total < config.minutes:
            raise ConfigError(
                f"--minutes {total:g} is below this run's budget of {config.minutes:g} min: with "
                "--resume the budget is a total; to train M more minutes, give --extend-minutes M"
            )
        minutes = total - config.minutes
    if steps and config.max_steps is None:
        raise ConfigError(f"this run's budget is {named}, not steps: extend it with --extend-minutes M")
    if minutes and config.minutes is None:
        raise ConfigError(f"this run's budget is {named}, not minutes: extend it with --extend-steps N")
    extended_by = {k: v for k, v in (("steps", steps), ("minutes", minutes)) if v}
    if extended_by:
        trainer.extend_budget(steps, minutes)
    spent = trainer.budget_spent()
    if spent is not None:
        p, c = trainer.progress, trainer.config
        if spent == "finished":
            what, option = f"{p.step} of {c.max_steps} steps", "--extend-steps N"
        else:
            what, option = f"{p.elapsed / 60:.3g} of {c.minutes:g} minutes", "--extend-minutes M"
        raise ConfigError(
            f"this run has spent its budget{', extension included' if extended_by else ''}: {what}; "
            f"train on with: charrnn train --resume {request.resume} {option}"
        )
    return extended_by


FINGERPRINT_CHUNK = 1 << 20  # ids hashed at a time: 4 MB as uint32


def _text_fingerprint(train: np.ndarray, val: np.ndarray | None) -> dict:
    """Enough to tell whether a resume reads the text the run was trained and scored on: the
    training length, and the length and sha256 of the ids each evaluation scores."""
    digest = hashlib.sha256()
    if val is not None:
        for start in range(0, len(val), FINGERPRINT_CHUNK):
            # A fixed width: the same text hashes alike whatever id dtype the vocabulary takes.
            digest.update(np.asarray(val[start : start + FINGERPRINT_CHUNK], dtype="<u4").tobytes())
    return {
        "train_ids": int(len(train)),
        "val_ids": 0 if val is None else int(len(val)),
        "val_sha256": None if val is None else digest.hexdigest(),
    }


def _check_continuation(
    trainer: Trainer, stored: TrainConfig, stored_print: dict | None, fingerprint: dict, kind: str
) -> list[str]:
    """What keeps a resume from continuing the run exactly, one line each. Another window
    layout or another training text restarts the carried hidden state; another validation
    text restarts the best so far, so that best.pt is never chosen across two validation sets."""
    notices = []
    config = trainer.config
    changed = [
        f"--{name.replace('_', '-')} {getattr(config, name)} (the run's is {getattr(stored, name)})"
        for name in ("batch_size", "seq_len")
        if getattr(config, name) != getattr(stored, name)
    ]
    if changed and _layout_or_none(fingerprint["train_ids"], stored, trainer.world_size) != trainer.batches.layout:
        trainer.hidden = None
        notices.append(
            f"{' and '.join(changed)}: the windows no longer continue the run's, so this resume "
            "is not exact (the carried hidden state restarts from zero)"
        )
    if stored_print is None:
        return notices  # a checkpoint from before fingerprints: nothing to compare
    unit = "characters" if kind == "chars" else "tokens"
    train_differs = stored_print["train_ids"] != fingerprint["train_ids"]
    val_differs = (stored_print["val_ids"], stored_print["val_sha256"]) != (
        fingerprint["val_ids"],
        fingerprint["val_sha256"],
    )
    sizes = f"{stored_print['train_ids']:,} -> {fingerprint['train_ids']:,} training"
    if train_differs:
        trainer.hidden = None
    if val_differs:
        trainer.progress.best_val_loss = None
        trainer.progress.evals_without_improvement = 0
        sizes = (f"{sizes}, " if train_differs else "") + (
            f"{stored_print['val_ids']:,} -> {fingerprint['val_ids']:,} validation"
        )
        notices.append(
            f"the {'text' if train_differs else 'validation text'} differs from this run's "
            f"({sizes} {unit}): the best so far starts over, so best.pt will hold the best on "
            "the new validation text" + ("; the carried hidden state restarts from zero" if train_differs else "")
        )
    elif train_differs:
        notices.append(
            f"the training text differs from this run's ({sizes} {unit}), so this resume is not "
            "exact (the carried hidden state restarts from zero)"
        )
    return notices


def _layout_or_none(train_ids: int, stored: TrainConfig, world_size: int) -> StreamLayout | None:
    """The layout the run's own options give on this text (None if they no longer fit it)."""
    try:
        return plan_layout(train_ids, stored.batch_size, stored.seq_len, world_size)
    except CorpusError:
        return None


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
    pacing = thread_callbacks(run)
    if not distributed.is_main():
        # Other ranks take part in checkpoints (their state is gathered) but write nothing.
        run.trainer.callbacks = [CheckpointWriter(run), *pacing]
        return run.trainer.fit()
    resume_step = run.trainer.step if run.resumed_from is not None else None
    metrics = MetricsLog(run.directory / "metrics.jsonl", resume_step)
    samples = EvalSamples(run.directory / "samples.txt", run.vocab, sample_chars, run.trainer.config.seed, resume_step)
    board = None
    if tensorboard:
        from charrnn.training.tensorboard import TensorBoardLog

        board = TensorBoardLog(run.directory / "tensorboard", resume_step)
    run.trainer.callbacks = [CheckpointWriter(run), metrics, samples, *([board] if board else []), *pacing, *callbacks]
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
