"""The command line: parse options, build a config, call the library, show the result.

Generated text goes to stdout, raw; everything else (progress, status, errors) to stderr.
torch is imported inside the commands so that ``--help`` stays fast.
"""


import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn import __version__
from charrnn.cli.errors import EXIT_INTERRUPTED, OneLineUsageErrors, fail, message_for, user_errors
from charrnn.cli.help import HelpCommand, HelpGroup
from charrnn.options import DEFAULTS, MAX_LR, PRESET_TRAINING, Cell, DeviceChoice, Engine, ExportFormatName, Precision, Preset, Quantization, Schedule, TokenizerKind

class _Group(OneLineUsageErrors, HelpGroup):
    pass


app = typer.Typer(
    cls=_Group,
    help="Train character-level LSTM/GRU language models, stream samples, resume exactly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
corpus_app = typer.Typer(cls=HelpGroup, help="List, fetch and build named corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)


def _per_preset(option: str) -> str:
    """A training default per preset, for --help. Like every default --help names, it comes
    from the defaults table the run's resolver applies, so the help and the behaviour cannot
    drift apart."""
    return ", ".join(f"{name} {values[option]:g}" for name, values in PRESET_TRAINING.items())


def _default(section: str, name: str, none: str = "") -> str:
    """``[default: VALUE]`` for --help, VALUE from the defaults table (``none``: what a None
    there means; a flag's False reads "off")."""
    value = DEFAULTS[section][name]
    shown = none if value is None else ("on" if value else "off") if isinstance(value, bool) else value
    return f"\\[default: {shown}]"


TRAIN = DEFAULTS["train"]
SAMPLE = DEFAULTS["sample"]
GPU = DEFAULTS["gpu"]


MODEL = "Model"
TRAINING = "Training"
DATA = "Data"
RUN = "Run"
BUDGET = "Budget and evaluation"
DEVICE = "Device"
MODES = "Modes"
COPYING = "Copying check"
MEASURED = "What to measure"
THREADS_HELP = (
    "CPU threads for torch and BLAS (OMP_NUM_THREADS also fixes it). \\[default: chosen by "
    "measured speed, so that a busy machine does not slow the run down]"
)


def _thread_governor(threads: Optional[int]):
    """The --threads count applied now, or (None given) a governor that picks it by speed."""
    from charrnn.threads import ThreadGovernor, resolve_policy

    return ThreadGovernor.for_policy(resolve_policy(threads))


def _generation_threads(threads: Optional[int], paced: bool):
    """Sampling is paced by a governor like training; the beam search and the interactive loop,
    which no governor paces, run on one thread (unless --threads says otherwise), which is
    never the one that collapses on a busy machine. Returns the governor, or None."""
    from charrnn.threads import resolve_policy, set_threads

    if paced:
        return _thread_governor(threads)
    set_threads(resolve_policy(threads).fixed or 1)
    return None


def _out_path(value) -> Path:
    """--out as a path, refusing the empty string: Path("") is the current directory, where a
    run or an export would land unasked."""
    if isinstance(value, Path):
        return value
    if not str(value).strip():
        raise typer.BadParameter("must not be empty: name the directory or file to write")
    return Path(value)


def _learning_rate(value) -> float | str:
    """--lr: a number, or auto."""
    from charrnn.errors import ConfigError
    from charrnn.options import parse_lr

    try:
        return parse_lr(value)
    except ConfigError:
        raise typer.BadParameter(f"must be a number or auto, not {value!r}") from None


def _given_path(value) -> Path:
    """A path argument, refusing the empty string, which Path("") would read as the current
    directory (and so score every file in it)."""
    if isinstance(value, Path):
        return value
    if not str(value).strip():
        raise typer.BadParameter("an empty path was given; name a file")
    return Path(value)


def _file_not_directory(output: Optional[Path], example: str) -> None:
    """--out names a file for this command; a directory there is a mistake to say, not a
    place to write into under a name the user did not choose."""
    if output is not None and output.is_dir():
        from charrnn.errors import ConfigError

        raise ConfigError(f"--out {output} is a directory; name the file to write, e.g. --out {output / example}")


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


# ----------------------------------------------------------------------------- train


def _value_kind(param) -> str:
    """What a --config value for ``param`` must be: bool, int, float, str (paths, choices), or
    for --lr a number or auto."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if getattr(param, "is_bool_flag", False) or annotation is bool:
        return "bool"
    if param.name == "lr":
        return "rate"  # a number, or auto
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



@app.command(cls=HelpCommand)
@user_errors
def train(
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Text files, directories of text files, or a corpus name "
            "(stdlib, tinyshakespeare, ptb-char, ...). Optional with --resume.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(help="Continue a run: its directory (latest checkpoint) or a checkpoint file.", rich_help_panel=RUN),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", is_eager=True, callback=_config_file, help="Take options from a TOML file (keys are option names: batch-size = 32, paths = [\"a.txt\"]); options given here override it. A run's config.toml repeats that run.", rich_help_panel=RUN),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", parser=_out_path, help="Run directory. \\[default: a new directory in checkpoints/, named after the corpus and the time]", rich_help_panel=RUN),
    ] = None,
    extend_vocab: Annotated[
        bool,
        typer.Option(help="With --resume on new text: add its unseen characters to the vocabulary (fine-tuning).", rich_help_panel=RUN),
    ] = False,
    tokenizer: Annotated[Optional[TokenizerKind], typer.Option(help="What the model reads: chars (each character of the corpus), bytes (UTF-8 bytes, any text), or bpe (byte-level BPE trained on the corpus, with --vocab-size). " + _default("corpus", "tokenizer"), rich_help_panel=DATA)] = None,
    vocab_size: Annotated[Optional[int], typer.Option(min=256, help="BPE vocabulary size (256 byte tokens + merges), with --tokenizer bpe.", rich_help_panel=DATA)] = None,
    preset: Annotated[Optional[Preset], typer.Option(help=f"Model size; explicit options override it. \\[default: {DEFAULTS['model']['preset']}; on a GPU {GPU['preset']} with dropout {GPU['dropout']}]", rich_help_panel=MODEL)] = None,
    cell: Annotated[Optional[Cell], typer.Option(help="Recurrent cell. " + _default("model", "cell"), rich_help_panel=MODEL)] = None,
    layers: Annotated[Optional[int], typer.Option(min=1, help="Recurrent layers.", rich_help_panel=MODEL)] = None,
    hidden: Annotated[Optional[int], typer.Option(min=1, help="Hidden units per layer.", rich_help_panel=MODEL)] = None,
    embed: Annotated[Optional[int], typer.Option(min=1, help="Character embedding size.", rich_help_panel=MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(min=0, max=0.99, help="Dropout between layers and before the decoder.", rich_help_panel=MODEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help=f"Parallel streams per step (shrinks for short texts). \\[default: {TRAIN['batch_size']}; {GPU['batch_size']} on a GPU]", rich_help_panel=TRAINING)] = None,
    seq_len: Annotated[Optional[int], typer.Option(min=1, help="Characters per truncated-BPTT window. " + _default("train", "seq_len"), rich_help_panel=TRAINING)] = None,
    lr: Annotated[Optional[str], typer.Option(parser=_learning_rate, metavar="<number|auto>", help=f"Peak learning rate (AdamW): above 0, at most {MAX_LR:g}; or auto: a range test at the start of a new run chooses it (docs/defaults.md). \\[default: from the preset: {_per_preset('lr')}]", rich_help_panel=TRAINING)] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule after warmup. " + _default("train", "schedule"), rich_help_panel=TRAINING)] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(min=0, help="Linear warmup steps. " + _default("train", "warmup_steps"), rich_help_panel=TRAINING)] = None,
    min_lr_frac: Annotated[Optional[float], typer.Option(min=0, max=1, help="Final rate as a fraction of --lr. " + _default("train", "min_lr_frac"), rich_help_panel=TRAINING)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(min=0, help=f"AdamW weight decay (not on biases or embeddings). \\[default: from the preset: {_per_preset('weight_decay')}]", rich_help_panel=TRAINING)] = None,
    grad_clip: Annotated[Optional[float], typer.Option(min=0, help="Gradient-norm clip; 0 = off. " + _default("train", "grad_clip"), rich_help_panel=TRAINING)] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many steps (with --resume: the run's total; see --extend-steps).", rich_help_panel=BUDGET)] = None,
    minutes: Annotated[Optional[float], typer.Option(help="Training-time budget, above 0 (steps, evaluations and checkpoints; start-up is not counted); the schedule is planned to end with it. With --resume: the run's total (see --extend-minutes). " + f"\\[default: {DEFAULTS['budget']['minutes']:g} if no other budget]", rich_help_panel=BUDGET)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Stop after this many passes over the text (above 0; fractions allowed).", rich_help_panel=BUDGET)] = None,
    extend_steps: Annotated[Optional[int], typer.Option(help="With --resume: add this many steps (at least 1) to the run's budget (with --resume, --max-steps, --epochs and --minutes are totals). The learning rate goes on from where it is, decaying over the extension.", rich_help_panel=BUDGET)] = None,
    extend_epochs: Annotated[Optional[float], typer.Option(help="With --resume: add this many passes over the text (above 0) to the run's step budget.", rich_help_panel=BUDGET)] = None,
    extend_minutes: Annotated[Optional[float], typer.Option(help="With --resume: add this many minutes (above 0) to the run's time budget.", rich_help_panel=BUDGET)] = None,
    eval_every: Annotated[Optional[int], typer.Option(min=1, help="Steps between validation runs. " + _default("train", "eval_every"), rich_help_panel=BUDGET)] = None,
    eval_chars: Annotated[Optional[int], typer.Option(min=2, help="Evaluate on at most this many validation characters. " + _default("train", "eval_chars", none="all"), rich_help_panel=BUDGET)] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, help="Steps between periodic checkpoints. " + _default("train", "checkpoint_every", none="--eval-every"), rich_help_panel=BUDGET)] = None,
    patience: Annotated[Optional[int], typer.Option(min=0, help="Stop after this many evaluations without improvement; 0 = never. " + _default("train", "patience"), rich_help_panel=BUDGET)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for initialisation and dropout, 0 to 2**63-1. " + _default("train", "seed"), rich_help_panel=TRAINING)] = None,
    val_file: Annotated[
        Optional[list[str]], typer.Option(help="Validation text (repeatable), instead of the last --val-frac of the training text.", rich_help_panel=DATA)
    ] = None,
    val_frac: Annotated[Optional[float], typer.Option(min=0, max=0.99, help="Fraction of the text, at its end, held out for validation. " + _default("corpus", "val_frac"), rich_help_panel=DATA)] = None,
    encoding: Annotated[Optional[str], typer.Option(help="Text encoding of the files. " + _default("corpus", "encoding"), rich_help_panel=DATA)] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.", rich_help_panel=DEVICE)] = DeviceChoice.auto,
    threads: Annotated[Optional[int], typer.Option(min=1, help=THREADS_HELP, show_default=False, rich_help_panel=DEVICE)] = None,
    eval_sample_chars: Annotated[int, typer.Option(min=0, help="Characters of the sample written to samples.txt at each evaluation; 0 = none.", rich_help_panel=BUDGET)] = DEFAULTS["run"]["eval_sample_chars"],
    tensorboard: Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Also write TensorBoard event files to RUN_DIR/tensorboard (needs the tensorboard extra).", rich_help_panel=RUN)] = False,
    precision: Annotated[Optional[Precision], typer.Option(help="auto = fp16 autocast on CUDA, fp32 on CPU.", rich_help_panel=DEVICE)] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic/--no-deterministic", help="Deterministic kernels everywhere, so a resumed run matches an unstopped one bit-for-bit on CUDA too (CPU runs already do); on CUDA it needs --dropout 0 or one layer. " + _default("train", "deterministic"), show_default=False, rich_help_panel=RUN)] = None,
) -> None:
    """Train a model on text files; checkpoints and metrics go to a run directory."""
    from charrnn.cli.progress import TrainingDisplay
    from charrnn.training.stall import StallWatch
    from charrnn.cli.signals import graceful_stop
    from charrnn.training.plan import RunRequest
    from charrnn.training.runs import prepare_run, train_run

    device_choice = _join_torchrun(device.value)
    request = RunRequest(
        sources=list(paths or []),
        val_sources=list(val_file or []),
        encoding=encoding,
        val_frac=val_frac,
        out=out_dir,
        resume=resume,
        extend_vocab=extend_vocab,
        tokenizer=tokenizer.value if tokenizer else None,
        vocab_size=vocab_size,
        preset=preset.value if preset else None,
        model={
            "cell": cell.value if cell else None,
            "layers": layers,
            "hidden": hidden,
            "embed": embed,
            "dropout": dropout,
        },
        train={
            "batch_size": batch_size,
            "seq_len": seq_len,
            "lr": lr,
            "schedule": schedule.value if schedule else None,
            "warmup_steps": warmup_steps,
            "min_lr_frac": min_lr_frac,
            "weight_decay": weight_decay,
            "grad_clip": grad_clip,
            "max_steps": max_steps,
            "minutes": minutes,
            "eval_every": eval_every,
            "eval_chars": eval_chars,
            "checkpoint_every": checkpoint_every,
            "patience": patience,
            "seed": seed,
            "precision": precision.value if precision else None,
            "deterministic": deterministic,
        },
        epochs=epochs,
        extend_steps=extend_steps,
        extend_epochs=extend_epochs,
        extend_minutes=extend_minutes,
        device=device_choice,
        threads=threads,
    )
    if not request.sources and request.resume is None:
        err.print("charrnn: corpus: name a text file, directory or corpus to train on (or --resume a run)", markup=False)
        raise typer.Exit(2)
    run = prepare_run(request)
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
    verb = f"resuming {run.resumed_from} at step {run.trainer.step}" if run.resumed_from else "training"
    # Byte and BPE runs count tokens: calling them characters would misstate the text's size.
    units = "characters" if run.corpus_options.tokenizer == "chars" else "tokens"
    err.print(
        f"{verb}: {m.layers}x{m.hidden} {m.cell.upper()}, {run.model.num_parameters():,} parameters, "
        f"vocabulary {len(run.vocab)}, {len(run.corpus.train):,} train / "
        f"{0 if run.corpus.val is None else len(run.corpus.val):,} val {units}, "
        f"batch {layout.batch_size}x{layout.seq_len}"
        + (f" on each of {run.trainer.world_size} processes" if run.trainer.world_size > 1 else "")
        + f", {budget}, device {run.trainer.device}",
        markup=False,
    )
    if run.trainer.device.type == "cpu":
        err.print(f"threads: {run.threads.describe()}", markup=False)
    if run.trainer.lr_range is not None:
        err.print(_describe_lr_range(run.trainer.lr_range, t.lr, fresh=run.resumed_from is None), markup=False)
    err.print(f"run directory: {run.directory}", markup=False)
    if run.unigram_bpc is not None:
        which = "training" if run.trainer.val_ids is None else "validation"
        err.print(
            f"unigram baseline: {run.unigram_bpc:.3f} bpc on the {which} text "
            "(a model that knows only how often each character occurs)",
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
            f"stopped at step {result.step}; checkpoint saved to {run.directory / 'last.pt'}\n"
            f"resume with: charrnn train --resume {run.directory}",
            markup=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    reason = {"finished": "step budget reached", "time": "time budget reached", "early_stop": "early stop"}
    err.print(
        f"done ({reason.get(result.status, result.status)}) at step {result.step} in {seconds:.0f} s; "
        f"best val {best} bpc; checkpoints in {run.directory}",
        markup=False,
    )


# ----------------------------------------------------------------------------- sample

DEFAULT_SEPARATOR = "--- sample {i} of {n} {status} ---"


@app.command(cls=HelpCommand)
@user_errors
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)],
    length: Annotated[int, typer.Option(min=1, help="Characters to generate per sample.")] = SAMPLE["length"],
    temperature: Annotated[float, typer.Option(min=0, help="Sampling temperature; 0 = greedy.")] = SAMPLE["temperature"],
    top_k: Annotated[int, typer.Option(min=0, help="Sample only among the k most likely characters; 0 = off.")] = SAMPLE["top_k"],
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, above 0 and at most 1; 1 = off.")] = SAMPLE["top_p"],
    min_p: Annotated[float, typer.Option(min=0, max=1, help="Drop characters less likely than this fraction of the most likely one; 0 = off.")] = SAMPLE["min_p"],
    repetition_penalty: Annotated[float, typer.Option(help="Above 1, characters seen in the last --repetition-window become less likely; 1 = off; above 0 and below 1, more likely.")] = SAMPLE["repetition_penalty"],
    repetition_window: Annotated[int, typer.Option(min=1, help="Recent characters (prime included) the repetition penalty looks at.")] = SAMPLE["repetition_window"],
    beam: Annotated[int, typer.Option(min=0, help="Beam search with this many beams instead of sampling: the most likely continuation, deterministic; good for short completions, repetitive on long ones. 0 = sample.", rich_help_panel=MODES)] = SAMPLE["beam"],
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Prompt loop: each line you type is continued; /help lists commands (/temp, /len, ...), /quit or EOF ends.", rich_help_panel=MODES)] = False,
    prime: Annotated[str, typer.Option(help="Text to condition on first (printed before the sample).")] = "",
    seed: Annotated[Optional[int], typer.Option(help="Random seed, 0 to 2**63-1: same seed, same text. \\[default: random, reported]")] = None,
    num_samples: Annotated[int, typer.Option(min=1, help="Samples to make, generated together in one batch; each is written out as soon as its text is final, in order, followed by a --separator line.")] = SAMPLE["num_samples"],
    separator: Annotated[str, typer.Option(help="With --num-samples > 1, the line written on stdout after each sample, for scripts to split on: {i} becomes the sample's number, {n} the number of samples, {status} 'complete' or 'cut short' (Ctrl-C).")] = DEFAULT_SEPARATOR,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample at this string (repeatable; not printed).")] = None,
    unknown: Annotated[str, typer.Option(metavar="<error|skip>", help="Prime characters outside the vocabulary: error (names them) or skip.")] = SAMPLE["unknown"],
    best: Annotated[bool, typer.Option("--best", help="Use the run directory's best checkpoint, not its latest.", rich_help_panel=MODEL)] = False,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run the model.", rich_help_panel=MODEL)] = DeviceChoice.auto,
    threads: Annotated[Optional[int], typer.Option(min=1, help=THREADS_HELP, show_default=False, rich_help_panel=MODEL)] = None,
    engine: Annotated[Engine, typer.Option(help="fast = weights laid out once for single steps (CPU); eager = the model's own forward (the reference; cuDNN on GPU); auto = fast on CPU, eager on GPU. Same seed, same text either way.", rich_help_panel=MODEL)] = Engine(SAMPLE["engine"]),
    check_copying: Annotated[bool, typer.Option("--check-copying", help="After sampling, report on stderr the longest substring of each sample found verbatim in the training text, and the share of it in copied runs of --copy-min-run+ characters, beside the same figures for unseen validation text. About 1 s per 1,000 sampled characters per MB of training text.", rich_help_panel=COPYING)] = False,
    training_text: Annotated[Optional[Path], typer.Option(help="Check copying against this file instead of the training files the checkpoint records (implies --check-copying).", show_default=False, rich_help_panel=COPYING)] = None,
    copy_min_run: Annotated[int, typer.Option(min=1, help="Shortest verbatim run counted as copied by --check-copying.", rich_help_panel=COPYING)] = SAMPLE["copy_min_run"],
) -> None:
    """Generate text, streaming it to stdout as it is made."""
    from charrnn.device import resolve_device
    from charrnn.model.loading import load_model
    from charrnn.generation.sample import SampleConfig

    config = SampleConfig(
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        repetition_window=repetition_window,
        prime=prime,
        seed=seed,
        num_samples=num_samples,
        stop=tuple(stop or ()),
        unknown=unknown,
        engine=engine.value,
    )
    from charrnn.errors import ConfigError

    if not separator:
        raise ConfigError("--separator must not be empty: it is the line that tells samples apart")
    target = resolve_device(device.value)
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", device.value)
    governor = _generation_threads(threads, paced=not (beam or interactive)) if target.type == "cpu" else None

    if beam and interactive:
        raise ConfigError("--beam and --interactive cannot be combined")
    check_copying = check_copying or training_text is not None
    if check_copying and interactive:
        raise ConfigError("--check-copying works on generated samples, not the --interactive loop")
    references = None
    if check_copying:
        from charrnn.generation.copying import reference_texts

        # Read before sampling: a missing training file is answered before any output.
        references = reference_texts(saved.corpus, training_text)
    if beam:
        texts = _sample_beam(model, vocab, config, beam, target)
        _report_copying(references, texts, copy_min_run)
        return
    from charrnn.generation.sample import prime_ids

    prime_ids(vocab, config)  # a prime the model cannot read is answered before any output
    err.print(f"seed {config.seed}", markup=False)
    if interactive:
        _sample_interactive(model, vocab, config, target)
        return
    texts, cut, seconds = _stream_samples(model, vocab, config, target, separator, governor)
    produced = sum(len(text) for text in texts)
    err.print(f"{produced} characters in {seconds:.2f} s ({produced / max(seconds, 1e-9):,.0f} chars/s)", markup=False)
    if num_samples > 1:
        _warn_separator_clashes(texts, prime, separator)
    if cut is not None:
        fail(f"charrnn: interrupted: {_cut_summary(cut, num_samples)}", EXIT_INTERRUPTED)
    _report_copying(references, texts, copy_min_run)


def _separator_line(template: str, number: int, count: int, cut: bool) -> str:
    # str.replace, not str.format: any other braces in the template are kept as written.
    fields = {"{i}": str(number), "{n}": str(count), "{status}": "cut short" if cut else "complete"}
    for field, value in fields.items():
        template = template.replace(field, value)
    return template


def _stream_samples(model, vocab, config, target, separator: str, governor=None):
    """Write the samples to stdout as ``stream_samples`` gives them out: the first as it is
    made, each later one as soon as its text is final. The first Ctrl-C (or SIGTERM) ends
    generation and writes out every sample made so far; a second one quits at once.
    Returns the texts, the numbers of the samples cut short (None without a Ctrl-C), seconds."""
    from charrnn.generation.sample import stream_samples
    from charrnn.cli.signals import graceful_stop

    stop_requested = False

    def request_stop(signum: int) -> None:
        nonlocal stop_requested
        stop_requested = True

    n = config.num_samples
    parts: list[list[str]] = [[] for _ in range(n)]
    cut: list[int] = []
    started = time.perf_counter()
    with graceful_stop(request_stop):
        pieces = stream_samples(model, vocab, config, target, should_stop=lambda: stop_requested, governor=governor)
        first = next(pieces)  # errors (a bad prime) surface before anything is printed
        for piece in itertools.chain([first], pieces):
            if not parts[piece.sample]:
                sys.stdout.write(config.prime)
            parts[piece.sample].append(piece.text)
            sys.stdout.write(piece.text)
            if piece.last:
                sys.stdout.write("\n")
                if piece.cut:
                    cut.append(piece.sample + 1)
                if n > 1:
                    sys.stdout.write(_separator_line(separator, piece.sample + 1, n, piece.cut) + "\n")
            sys.stdout.flush()
    seconds = time.perf_counter() - started
    return ["".join(p) for p in parts], (cut if stop_requested else None), seconds


def _cut_summary(cut: list[int], count: int) -> str:
    if count == 1:
        return "the sample was cut short; what was made is on stdout" if cut else "the sample was complete"
    if not cut:
        return f"all {count} samples were complete"
    numbers = ", ".join(str(i) for i in cut)
    return f"{len(cut)} of {count} samples cut short ({numbers}); what was made is on stdout"


def _warn_separator_clashes(texts: list[str], prime: str, separator: str) -> None:
    """A sample with a line equal to a separator line would split wrongly: say so."""
    n = len(texts)
    lines = {_separator_line(separator, i, n, cut) for i in range(1, n + 1) for cut in (False, True)}
    clashes = [str(i) for i, text in enumerate(texts, 1) if lines.intersection((prime + text).split("\n"))]
    if clashes:
        err.print(
            f"warning: sample {', '.join(clashes)} has a line equal to a separator line; "
            "choose another with --separator to split the samples reliably",
            markup=False,
        )


def _report_copying(references, texts: list[str], min_run: int) -> None:
    """One stderr line per sample: its longest verbatim copy and copied share, then the same
    figures for unseen text of the same length, so the user can tell learning from copying."""
    if references is None:
        return
    from charrnn.generation.copying import copy_report, unseen_baseline

    err.print(f"copying check against {references.source} ({len(references.train):,} training characters):", markup=False)
    for i, text in enumerate(texts, 1):
        report = copy_report(text, references.train, min_run)
        label = f"sample {i}" if len(texts) > 1 else "sample"
        err.print(f"  {label}: {_copy_figures(report)}", markup=False)
    baseline = unseen_baseline(references, max(len(t) for t in texts), min_run)
    if baseline is not None:
        err.print(f"  unseen validation text, same length: {_copy_figures(baseline)}", markup=False)


def _copy_figures(report) -> str:
    return (
        f"longest verbatim run {report.longest} chars {report.longest_text!r}; "
        f"{report.copied_fraction:.1%} in runs of {report.min_run}+ chars"
    )


def _sample_beam(model, vocab, config, width: int, target) -> list[str]:
    from charrnn.generation.beam import BeamConfig, beam_search
    from charrnn.errors import ConfigError

    if config.num_samples > width:
        raise ConfigError(f"--num-samples {config.num_samples} is more than the {width} beams kept")
    beams = beam_search(
        model,
        vocab,
        BeamConfig(
            width=width,
            length=config.length,
            prime=config.prime,
            unknown=config.unknown,
            stop=config.stop,
            repetition_penalty=config.repetition_penalty,
            repetition_window=config.repetition_window,
        ),
        target,
    )
    for i, found in enumerate(beams[: config.num_samples], 1):
        if config.num_samples > 1:
            err.print(f"--- beam {i}/{config.num_samples}: log-probability {found.log_prob:.3f} ---", markup=False)
        sys.stdout.write(config.prime + found.text + "\n")
        sys.stdout.flush()
    return [found.text for found in beams[: config.num_samples]]


def _sample_interactive(model, vocab, config, target) -> None:
    from charrnn.generation.interactive import HELP, InteractiveIO, InteractiveSession

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def prompt() -> None:
        sys.stderr.write("> ")
        sys.stderr.flush()

    def edited_line() -> str:
        try:
            return input("> ") + "\n"
        except EOFError:
            return ""

    err.print(HELP, markup=False)
    readline = _line_editing()
    io = InteractiveIO(
        read_line=edited_line if readline else sys.stdin.readline,
        write=write,
        tell=lambda line: err.print(line, markup=False),
        # input() shows the prompt itself (on the terminal), so that editing can redraw it.
        prompt=(lambda: None) if readline else prompt,
    )
    history = _load_prompt_history(readline)
    try:
        replies = InteractiveSession(model, vocab, config, target).run(io)
    finally:
        _save_prompt_history(readline, history)
    sys.stderr.write("\n")
    err.print(f"{replies} replies", markup=False)


def _line_editing():
    """Python's readline module, which gives input() arrow keys, editing and history, when
    stdin and stdout are a terminal (input() uses it only then); None otherwise, or where
    the module is absent (Windows)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    try:
        import readline
    except ImportError:
        return None
    return readline


def _load_prompt_history(readline) -> Path | None:
    """Earlier prompts from the history file in the cache directory (none when the cache is
    off); a history that cannot be read starts empty."""
    from charrnn.data.cache import cache_dir

    directory = cache_dir()
    if readline is None or directory is None:
        return None
    path = directory / "sample_history"
    readline.set_history_length(1000)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    return path


def _save_prompt_history(readline, path: Path | None) -> None:
    if readline is None or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass  # history is a convenience: an unwritable cache must not fail the command


# ----------------------------------------------------------------------------- info, eval


@app.command(cls=HelpCommand)
@user_errors
def info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)],
    best: Annotated[bool, typer.Option("--best", help="Describe the best checkpoint of a run directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a checkpoint's model, vocabulary, training progress and best validation bpc."""
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    facts = {
        "checkpoint": str(path),
        "charrnn_version": saved.version,
        "model": saved.model_config.to_dict(),
        "parameters": model.num_parameters(),
        "vocab_size": len(vocab),
        "vocab": "".join(vocab.chars),
        "step": saved.metrics.step,
        "train_minutes": saved.metrics.elapsed / 60,
        "best_val_bpc": saved.metrics.best_val_bpc,
        "train_config": None if saved.train_config is None else saved.train_config.to_dict(),
        "corpus": None if saved.corpus is None else saved.corpus.to_dict(),
    }
    if as_json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key == "train_minutes":
            key, value = "train_time", _duration(value * 60)
        elif key == "best_val_bpc":
            from charrnn.units import bpc_to_nats

            value = "-" if value is None else f"{value:.4f} bpc ({bpc_to_nats(value):.4f} nats/char)"
        elif key == "vocab":
            value = repr(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={_figure(v)}" for k, v in value.items())
        elif key in ("parameters", "vocab_size", "step") and isinstance(value, int):
            value = f"{value:,}"
        else:
            value = _figure(value)
        table.add_row(Text(key, style="bold"), Text(value))
    out.print(table)


def _figure(value) -> str:
    """A float to six significant digits (0.003, not 0.0030000000000000001); full precision
    stays in ``info --json``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


@app.command("eval", cls=HelpCommand)
@user_errors
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)],
    files: Annotated[list[Path], typer.Argument(parser=_given_path, help="Text files to score, or a named corpus's split, e.g. ptb-char:test.", show_default=False)],
    best: Annotated[bool, typer.Option("--best", help="Use the run directory's best checkpoint.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = DEFAULTS["corpus"]["encoding"],
    device: Annotated[DeviceChoice, typer.Option(help="Where to run the model.")] = DeviceChoice.auto,
    unknown: Annotated[str, typer.Option(metavar="<error|skip>", help="Characters outside the model's vocabulary: error, or skip (leave them out of the text scored, and say how many).")] = DEFAULTS["eval"]["unknown"],
    threads: Annotated[Optional[int], typer.Option(min=1, help=THREADS_HELP, show_default=False)] = None,
) -> None:
    """Print the bits per character the model assigns to text files, read as one stream."""
    from charrnn.data.corpus import resolve_sources
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.device import resolve_device
    from charrnn.errors import ConfigError
    from charrnn.model.evaluation import evaluate
    from charrnn.model.loading import load_model

    if unknown not in ("error", "skip"):
        raise ConfigError("--unknown must be 'error' or 'skip'")
    model, vocab, _ = load_model(checkpoint, "best" if best else "last", device.value)
    sources = resolve_sources([str(f) for f in files], encoding=encoding)
    advice = "eval cannot score characters the model never saw; pass --unknown skip to leave them out"
    text = vocab_kind(vocab.kind).score_text(sources.train, vocab, encoding, unknown, advice)
    ids, tokens_per_char, skipped = text.ids, text.tokens_per_char, text.skipped
    if len(ids) < 2:
        from charrnn.errors import CorpusError

        raise CorpusError("the text to evaluate needs at least 2 characters")
    target = resolve_device(device.value)
    governor = _thread_governor(threads) if target.type == "cpu" else None
    nats = evaluate(model, ids, target, governor=governor) * tokens_per_char
    scored = f"{len(ids) - 1:,} characters" if tokens_per_char == 1.0 else f"{text.chars:,} characters ({len(ids) - 1:,} tokens)"
    left_out = f" ({skipped:,} characters outside the vocabulary left out)" if skipped else ""
    from charrnn.units import nats_to_bpc

    from charrnn.data.unigram import unigram_bpc

    baseline = unigram_bpc(ids, tokens_per_char)
    print(
        f"{nats_to_bpc(nats):.4f} bpc ({nats:.4f} nats/char) over {scored}{left_out}; "
        f"unigram baseline {baseline:.4f} bpc"
    )


@app.command(cls=HelpCommand)
@user_errors
def vocab(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)],
    output: Annotated[Path, typer.Option("--out", parser=_out_path, metavar="<path>", help="Where to write the Hugging Face tokenizer.json.")] = Path("tokenizer.json"),
) -> None:
    """Export the vocabulary as a Hugging Face tokenizer.json (PreTrainedTokenizerFast loads it)."""
    from charrnn.model.loading import load_model

    _file_not_directory(output, "tokenizer.json")
    _, chars, _ = load_model(checkpoint, device="cpu")
    chars.save_tokenizer_json(output)
    err.print(f"wrote {output} ({len(chars)} characters)", markup=False)


# ----------------------------------------------------------------------------- export


EXPORT = DEFAULTS["export"]
FORMAT_HELP = (
    "pt2: torch.export, loads with torch alone; onnx: onnxruntime in any language (needs the "
    "optional onnx, onnxscript and onnxruntime); c: one C99 source file, libc and libm only; torchscript: "
    f"deprecated by torch, for libtorch and mobile. {_default('export', 'format')}"
)
QUANTIZE_HELP = (
    "Smaller weights: int8 for onnx (onnxruntime's dynamic quantization; a GRU's recurrent "
    "layers stay float32) and c (a scale per row); float16 for c. \\[default: float32]"
)


@app.command(cls=HelpCommand)
@user_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)],
    file_format: Annotated[ExportFormatName, typer.Option("--format", help=FORMAT_HELP, show_default=False)] = ExportFormatName(EXPORT["format"]),
    quantize: Annotated[Optional[Quantization], typer.Option(help=QUANTIZE_HELP, show_default=False)] = EXPORT["quantize"],
    output: Annotated[Optional[Path], typer.Option("--out", parser=_out_path, metavar="<path>", help="File to write. \\[default: RUN/model.pt2, model.onnx, model.c or model.torchscript.pt, or beside the checkpoint file]", show_default=False)] = None,
    best: Annotated[bool, typer.Option("--best", help="Export the run directory's best checkpoint.")] = False,
) -> None:
    """Write the model, its vocabulary and shape as a file that runs without charrnn, check it
    against the checkpoint, and say its size and the check on stderr."""
    from charrnn.export.formats import FORMATS, check_output, check_request, default_output, export_model, require_format

    name = file_format.value
    quantize_name = None if quantize is None else quantize.value
    check_request(name, quantize_name)
    require_format(name)  # before torch is imported: a missing package is named at once
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model

    _file_not_directory(output, f"model{FORMATS[name].suffix}")
    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    if output is None:
        output = default_output(name, path, checkpoint.is_dir())
    check_output(name, output)
    source = {"checkpoint": str(path), "step": saved.metrics.step}
    report = export_model(name, model, vocab, output, quantize_name, source)
    config = model.config
    weights = f", {quantize_name} weights" if quantize_name else ""
    err.print(
        f"wrote {', '.join(str(p) for p in report.paths)} ({_size(report.size_bytes)}; "
        f"{FORMATS[name].description}; {config.cell.upper()} {config.layers}x{config.hidden}, "
        f"vocabulary {len(vocab)} {vocab.kind}{weights})",
        markup=False,
    )
    err.print(f"check: {report.check}", markup=False)


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.1f} kB"


# ----------------------------------------------------------------------------- serve

SERVE = DEFAULTS["serve"]
LIMITS = "Limits"
ACCESS = "Access"


@app.command(cls=HelpCommand)
@user_errors
def serve(
    checkpoint: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory or checkpoint file to serve.", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on; another than loopback needs --api-key.", rich_help_panel=ACCESS)] = SERVE["host"],
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (the address is printed).", rich_help_panel=ACCESS)] = SERVE["port"],
    api_key: Annotated[Optional[str], typer.Option(envvar="CHARRNN_API_KEY", show_envvar=True, help="Require Authorization: Bearer KEY on every request (the playground page asks for it). \\[default: none on loopback]", show_default=False, rich_help_panel=ACCESS)] = None,
    cors: Annotated[Optional[list[str]], typer.Option(metavar="ORIGIN", help="Let pages from this origin call the API from a browser (repeatable). \\[default: none]", show_default=False, rich_help_panel=ACCESS)] = None,
    max_streams: Annotated[int, typer.Option(min=1, help="Streams advanced together in one batched step.", rich_help_panel=LIMITS)] = SERVE["max_streams"],
    max_queue: Annotated[int, typer.Option(min=0, help="Streams waiting for a slot; past this a request is answered 503 with Retry-After.", rich_help_panel=LIMITS)] = SERVE["max_queue"],
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help=f"Characters made when a request gives no max_tokens (num_predict). \\[default: {SERVE['max_tokens']}, or --max-tokens-limit if lower]", show_default=False, rich_help_panel=LIMITS)] = None,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="The most max_tokens a request may ask for.", rich_help_panel=LIMITS)] = SERVE["max_tokens_limit"],
    max_prompt: Annotated[int, typer.Option(min=1, help="The longest prompt, in characters.", rich_help_panel=LIMITS)] = SERVE["max_prompt"],
    max_body: Annotated[int, typer.Option(min=1024, help="The largest request body, in bytes.", rich_help_panel=LIMITS)] = SERVE["max_body"],
    max_n: Annotated[int, typer.Option(min=1, help="The most completions (n) one request may ask for.", rich_help_panel=LIMITS)] = SERVE["max_n"],
    grace: Annotated[float, typer.Option(min=0, help="Seconds running streams get to finish after SIGTERM or Ctrl-C; then each ends with an event that says so.")] = SERVE["grace"],
    threads: Annotated[int, typer.Option(min=1, help="CPU threads of the model step (the event loop that serves HTTP runs beside it).")] = SERVE["threads"],
    best: Annotated[bool, typer.Option("--best", help="Serve the run directory's best checkpoint, not its latest.")] = False,
) -> None:
    """Serve a model over HTTP to many clients at once: OpenAI-compatible /v1/completions,
    Ollama-style /api/generate, and a playground page at /."""
    from charrnn.serve.config import ServeConfig, require_server_packages

    config = ServeConfig(
        host=host, port=port, max_streams=max_streams, max_queue=max_queue, max_tokens=max_tokens,
        max_tokens_limit=max_tokens_limit, max_prompt=max_prompt, max_body=max_body, max_n=max_n,
        grace=grace, threads=threads, api_key=api_key, cors=tuple(cors or ()),
    )
    require_server_packages()
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model
    from charrnn.serve.app import serve as run_server

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    model_id = (checkpoint if checkpoint.is_dir() else path.parent).resolve().name
    m = model.config
    facts = {
        "cell": m.cell, "layers": m.layers, "hidden": m.hidden, "vocab_size": len(vocab),
        "parameters": model.num_parameters(), "step": saved.metrics.step, "max_tokens_limit": max_tokens_limit,
    }

    def announce(url: Optional[str]) -> None:
        if url is None:
            # From the signal handler: os.write, as a buffered stream may be mid-write.
            os.write(2, f"stopping: no new requests; running streams get {grace:g} s to finish (Ctrl-C again quits at once)\n".encode())
            return
        err.print(
            f"serving {model_id} ({m.cell.upper()} {m.layers}x{m.hidden}, vocabulary {len(vocab)}) on {url}\n"
            f"  playground {url}/   OpenAI {url}/v1   Ollama {url}/api/generate\n"
            f"  up to {max_streams} streams at once, {max_queue} waiting; "
            + ("API key required" if api_key else "no API key")
            + "; Ctrl-C or SIGTERM stops",
            markup=False,
        )

    run_server(model, vocab, model_id, facts, config, announce)
    err.print("stopped", markup=False)


# ----------------------------------------------------------------------------- plot


@app.command(cls=HelpCommand)
@user_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="Run directories (or metrics.jsonl files); several are drawn on one figure.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--out", parser=_out_path, help="PNG to write. \\[default: RUN/curves.png for one run, curves.png for several]", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option("--terminal", help="Draw the curves as text on stdout instead (no display or matplotlib needed); with --out, the PNG too.")] = False,
    x_axis: Annotated[str, typer.Option("--x", metavar="<step|time>", help="Horizontal axis of the text chart: step or time.")] = "step",
    width: Annotated[int, typer.Option(min=20, max=400, help="Text chart width in characters.")] = 72,
    height: Annotated[int, typer.Option(min=5, max=200, help="Text chart height in lines.")] = 16,
    gradients: Annotated[bool, typer.Option("--gradients", help="Also draw each group of weights' gradient norm (embedding, weight_ih_l*, weight_hh_l*, decoder; log scale) and the share of recent steps whose gradients were clipped (see docs/training-diagnostics.md).")] = False,
) -> None:
    """Plot train and validation bits per character against steps and wall time."""
    from charrnn.errors import ConfigError
    from charrnn.training.plot import gradient_chart, load_curves, require_gradients, text_chart, write_png

    if x_axis not in ("step", "time"):
        raise ConfigError("--x must be step or time")
    _file_not_directory(output, "curves.png")
    curves = [load_curves(path) for path in runs]
    if gradients:
        require_gradients(curves)
    if terminal:
        sys.stdout.write(text_chart(curves, x_axis, width, height))
        for run in curves if gradients else ():
            sys.stdout.write("\n" + gradient_chart(run, x_axis, width, height))
        sys.stdout.flush()
        if output is None:
            return
    if output is None:
        output = runs[0] / "curves.png" if len(runs) == 1 and runs[0].is_dir() else Path("curves.png")
    written = write_png(curves, output, gradients=gradients)
    err.print(f"wrote {written}", markup=False)


# ----------------------------------------------------------------------------- inspect

INSPECT = DEFAULTS["inspect"]
WHAT_TO_SHOW = "What to show"
REPLAY_THREADS_HELP = (
    "CPU threads for torch (OMP_NUM_THREADS also fixes it). \\[default: 1: the layers are "
    "replayed one step at a time, many small operations that more threads only slow down]"
)


def _note_no_png(png: Optional[Path]) -> bool:
    """Whether the PNG can be drawn; if not, one line says so and the terminal view goes on."""
    from charrnn.inspect.plots import have_matplotlib

    if png is None:
        return False
    if have_matplotlib():
        return True
    err.print(f"charrnn: no PNG written to {png}: it needs matplotlib (pip install 'charrnn[plot]'); the terminal view follows", markup=False)
    return False


@app.command(cls=HelpCommand)
@user_errors
def gradients(
    checkpoint: Annotated[Path, typer.Argument(metavar="RUN", help="Checkpoint file or run directory.", show_default=False)],
    text: Annotated[Optional[Path], typer.Option(help="Text whose first characters make the window. \\[default: the run's training text]", show_default=False)] = None,
    steps: Annotated[int, typer.Option(min=1, help="Steps in the window: the gradient is followed this far back.")] = DEFAULTS["gradients"]["steps"],
    compare: Annotated[bool, typer.Option("--compare", help="Also draw a plain RNN, a GRU, an LSTM with forget bias 1 (charrnn's) and one with forget bias 0, all of this architecture at initialisation, on the same text.")] = False,
    png: Annotated[Optional[Path], typer.Option(help="Also draw the norms (log scale) in this PNG.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the weights drawn for the models at initialisation.")] = DEFAULTS["gradients"]["seed"],
    best: Annotated[bool, typer.Option("--best", help="Use the run directory's best checkpoint.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = DEFAULTS["corpus"]["encoding"],
    threads: Annotated[Optional[int], typer.Option(min=1, help=REPLAY_THREADS_HELP, show_default=False)] = None,
) -> None:
    """Show how the gradient of the loss at the last step fades over the steps before it: trained against initialisation, or several cells compared."""
    from charrnn.cli.inspect_views import show_gradients
    from charrnn.inspect.gradients import compare_cells, fresh_model, gradient_flow
    from charrnn.inspect.plots import gradients_png
    from charrnn.inspect.text import read_text
    from charrnn.model.loading import load_model
    from charrnn.model.network import ModelConfig

    _file_not_directory(png, "gradients.png")
    _generation_threads(threads, paced=False)
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", "cpu")
    window = read_text(text, saved, vocab, steps + 1, encoding, at_least=2)
    if len(window) < steps + 1:
        err.print(f"charrnn: {window.source} has {len(window)} characters: the window is {len(window) - 1} step(s)", markup=False)
    config = model.config
    flows = [gradient_flow(model, window.ids, f"trained (step {saved.metrics.step:,})")]
    if compare:
        flows += compare_cells(config, window.ids, seed)
    else:
        bare = ModelConfig(config.vocab_size, config.cell, config.layers, config.hidden, config.embed, 0.0)
        flows.append(gradient_flow(fresh_model(bare, seed), window.ids, "at initialisation"))
    show_gradients(out, flows, f"{len(window) - 1} characters of {Path(window.source).name}")
    if _note_no_png(png):
        shape = f"{config.cell.upper()} {config.layers}x{config.hidden}"
        written = gradients_png(flows, png, f"{shape}: gradient of the last step's loss, {len(window) - 1} steps of {Path(window.source).name}")
        err.print(f"wrote {written}", markup=False)


@app.command("inspect", cls=HelpCommand)
@user_errors
def inspect_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="RUN", help="Checkpoint file or run directory.", show_default=False)],
    text: Annotated[Optional[Path], typer.Option(help="Text to read. \\[default: the run's training text]", show_default=False)] = None,
    chars: Annotated[int, typer.Option(min=1, help="Characters of the text to read (from its start).")] = INSPECT["chars"],
    gates: Annotated[bool, typer.Option("--gates", help="Gate saturation: per layer and gate, the fraction of steps each unit is below 0.1 or above 0.9 (LSTM, GRU).", rich_help_panel=WHAT_TO_SHOW)] = False,
    neuron: Annotated[Optional[str], typer.Option(metavar="L:N", help="Colour the text by unit N of layer L (both from 0).", rich_help_panel=WHAT_TO_SHOW, show_default=False)] = None,
    find: Annotated[bool, typer.Option("--find", "--search", help="Rank the units whose activation best follows properties of the text: inside quotes, inside brackets, position in the line, indentation, start of a word.", rich_help_panel=WHAT_TO_SHOW)] = False,
    dump_states: Annotated[Optional[Path], typer.Option("--dump-states", metavar="FILE.npz", help="Write every layer's per-step states (and gates) to a numpy .npz file (layout in docs/inspect.md).", rich_help_panel=WHAT_TO_SHOW, show_default=False)] = None,
    html: Annotated[Optional[Path], typer.Option(help="With --neuron: also write the coloured text as one self-contained HTML page.", show_default=False)] = None,
    png: Annotated[Optional[Path], typer.Option(help="Also draw a PNG: with --gates the saturation plot (one dot per unit), with --neuron the coloured text (its first 40 lines).", show_default=False)] = None,
    state: Annotated[str, typer.Option(metavar="<h|c>", help="Which activation --neuron and --find read: h (the hidden state), or c (an LSTM's cell state, through tanh).")] = INSPECT["state"],
    top: Annotated[int, typer.Option(min=1, help="With --find: how many units to list.")] = INSPECT["top"],
    best: Annotated[bool, typer.Option("--best", help="Use the run directory's best checkpoint.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = DEFAULTS["corpus"]["encoding"],
    threads: Annotated[Optional[int], typer.Option(min=1, help=REPLAY_THREADS_HELP, show_default=False)] = None,
) -> None:
    """Look inside the network on a text: gate saturation, one unit over the text, the units that follow its structure, the states themselves."""
    from charrnn.errors import ConfigError

    if not (gates or neuron or find or dump_states):
        raise ConfigError("choose what to show: --gates, --neuron L:N, --find or --dump-states FILE.npz")
    if html is not None and neuron is None:
        raise ConfigError("--html draws one unit over the text; give it with --neuron L:N")
    if png is not None and gates == (neuron is not None):
        raise ConfigError("--png draws one picture: the gate saturation plot (with --gates) or one unit over the text (with --neuron L:N); give one of them")
    if state not in ("h", "c"):
        raise ConfigError(f"--state must be h or c, not {state!r}")
    for path, example in ((html, "neuron.html"), (png, "gates.png"), (dump_states, "states.npz")):
        _file_not_directory(path, example)

    from charrnn.cli.inspect_views import show_matches, show_neuron, show_saturation
    from charrnn.inspect.neurons import best_per_feature, find_units, parse_neuron, state_for
    from charrnn.inspect.plots import neuron_png, saturation_png
    from charrnn.inspect.render import write_html
    from charrnn.inspect.replayed import replay_text
    from charrnn.inspect.saturation import check_has_gates, gate_saturation, summarise
    from charrnn.inspect.states import dump_states as write_states
    from charrnn.inspect.text import read_text
    from charrnn.model.loading import load_model

    _generation_threads(threads, paced=False)
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", "cpu")
    config = model.config
    if gates:
        check_has_gates(config.cell)
    if state == "c" and config.cell != "lstm":
        raise ConfigError(f"--state c: a {config.cell.upper()} has no cell state; use --state h")
    unit = parse_neuron(neuron, config.layers, config.hidden) if neuron is not None else None
    read = read_text(text, saved, vocab, chars, encoding)
    replayed = replay_text(model, read.ids)
    name = Path(read.source).name
    if dump_states is not None:
        written = write_states(replayed, read.ids, read.pieces, dump_states)
        err.print(f"wrote {written} ({config.layers} layers x {len(read):,} steps x {config.hidden} units)", markup=False)
    if gates:
        saturation = gate_saturation(replayed)
        show_saturation(out, summarise(saturation), saturation.steps)
        if _note_no_png(png):
            title = f"{config.cell.upper()} {config.layers}x{config.hidden}: gate saturation over {len(read):,} characters of {name}"
            err.print(f"wrote {saturation_png(saturation, png, title)}", markup=False)
    if find:
        matches, absent = find_units(replayed, read.pieces, state, top)
        show_matches(out, matches, best_per_feature(replayed, read.pieces, state), absent, state)
    if unit is not None:
        layer, index = unit
        values = state_for(replayed, state)[layer, :, index]
        err.print(
            f"unit {layer}:{index} ({state}) over {len(read):,} characters of {name}: "
            f"min {values.min():+.2f}, mean {values.mean():+.2f}, max {values.max():+.2f}",
            markup=False,
        )
        show_neuron(out, read.pieces, values)
        if html is not None:
            legend = f"{config.cell.upper()} {config.layers}x{config.hidden}, unit {layer}:{index} ({state}); red positive, blue negative; hover for the value"
            written = write_html(html, read.pieces, values, f"unit {layer}:{index} over {name}", legend)
            err.print(f"wrote {written}", markup=False)
        if _note_no_png(png):
            title = f"{config.cell.upper()} {config.layers}x{config.hidden}, unit {layer}:{index} ({state}) over {name}: red positive, blue negative"
            err.print(f"wrote {neuron_png(read.pieces, values, png, title)}", markup=False)


# ----------------------------------------------------------------------------- bench


@app.command(cls=HelpCommand)
@user_errors
def bench(
    long: Annotated[bool, typer.Option("--long", help="Measure ~4x longer for steadier figures (several minutes).", rich_help_panel=MEASURED)] = False,
    preset: Annotated[Optional[list[Preset]], typer.Option(metavar="<preset>...", help=f"Model size to measure (repeatable): {', '.join(p.value for p in Preset)}. \\[default: small and large; on a GPU 2x512 and 3x1024]")] = None,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell of the measured models.")] = Cell.lstm,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Training batch. \\[default: the trainer's default for the device]")] = None,
    seq_len: Annotated[Optional[int], typer.Option(min=1, help="Training window. \\[default: the trainer's default]")] = None,
    corpus_mb: Annotated[int, typer.Option(min=1, help="Size of the generated corpus for encoding speed and peak RSS.", rich_help_panel=MEASURED)] = 100,
    text: Annotated[Optional[Path], typer.Option(help="Text repeated to make that corpus. \\[default: generated words]", rich_help_panel=MEASURED)] = None,
    memory: Annotated[bool, typer.Option(help="Measure encoding speed and training peak RSS.", rich_help_panel=MEASURED)] = True,
    sampling: Annotated[bool, typer.Option(help="Measure sampling speed.", rich_help_panel=MEASURED)] = True,
    device: Annotated[DeviceChoice, typer.Option(help="Where to measure.")] = DeviceChoice.auto,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON here.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for every figure. \\[default: all cores for training and batches, one for a single sample, as the commands choose]", show_default=False)] = None,
    grad_stats_cost: Annotated[bool, typer.Option("--grad-stats-cost", help="Also time training steps with the per-group gradient statistics (on by default in train) off and on, alternating in the same run, and show their cost as a ratio.", rich_help_panel=MEASURED)] = False,
    export_runs: Annotated[Optional[list[Path]], typer.Option("--export", metavar="RUN", help="Instead: export this run (repeatable) in every format and measure each file's size, batch-1 latency and chars/s, and validation bpc against the checkpoint's, beside the FastStepper in the same run.", show_default=False)] = None,
    export_chars: Annotated[int, typer.Option(min=2, help=f"Validation characters each format steps through with --export. {_default('bench_export', 'chars')}", show_default=False)] = DEFAULTS["bench_export"]["chars"],
    contention: Annotated[bool, typer.Option("--contention", help="Instead: measure training and sampling beside other work (two trainings at once, a busy loop), adaptive threads against all cores, as ratios to each alone (about 6 minutes; --long: 18).")] = False,
    startup: Annotated[bool, typer.Option("--startup", help="Instead: measure how long every command's --help and tab completion take to start, against `python -c pass` (about 30 s; --long: 2 minutes).")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="Instead: start `charrnn serve` and stream from it with 1, 8, 32 and 64 clients at once: chars/s of all together, time to first character, gaps between characters, every request accounted for (about 40 s; --long: 2 minutes).")] = False,
    serve_run: Annotated[Optional[Path], typer.Option("--serve-run", metavar="RUN", help="With --serve: the run to serve. \\[default: a small-preset model trained one step]", show_default=False)] = None,
) -> None:
    """Measure training, sampling and encoding speed against this machine's matmul peak."""
    if contention:
        _bench_contention(long, json_path)
        return
    if export_runs:
        _bench_export(export_runs, export_chars, json_path)
        return
    if startup:
        _bench_startup(long, json_path)
        return
    if serve or serve_run is not None:
        _bench_serve(long, serve_run, json_path)
        return
    from charrnn.bench.speed import BenchConfig, run_bench
    from charrnn.cli.bench_tables import render_bench

    config = BenchConfig(
        long=long,
        presets=tuple(p.value for p in preset) if preset else BenchConfig.presets,
        cell=cell.value,
        device=device.value,
        batch_size=batch_size,
        seq_len=seq_len,
        corpus_mb=corpus_mb,
        memory=memory,
        sampling=sampling,
        source_text=text,
        threads=threads,
        grad_stats_cost=grad_stats_cost,
    )
    started = time.perf_counter()
    result = run_bench(config, progress=lambda message: err.print(f"bench: {message}", markup=False))
    # A table too wide for 80 columns is still one line per row when piped to a file.
    render_bench(result, out if out.is_terminal else Console(highlight=False, width=140))
    err.print(f"bench took {time.perf_counter() - started:.0f} s", markup=False)
    _write_json(result, json_path)


def _bench_export(runs: list[Path], chars: int, json_path: Optional[Path]) -> None:
    from charrnn.bench.export_speed import run_export_bench
    from charrnn.cli.bench_tables import render_export_bench

    started = time.perf_counter()
    result = run_export_bench(runs, chars, progress=lambda message: err.print(f"bench: {message}", markup=False))
    render_export_bench(result, out if out.is_terminal else Console(highlight=False, width=140))
    err.print(f"bench took {time.perf_counter() - started:.0f} s", markup=False)
    _write_json(result, json_path)


def _write_json(result, json_path: Optional[Path]) -> None:
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {json_path}", markup=False)


def _bench_contention(long: bool, json_path: Optional[Path]) -> None:
    from charrnn.cli.bench_tables import render_contention
    from charrnn.bench.contention import run_contention

    started = time.perf_counter()
    result = run_contention(60.0 if long else 15.0, progress=lambda message: err.print(f"bench: {message}", markup=False))
    render_contention(result, out if out.is_terminal else Console(highlight=False, width=140))
    err.print(f"bench took {time.perf_counter() - started:.0f} s", markup=False)
    _write_json(result, json_path)


def _bench_startup(long: bool, json_path: Optional[Path]) -> None:
    from charrnn.bench.startup import run_startup
    from charrnn.cli.bench_tables import render_startup

    commands = [[]] + [[c.name or c.callback.__name__] for c in app.registered_commands]
    commands += [[group.name] for group in app.registered_groups]
    completions = ["charrnn tr", "charrnn train --", "charrnn train --cell ", "charrnn sample --"]
    result = run_startup(
        commands, completions, rounds=25 if long else 7, progress=lambda message: err.print(f"bench: {message}", markup=False)
    )
    render_startup(result, out if out.is_terminal else Console(highlight=False, width=140))
    _write_json(result, json_path)


def _bench_serve(long: bool, run: Optional[Path], json_path: Optional[Path]) -> None:
    from charrnn.bench.serve_load import run_serve_load
    from charrnn.cli.bench_tables import render_serve_load
    from charrnn.serve.config import require_server_packages

    require_server_packages()
    started = time.perf_counter()
    result = run_serve_load(run, seconds=24.0 if long else 6.0, progress=lambda message: err.print(f"bench: {message}", markup=False))
    render_serve_load(result, out if out.is_terminal else Console(highlight=False, width=140))
    err.print(f"bench took {time.perf_counter() - started:.0f} s", markup=False)
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {json_path}", markup=False)


# ----------------------------------------------------------------------------- corpus


@corpus_app.command("list", cls=HelpCommand)
@user_errors
def corpus_list() -> None:
    """The corpora charrnn knows by name, and whether each is on this machine."""
    from charrnn.data.catalog import CATALOG, STDLIB_NAME, find_local, stdlib_corpus_path
    from charrnn.data.packaged import PACKAGED, find_packaged

    table = Table("name", "on this machine", "description", box=None)
    built = stdlib_corpus_path()
    table.add_row(
        STDLIB_NAME,
        Text(str(built) if built.exists() else "built on first use"),
        Text("the running Python's standard-library source (no download)"),
    )
    for name, corpus in PACKAGED.items():
        local = find_packaged(name)
        table.add_row(name, Text(str(local) if local else "no (charrnn corpus fetch builds it)"), Text(corpus.description))
    for entry in CATALOG.values():
        local = find_local(entry.train)
        table.add_row(entry.name, Text(str(local) if local else "no (charrnn corpus fetch)"), Text(entry.description))
    out.print(table)


@corpus_app.command("fetch", cls=HelpCommand)
@user_errors
def corpus_fetch(
    name: Annotated[str, typer.Argument(help="Corpus name from `charrnn corpus list`.", show_default=False)],
) -> None:
    """Download a corpus (checking its sha256), or build the stdlib corpus or one made from a package."""
    from charrnn.data.catalog import fetch

    found = fetch(name)
    for split in ("train", "valid", "test"):
        path = getattr(found, split)
        if path is not None:
            print(f"{split}: {path}")


@corpus_app.command("suite", cls=HelpCommand)
@user_errors
def corpus_suite() -> None:
    """Build the corpus suite the defaults are judged on, and list each text's size, vocabulary, unigram baseline and sha256."""
    from charrnn.data.suite import build_suite

    table = Table("name", "characters", "vocabulary", "unigram bpc", "sha256", "path", box=None)
    for corpus in build_suite():
        if corpus.path is None:
            table.add_row(corpus.name, "-", "-", "-", "-", Text(corpus.note))
            continue
        table.add_row(
            corpus.name,
            f"{corpus.chars:,}",
            f"{corpus.vocab:,}",
            f"{corpus.unigram_bpc:.3f}",
            corpus.sha256[:16],
            Text(str(corpus.path)),
        )
    out.print(table)


def main() -> None:
    app(prog_name="charrnn")


if __name__ == "__main__":
    main()
