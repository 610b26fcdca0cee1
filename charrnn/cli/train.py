"""`charrnn train`: options become a RunRequest; the run is planned, shown, trained and reported."""

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.text import shown
from charrnn.cli.errors import EXIT_INTERRUPTED, fail, interrupt_reported, message_for
from charrnn.cli.shared import err, _per_preset, _default, TRAIN, GPU, MODEL, TRAINING, DATA, RUN, BUDGET, DEVICE, output_path, _learning_rate, ranged, DeviceOption, ThreadsOption
from charrnn.ranges import MAX_LR
from charrnn.options import DEFAULTS, Cell, DeviceChoice, Precision, Preset, Schedule, TokenizerKind


def _value_kind(param) -> str:
    """What a --config value for ``param`` must be: bool, int, float, str (paths, choices), or
    for --lr a number or auto."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if getattr(param, "is_bool_flag", False) or annotation is bool:
        return "bool"
    if getattr(getattr(descriptor, "parameter_info", None), "parser", None) is _learning_rate:
        return "rate"  # what --lr's parser takes
    return {int: "int", float: "float"}.get(annotation, "str")


def _config_file(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Eager: the file's values become the command's defaults before any option is read,
    so the command line wins and every value goes through the option's own checks."""
    if value is None or ctx.resilient_parsing:
        return value
    from charrnn.config_file import defaults_from_file
    from charrnn.errors import CharRNNError

    params = [
        (p.name, list(p.opts), bool(getattr(p, "multiple", False) or p.nargs == -1), _value_kind(p))
        for p in ctx.command.params
        if p.name != "config"
    ]
    try:
        ctx.default_map = {**(ctx.default_map or {}), **defaults_from_file(value, params)}
    except CharRNNError as exc:
        fail(*message_for(exc))
    return value


# train's parameters that shape how the run is shown, not what is trained.
NOT_REQUEST = {"config", "eval_sample_chars", "tensorboard"}

_FIT = DEFAULTS["budget_fit"]
_BUDGET_DROPOUT = (
    f"\\[default: the preset's; for {', '.join(_FIT['presets'])}, chosen by the passes over the text that the "
    f"budget holds: none up to {_FIT['free_passes']:g} passes, {_FIT['per_pass']:g} more a pass beyond, at most {_FIT['most']:g}]"
)


def train(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Text files, directories of text files, or a corpus name (stdlib, tinyshakespeare, ptb-char, ...). Optional with --resume.", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue a run: its directory (latest checkpoint) or a checkpoint file.", rich_help_panel=RUN)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", is_eager=True, callback=_config_file, help="Take options from a TOML file (keys are option names: batch-size = 32, paths = [\"a.txt\"]); options given here override it. A run's config.toml repeats that run.", rich_help_panel=RUN)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", parser=output_path, help="Run directory. \\[default: a new directory in checkpoints/, named after the corpus and the time]", rich_help_panel=RUN)] = None,
    extend_vocab: Annotated[bool, typer.Option(help="With --resume on new text: add its unseen characters to the vocabulary (fine-tuning).", rich_help_panel=RUN)] = False,
    tokenizer: Annotated[Optional[TokenizerKind], typer.Option(help="What the model reads: chars (each character of the corpus), bytes (UTF-8 bytes, any text), bpe (byte-level BPE trained on the corpus, with --vocab-size), or word (words, spaces and punctuation marks, the --vocab-size most frequent, [UNK] for the rest). " + _default("corpus", "tokenizer"), rich_help_panel=DATA)] = None,
    vocab_size: Annotated[Optional[int], ranged("corpus", "vocab_size", help="Vocabulary size: with --tokenizer bpe, 256 byte tokens + merges; with --tokenizer word, [UNK] + the most frequent words, spaces and punctuation marks.", rich_help_panel=DATA)] = None,
    items: Annotated[bool, typer.Option("--items", help="The text is a list of short items, one a line (names, titles, words): each is trained from the same start state, in an order shuffled each epoch, and `sample --items N` makes whole new ones. A resumed run keeps it. " + _default("items", "items"), rich_help_panel=DATA)] = False,
    items_delimiter: Annotated[Optional[str], typer.Option(help="With a list of items: the one character between them (implies --items). \\[default: newline]", rich_help_panel=DATA)] = None,
    preset: Annotated[Optional[Preset], typer.Option(help=f"Model size; explicit options override it. \\[default: {DEFAULTS['model']['preset']}; on a GPU {GPU['preset']} with dropout {GPU['dropout']}]", rich_help_panel=MODEL)] = None,
    cell: Annotated[Optional[Cell], typer.Option(help="Recurrent cell. " + _default("model", "cell"), rich_help_panel=MODEL)] = None,
    layers: Annotated[Optional[int], ranged("model", "layers", help="Recurrent layers.", rich_help_panel=MODEL)] = None,
    hidden: Annotated[Optional[int], ranged("model", "hidden", help="Hidden units per layer.", rich_help_panel=MODEL)] = None,
    embed: Annotated[Optional[int], ranged("model", "embed", help="Character embedding size.", rich_help_panel=MODEL)] = None,
    dropout: Annotated[Optional[float], ranged("model", "dropout", help="Dropout between layers and before the decoder. " + _BUDGET_DROPOUT, rich_help_panel=MODEL)] = None,
    batch_size: Annotated[Optional[int], ranged("train", "batch_size", help=f"Parallel streams per step (shrinks for short texts). \\[default: {TRAIN['batch_size']}; {GPU['batch_size']} on a GPU]", rich_help_panel=TRAINING)] = None,
    seq_len: Annotated[Optional[int], ranged("train", "seq_len", help="Characters per truncated-BPTT window. " + _default("train", "seq_len"), rich_help_panel=TRAINING)] = None,
    lr: Annotated[Optional[str], ranged("train", "lr", parser=_learning_rate, metavar="<number|auto>", help=f"Peak learning rate (AdamW): above 0, at most {MAX_LR:g}; or auto: a range test at the start of a new run chooses it (docs/defaults.md). \\[default: from the preset: {_per_preset('lr')}]", rich_help_panel=TRAINING)] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule after warmup. " + _default("train", "schedule"), rich_help_panel=TRAINING)] = None,
    warmup_steps: Annotated[Optional[int], ranged("train", "warmup_steps", help="Linear warmup steps. " + _default("train", "warmup_steps"), rich_help_panel=TRAINING)] = None,
    min_lr_frac: Annotated[Optional[float], ranged("train", "min_lr_frac", help="Final rate as a fraction of --lr. " + _default("train", "min_lr_frac"), rich_help_panel=TRAINING)] = None,
    weight_decay: Annotated[Optional[float], ranged("train", "weight_decay", help=f"AdamW weight decay (not on biases or embeddings). \\[default: from the preset: {_per_preset('weight_decay')}]", rich_help_panel=TRAINING)] = None,
    grad_clip: Annotated[Optional[float], ranged("train", "grad_clip", help="Gradient-norm clip; 0 = off. " + _default("train", "grad_clip"), rich_help_panel=TRAINING)] = None,
    max_steps: Annotated[Optional[int], ranged("train", "max_steps", help="Stop after this many steps (with --resume: the run's total; see --extend-steps).", rich_help_panel=BUDGET)] = None,
    minutes: Annotated[Optional[float], ranged("train", "minutes", help="Training-time budget, above 0 (steps, evaluations and checkpoints; start-up is not counted); the schedule is planned to end with it. With --resume: the run's total (see --extend-minutes). " + f"\\[default: {DEFAULTS['budget']['minutes']:g} if no other budget]", rich_help_panel=BUDGET)] = None,
    epochs: Annotated[Optional[float], ranged("budget", "epochs", help="Stop after this many passes over the text (above 0; fractions allowed).", rich_help_panel=BUDGET)] = None,
    extend_steps: Annotated[Optional[int], typer.Option(help="With --resume: add this many steps (at least 1) to the run's budget (with --resume, --max-steps, --epochs and --minutes are totals). The learning rate goes on from where it is, decaying over the extension.", rich_help_panel=BUDGET)] = None,
    extend_epochs: Annotated[Optional[float], ranged("budget", "extend_epochs", help="With --resume: add this many passes over the text (above 0) to the run's step budget.", rich_help_panel=BUDGET)] = None,
    extend_minutes: Annotated[Optional[float], ranged("budget", "extend_minutes", help="With --resume: add this many minutes (above 0) to the run's time budget.", rich_help_panel=BUDGET)] = None,
    eval_every: Annotated[Optional[int], ranged("train", "eval_every", help="Steps between validation runs. " + _default("train", "eval_every"), rich_help_panel=BUDGET)] = None,
    eval_chars: Annotated[Optional[int], ranged("train", "eval_chars", help="Evaluate on at most this many validation characters. " + _default("train", "eval_chars", none="all"), rich_help_panel=BUDGET)] = None,
    checkpoint_every: Annotated[Optional[int], ranged("train", "checkpoint_every", help="Steps between periodic checkpoints. " + _default("train", "checkpoint_every", none="--eval-every"), rich_help_panel=BUDGET)] = None,
    patience: Annotated[Optional[int], ranged("train", "patience", help="Stop after this many evaluations without improvement; 0 = never. " + _default("train", "patience"), rich_help_panel=BUDGET)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for initialisation and dropout, 0 to 2**63-1. " + _default("train", "seed"), rich_help_panel=TRAINING)] = None,
    val_file: Annotated[Optional[list[str]], typer.Option(help="Validation text (repeatable), instead of the last --val-frac of the training text.", rich_help_panel=DATA)] = None,
    val_frac: Annotated[Optional[float], ranged("corpus", "val_frac", help="Fraction of the text, at its end, held out for validation. " + _default("corpus", "val_frac"), rich_help_panel=DATA)] = None,
    encoding: Annotated[Optional[str], typer.Option(help="Text encoding of the files. " + _default("corpus", "encoding"), rich_help_panel=DATA)] = None,
    device: DeviceOption = DeviceChoice.auto,
    threads: ThreadsOption = None,
    eval_sample_chars: Annotated[int, ranged("run", "eval_sample_chars", checked=True, help="Characters of the sample written to samples.txt at each evaluation; 0 = none.", rich_help_panel=BUDGET)] = DEFAULTS["run"]["eval_sample_chars"],
    tensorboard: Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Also write TensorBoard event files to RUN_DIR/tensorboard (needs the tensorboard extra).", rich_help_panel=RUN)] = False,
    precision: Annotated[Optional[Precision], typer.Option(help="Arithmetic of the steps (weights and optimizer stay fp32): auto = fp16 autocast on CUDA; on a CPU fp32, or bf16 where the CPU has native bf16 instructions (avx512_bf16, amx_bf16), the budget is in minutes and a probe of the step finds bf16 clearly faster. " + _default("train", "precision"), rich_help_panel=DEVICE)] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic/--no-deterministic", help="Deterministic kernels everywhere, so a resumed run matches an unstopped one bit-for-bit on CUDA too (CPU runs already do); on CUDA it needs --dropout 0 or one layer. " + _default("train", "deterministic"), show_default=False, rich_help_panel=RUN)] = None,
) -> None:
    """Train a model on text files; checkpoints and metrics go to a run directory."""
    # Every parameter of this command, by name, is an option of the request (RunRequest.of).
    options = {name: value for name, value in locals().items() if name not in NOT_REQUEST}
    from charrnn.cli.progress import TrainingDisplay
    from charrnn.training.stall import StallWatch
    from charrnn.cli.signals import graceful_stop
    from charrnn.training.runs import prepare_run, train_run

    run = prepare_run(_request(options))
    _print_run_header(run)
    started = time.perf_counter()

    def stop_after_this_step(signum: int) -> None:
        run.trainer.request_stop()
        # os.write, not print: the handler may interrupt a write to stderr, and re-entering the
        # buffered stream from here would raise.
        os.write(2, b"\nstopping after this step to save a checkpoint (press Ctrl-C again to quit at once)\n")

    stall = StallWatch(run.unigram_bpc, lambda message: err.print(f"charrnn: warning: {message}", markup=False))
    with TrainingDisplay(err) as display, graceful_stop(stop_after_this_step):
        result = train_run(run, [display, stall], sample_chars=eval_sample_chars, tensorboard=tensorboard)
    _report_result(run, result, time.perf_counter() - started)


def _request(options: dict):
    """The run request from train's options, refused before any work where it names no text
    or a run directory that cannot be one."""
    from charrnn.outputs import check_output_directory
    from charrnn.training.plan import RunRequest

    request = RunRequest.of({**options, "device": _join_torchrun(options["device"].value)})
    if not request.sources and request.resume is None:
        err.print("charrnn: corpus: name a text file, directory or corpus to train on (or --resume a run)", markup=False)
        raise typer.Exit(2)
    if request.out is not None:
        check_output_directory(request.out, "--out", [Path(p) for p in request.sources + request.val_sources])
    return request


def _join_torchrun(device: str) -> str:
    """Under torchrun: join the process group (only rank 0 talks); returns the device to use."""
    from charrnn.training import distributed

    launch = distributed.launch_env()
    if launch is None:
        return device
    import atexit

    device = distributed.start(launch, device)
    atexit.register(distributed.stop)
    err.quiet = launch.rank != 0
    return device


def _print_run_header(run) -> None:
    """What is about to be trained, on stderr: model, text, batch, budget, device, threads."""
    from charrnn.precision import describe_precision
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.training.plan import describe_budget

    for notice in run.notices:
        err.print(f"charrnn: warning: {notice}", markup=False)
    m, t = run.model.config, run.trainer.config
    layout = run.trainer.batches.layout
    budget = f"budget {describe_budget(t)}"
    if run.extended_by:
        added = " + ".join(
            f"{run.extended_by['steps']} steps" if key == "steps" else f"{run.extended_by['minutes']:g} min"
            for key in run.extended_by
        )
        budget = f"extending the budget by {added} to {describe_budget(t)} total"
    elif run.resumed_from and t.minutes:
        budget += f" ({run.trainer.progress.elapsed / 60:.1f} min used)"
    verb = f"resuming {shown(run.resumed_from)} at step {run.trainer.step}" if run.resumed_from else "training"
    # Byte and BPE runs count tokens: calling them characters would misstate the text's size.
    unit = vocab_kind(run.corpus_options.tokenizer).unit
    units = f"{unit}s"
    err.print(
        f"{verb}: {m.layers}x{m.hidden} {m.cell.upper()}, {run.model.num_parameters():,} parameters, "
        f"vocabulary {len(run.vocab)}, {len(run.corpus.train):,} train / "
        f"{0 if run.corpus.val is None else len(run.corpus.val):,} val {units}, "
        f"{layout.describe()}"
        + (f" on each of {run.trainer.world_size} processes" if run.trainer.world_size > 1 else "")
        + f", {budget}, device {run.trainer.device}",
        markup=False,
    )
    if run.trainer.device.type == "cpu":
        err.print(f"threads: {run.threads.describe()}", markup=False)
    fit = run.budget_fit
    probe = fit.describe_probe() if fit is not None and fit.precision is not None else None
    err.print(f"precision: {describe_precision(t.precision, run.trainer.amp_dtype, run.trainer.device, probe)}", markup=False)
    if fit is not None and fit.dropout is not None:
        err.print(f"dropout: {fit.dropout:g} (by the budget: {fit.describe_passes(t)}; --dropout sets it)", markup=False)
    if run.trainer.lr_range is not None:
        err.print(_describe_lr_range(run.trainer.lr_range, t.lr, fresh=run.resumed_from is None), markup=False)
    err.print(f"run directory: {shown(run.directory)}", markup=False)
    if run.unigram_bpc is not None:
        which = "training" if run.trainer.val_ids is None else "validation"
        err.print(
            f"unigram baseline: {run.unigram_bpc:.3f} bpc on the {which} text "
            f"(a model that knows only how often each {unit} occurs)",
            markup=False,
        )
    if run.trainer.val_ids is None:
        no_split = not run.corpus_options.val_files and not run.corpus_options.val_frac
        why = "--val-frac 0" if no_split else "too short a text to hold part of it out"
        err.print(
            f"warning: no validation text ({why}), so no best.pt will be written and `sample --best` "
            "will have nothing to load; pass --val-file FILE (or --val-frac) to track the best checkpoint",
            markup=False,
        )


def _describe_lr_range(test: dict, lr: float, fresh: bool) -> str:
    if not fresh:
        return f"learning rate {lr:g}, chosen by the range test at the start of this run (--lr auto)"
    return (
        f"learning rate {lr:g}, chosen by a range test (--lr auto): {len(test['rates'])} steps at rates from "
        f"{test['low']:g} up, in {test['seconds']:.1f} s; the loss was lowest at {test['lowest_at']:.3g}, "
        f"and the rate is that divided by {test['fraction']:g}"
    )


def _report_result(run, result, seconds: float) -> None:
    """How the run ended, on stderr; an interrupted run says how to resume and exits 130."""
    from charrnn.units import nats_to_bpc

    best = "-" if result.best_val_loss is None else f"{nats_to_bpc(result.best_val_loss, run.trainer.tokens_per_char):.4f}"
    if result.status == "interrupted":
        err.print(
            f"stopped at step {result.step}; checkpoint saved to {shown(run.directory / 'last.pt')}\n"
            f"resume with: charrnn train --resume {shown(run.directory)}",
            markup=False,
        )
        interrupt_reported()
        raise typer.Exit(EXIT_INTERRUPTED)
    reason = {"finished": "step budget reached", "time": "time budget reached", "early_stop": "early stop"}
    err.print(
        f"done ({reason.get(result.status, result.status)}) at step {result.step} in {seconds:.0f} s; "
        f"best val {best} bpc; checkpoints in {shown(run.directory)}",
        markup=False,
    )
