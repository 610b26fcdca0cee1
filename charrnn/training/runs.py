"""A training run on disk: plan it, load its corpus, build or restore its model and trainer,
and keep its run directory (checkpoints, metrics log, resolved config) up to date. The
options are resolved in ``charrnn.training.plan``, the checkpoint's content is a
``charrnn.saved.SavedRun``.

Run directory::

    checkpoints/<name>/
        last.pt          latest state (periodic, and at the end or on interruption)
        best.pt          state at the best validation loss so far
        metrics.jsonl    one JSON object per step, per evaluation and per gradient warning
        samples.txt      a short sample at every evaluation, to watch the text improve
        config.json      the resolved model, training and corpus options
        config.toml      the same as options for `charrnn train --config` (repeats the run)

A training file whose name is not UTF-8 is a path like any other: config.json keeps it as JSON's
\\udcXX escapes (json.loads gives back the same name, and os.fsencode its bytes); TOML text
cannot hold it, so config.toml leaves that path list out and says so in its header.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch

from charrnn import __version__, checkpoint
from charrnn.data.batches import plan_layout
from charrnn.data.corpus import Corpus, Sources, resolve_sources
from charrnn.data.unigram import token_counts, unigram_bpc
from charrnn.data.vocab import Vocab
from charrnn.data.vocab_kinds import stored_vocab, vocab_kind
from charrnn.device import (
    check_deterministic_resume,
    resolve_device,
    seed_everything,
    use_deterministic_algorithms,
)
from charrnn.errors import CheckpointError, ConfigError, CorpusError, TrainingDiverged
from charrnn.precision import resolve_precision
from charrnn.model.loading import build_model, check_model_fits
from charrnn.model.network import CharRNN
from charrnn.options import DEFAULTS, LR_AUTO, TrainConfig
from charrnn.outputs import is_checkpoint, is_run_directory
from charrnn.saved import CorpusOptions, Metrics, SavedRun
from charrnn.text import shown
from charrnn.threads import ThreadGovernor, ThreadPolicy, resolve_policy, set_threads
from charrnn.training import distributed
from charrnn.training.budget_fit import BudgetFit, fit_budget
from charrnn.training.continuation import check_continuation, text_fingerprint
from charrnn.training.plan import RunPlan, RunRequest, check_request, resolve_plan
from charrnn.training.run_logs import EvalSamples, MetricsLog
from charrnn.training.lr_range import RangeTest, range_test
from charrnn.training.trainer import Callback, StepStats, Trainer
from charrnn.units import nats_to_bpc


@dataclass
class Run:
    directory: Path
    corpus: Corpus
    model: CharRNN
    trainer: Trainer
    corpus_options: CorpusOptions
    resumed_from: Path | None = None
    extended_by: dict = field(default_factory=dict)  # "steps", "minutes": what a resume added
    # One line each about what the caller should show before training: what the text's
    # directories held that is not text, a resume that cannot continue exactly as it was.
    notices: list[str] = field(default_factory=list)
    threads: ThreadPolicy | None = None
    # Bits per character of a model that knows only the characters' frequencies, on the
    # validation text (the training text when there is none): the level the run must leave.
    unigram_bpc: float | None = None
    # What a new run's budget holds, and the dropout or precision chosen by it (None: nothing
    # was chosen by the budget).
    budget_fit: BudgetFit | None = None

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab

    def saved(self) -> SavedRun:
        """Everything a checkpoint holds: enough to sample alone, or to continue exactly."""
        progress = self.trainer.progress
        return SavedRun(
            model_config=self.model.config,
            vocab=stored_vocab(self.vocab),
            weights={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            train_config=self.trainer.config,
            corpus=self.corpus_options,
            trainer_state=self.trainer.state_dict(),
            metrics=Metrics(
                step=progress.step,
                elapsed=progress.elapsed,
                best_val_loss=progress.best_val_loss,
                best_val_bpc=None
                if progress.best_val_loss is None
                else nats_to_bpc(progress.best_val_loss, self.trainer.tokens_per_char),
            ),
        )


class CheckpointWriter(Callback):
    def __init__(self, run: Run) -> None:
        self.run = run

    def on_checkpoint(self, trainer: Trainer, best: bool) -> None:
        name = checkpoint.BEST if best else checkpoint.LAST
        saved = self.run.saved()  # under torchrun, a collective: every rank takes part
        if distributed.is_main():
            saved.save(self.run.directory / name)


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


def _default_run_name(sources: Sources) -> str:
    stem = sources.train[0].stem if sources.train else "run"
    return f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_run(request: RunRequest) -> Run:
    """Everything up to the first training step; raises ``CharRNNError`` on bad input."""
    check_request(request)
    # Before the text is read: a thread count the machine cannot run is refused at once.
    threads = resolve_policy(request.threads)
    device = resolve_device(request.device)
    resumed_from, saved = _resumed_run(request)
    plan = resolve_plan(request, saved, device.type, distributed.world_size())
    sources = resolve_sources(plan.corpus.train_specs, plan.corpus.val_specs, plan.corpus.encoding)
    corpus, tokens_per_char = vocab_kind(plan.corpus.tokenizer).load_corpus(
        sources,
        plan.corpus.encoding,
        plan.corpus.val_frac,
        None if saved is None else saved.vocab,
        plan.corpus.vocab_size,
        plan.corpus.extend_vocab,
    )
    train_config = plan.train_config(len(corpus.train))
    fit = _fit_budget(plan, train_config, corpus, device) if saved is None else None
    if fit is not None and fit.dropout is not None:
        plan.model["dropout"] = fit.dropout
    model = _model(plan, train_config, saved, len(corpus.vocab), device)
    amp_dtype = fit.precision if fit is not None and fit.precision is not None else _precision(train_config, saved, device)
    lr_range = None
    if saved is None:
        model.start_from_frequencies(torch.from_numpy(token_counts(corpus.train, len(corpus.vocab))[: len(corpus.vocab)]))
        if plan.lr_auto:
            lr_range = _choose_rate(model, corpus, train_config, device, amp_dtype, threads)
            train_config = replace(train_config, lr=lr_range.lr)
    trainer = _trainer(train_config, model, corpus, device, amp_dtype, fresh=saved is None, items_delimiter=plan.corpus.items_delimiter)
    if lr_range is not None:
        trainer.lr_range = lr_range.to_dict()
        trainer.progress.elapsed = lr_range.seconds  # the test's time is part of a time budget
    trainer.tokens_per_char = tokens_per_char
    corpus_options = plan.corpus.options(sources.train, sources.val, len(corpus.vocab))
    corpus_options.fingerprint = text_fingerprint(corpus.train, trainer.val_ids)
    grown = saved is not None and len(corpus.vocab) != len(saved.vocab)
    notices, extended_by = list(sources.notices), {}
    if saved is not None:
        continued, extended_by = _continue(trainer, plan, saved, corpus_options, grown)
        notices += continued
    directory = _run_directory(request, resumed_from, sources, grown)
    run = Run(
        directory, corpus, model, trainer, corpus_options, resumed_from, extended_by, notices, threads, budget_fit=fit
    )
    scored = corpus.train if trainer.val_ids is None else trainer.val_ids
    run.unigram_bpc = unigram_bpc(scored, tokens_per_char)
    if distributed.is_main():  # the only rank that writes files
        _create_directory(run)
    return run


def _fit_budget(plan: RunPlan, config: TrainConfig, corpus: Corpus, device: torch.device) -> BudgetFit | None:
    """A new run's passes over its text, and the dropout and precision they choose. The probe
    of a time budget builds and trains a copy of the model before the run's own exists: it is
    checked to fit first."""
    model_config = plan.model_config(len(corpus.vocab))
    check_model_fits(model_config, device)
    layout = plan_layout(len(corpus.train), config.batch_size, config.seq_len, plan.world_size)
    return fit_budget(config, model_config, corpus.train, layout, device, plan.dropout_by_budget)


def _precision(config: TrainConfig, saved: SavedRun | None, device: torch.device) -> torch.dtype:
    """The precision the steps run in: as --precision says, or where a resumed run's auto chose
    by its budget, what it chose (its checkpoint says), if this machine runs it."""
    return resolve_precision(config.precision, device, recorded=None if saved is None else saved.trainer_state.get("precision"))


def _choose_rate(
    model: CharRNN, corpus: Corpus, config: TrainConfig, device: torch.device, amp_dtype: torch.dtype, threads: ThreadPolicy
) -> RangeTest:
    """--lr auto: the range test on this run's model and first windows, on a fixed number of
    CPU threads: --threads if given, else one. Not the governor's choice, which depends on the
    machine's load: the test's losses differ in their last bits between thread counts and the
    chosen rate with them (django-po: 0.00411 on two threads, 0.00356 on one), and two threads
    beside another busy process made a test of 130 steps take 80-160 s instead of 17. Under
    torchrun every process runs the same test (on the first process's windows) and takes the
    first's rate."""
    if device.type == "cpu":
        set_threads(threads.fixed or 1)
    test = range_test(model, corpus.train, config, device, amp_dtype)
    test.lr = distributed.rank0_value(test.lr)
    return test


def _resumed_run(request: RunRequest) -> tuple[Path | None, SavedRun | None]:
    """The checkpoint file a resume continues from, and its run (None, None for a new run)."""
    if request.resume is None:
        return None, None
    path = checkpoint.resolve(request.resume)
    return path, SavedRun.load(path).resumable(path)


def _model(plan: RunPlan, config: TrainConfig, saved: SavedRun | None, vocab_size: int, device: torch.device) -> CharRNN:
    """The model to train: checked to fit, then drawn from the run's seed or restored."""
    model_config = plan.model_config(vocab_size)
    if config.deterministic:
        check_deterministic_resume(device, model_config.layers, model_config.dropout)
    check_model_fits(model_config, device)
    if saved is None:
        seed_everything(config.seed)
    model = build_model(model_config, saved, device)
    use_deterministic_algorithms(config.deterministic)
    return model


def _trainer(
    config: TrainConfig, model: CharRNN, corpus: Corpus, device: torch.device, amp_dtype: torch.dtype, fresh: bool, items_delimiter: str | None = None
) -> Trainer:
    ddp_model = None
    if distributed.active():
        if fresh:
            # The weights were drawn alike on every rank; dropout should not be.
            seed_everything(config.seed + distributed.rank())
        ddp_model = distributed.wrap(model, device)
    return Trainer(
        model,
        config,
        corpus.train,
        corpus.val,
        device,
        amp_dtype,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
        ddp_model=ddp_model,
        batches=_item_batches(corpus, config, items_delimiter),
    )


def _item_batches(corpus: Corpus, config: TrainConfig, delimiter: str | None):
    """A list's items as batches (``train --items``), or None for a stream."""
    if delimiter is None:
        return None
    from charrnn.data.items import ItemBatches

    if delimiter not in corpus.vocab.chars:
        raise CorpusError(f"--items-delimiter {delimiter!r} is not in the text: the list would be one item")
    ids = corpus.vocab.encode(delimiter)
    return ItemBatches(corpus.train, int(ids[0]), config.batch_size, config.seed, distributed.rank(), distributed.world_size())


def _continue(
    trainer: Trainer, plan: RunPlan, saved: SavedRun, corpus_options: CorpusOptions, grown: bool
) -> tuple[list[str], dict]:
    """Put the trainer where the saved run stopped; returns the notices about what cannot
    continue exactly, and what the resume adds to the budget."""
    if grown:
        # New characters change the parameter shapes: the optimizer starts afresh, and the
        # run's place in its budget and schedule carries on.
        trainer.continue_schedule(saved.trainer_state)
    else:
        trainer.load_state_dict(saved.trainer_state)
    notices = check_continuation(
        trainer,
        saved.train_config,
        saved.corpus.fingerprint,
        corpus_options.fingerprint,
        plan.corpus.tokenizer,
        saved.trainer_state.get("precision"),
    )
    return notices, _extend_budget(trainer, plan, corpus_options.fingerprint.train_ids)


def _extend_budget(trainer: Trainer, plan: RunPlan, train_ids: int) -> dict:
    """Extend a resumed run's budget as the plan asks, and refuse a run whose budget is spent
    unless the resume extends it. Returns what was added ({"steps": N, "minutes": M})."""
    steps, minutes = plan.budget_extension(trainer.config, train_ids)
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
            f"train on with: charrnn train --resume {plan.resume} {option}"
        )
    return extended_by


def _run_directory(request: RunRequest, resumed_from: Path | None, sources: Sources, grown: bool) -> Path:
    """Where the run writes: --out, the resumed run's directory, or a new one named after the
    corpus; refuses to write over another run, or a grown model over its original."""
    if request.out is not None:
        directory = Path(request.out)
    elif resumed_from is not None:
        directory = resumed_from.parent
    else:
        directory = request.checkpoints_root / _default_run_name(sources)
    continues_in_place = resumed_from is not None and _same_dir(directory, resumed_from.parent)
    if not continues_in_place:
        _refuse_other_run(directory)
    if continues_in_place and grown:
        # The grown model cannot continue the old run: writing it there would replace the
        # original model's checkpoints.
        raise ConfigError(
            "--extend-vocab makes a new model with a bigger vocabulary; give it its own "
            "run directory with --out DIR (the original run is kept)"
        )
    return directory


def _refuse_other_run(directory: Path) -> None:
    """A new run never writes into another run's directory: its checkpoints would be replaced,
    and its metrics.jsonl would gain the new run's steps after its own (``plot`` would draw
    the two as one run). A run stopped before its first checkpoint cannot be resumed either."""
    where = shown(directory)
    if (directory / checkpoint.LAST).exists():
        raise ConfigError(f"{where} already holds a run; continue it with --resume {where} or choose another --out")
    if is_checkpoint(directory / checkpoint.BEST):
        best = shown(directory / checkpoint.BEST)
        raise ConfigError(f"{where} already holds a run; continue it with --resume {best} or choose another --out")
    if is_run_directory(directory):
        raise ConfigError(
            f"{where} already holds a run that wrote no checkpoint, so it cannot be resumed; "
            f"name another --out, or remove {where} to start again there"
        )


def _create_directory(run: Run) -> None:
    created = _first_missing(run.directory)
    try:
        run.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create run directory {run.directory}: {exc.strerror}") from None
    try:
        checkpoint.remove_stale_temporaries(run.directory)
        _write_config(run)
    except BaseException:
        # A failed start leaves no half-made run behind: only what this call created.
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


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


def _write_config(run: Run) -> None:
    config = {
        "charrnn_version": __version__,
        "model": run.model.config.to_dict(),
        "train": run.trainer.config.to_dict(),
        "corpus": run.corpus_options.to_dict(),
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
    }
    if run.trainer.lr_range is not None:
        config["lr_range"] = run.trainer.lr_range
    from charrnn.config_file import resolved_options, to_toml, without_unwritable_paths

    options, left_out = without_unwritable_paths(
        resolved_options(config["model"], config["train"], config["corpus"])
    )
    if run.trainer.lr_range is not None:
        options["lr"] = LR_AUTO  # the test is deterministic: repeating the run repeats its choice
    header = "\n".join(
        [
            f"charrnn {__version__}: the resolved options of this run.",
            "Repeat it with: charrnn train --config THIS_FILE --out NEW_DIR",
            *left_out,
        ]
    )
    # Both made before either is written: a value one cannot hold leaves neither behind.
    # ensure_ascii: a file name that is not UTF-8 is kept as \udcXX escapes, which json.loads
    # turns back into the same name (a UTF-8 file could not hold it at all).
    as_json = (json.dumps(config, indent=2, ensure_ascii=True) + "\n").encode("utf-8")
    as_toml = to_toml(options, header).encode("utf-8")
    checkpoint.atomic_write(run.directory / "config.json", as_json, "run config")
    checkpoint.atomic_write(run.directory / "config.toml", as_toml, "run config")


def train_run(
    run: Run,
    callbacks: list[Callback] = (),
    sample_chars: int = DEFAULTS["run"]["eval_sample_chars"],
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
    except TrainingDiverged as exc:
        if run.trainer.checkpoint_step is not None:
            raise
        # Starting again needs a directory: this one now holds a run that cannot be resumed.
        raise TrainingDiverged(
            f"{exc}, with another --out (or remove {shown(run.directory)}, which holds no checkpoint)"
        ) from None
    finally:
        metrics.close()
        if board is not None:
            board.close()
