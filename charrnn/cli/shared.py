"""What every command module shares: the two consoles (stdout for results, stderr for
everything else), the help panels and help texts, and the helpers that read paths and
choose threads."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from charrnn.options import DEFAULTS, PRESET_TRAINING, DeviceChoice, Precision
from charrnn.ranges import RANGES

# What several commands take, declared once.
CheckpointArgument = Annotated[Path, typer.Argument(help="Checkpoint file or run directory.", show_default=False)]
RunArgument = Annotated[Path, typer.Argument(metavar="RUN", help="Checkpoint file or run directory.", show_default=False)]
BestOption = Annotated[bool, typer.Option("--best", help="Use the run directory's best checkpoint, not its latest.")]



def ranged(section: str, name: str, *declarations: str, checked: bool = False, **option) -> typer.models.OptionInfo:
    """``typer.Option`` for an option whose range is ``RANGES[section][name]``; ``--help`` and
    usage.md show it from there (``charrnn.cli.help.range_of``). A config checks the ranges of
    its own options (charrnn.ranges), so the command line leaves them to it; ``checked=True``,
    for an option no config holds, has typer check it as the value is parsed."""
    allowed = RANGES[section][name]
    if checked:
        assert not (allowed.low_open or allowed.high_open), "typer checks closed ranges only"
        option.update(min=allowed.low, max=allowed.high)
    info = typer.Option(*declarations, **option)
    info.charrnn_range = allowed
    return info


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
REPLAY_THREADS_HELP = (
    "CPU threads for torch (OMP_NUM_THREADS also fixes it). \\[default: 1: the layers are "
    "replayed one step at a time, many small operations that more threads only slow down]"
)

# The device options of the commands that run a model, declared once.
DeviceOption = Annotated[DeviceChoice, typer.Option(help="Where to run the model.", rich_help_panel=DEVICE)]
# Training, sampling and evaluation: a governor picks the count by measured speed.
ThreadsOption = Annotated[Optional[int], ranged("threads", "threads", checked=True, help=THREADS_HELP, show_default=False, rich_help_panel=DEVICE)]
# inspect and gradients replay the layers one step at a time: one thread unless told.
ReplayThreadsOption = Annotated[Optional[int], ranged("threads", "threads", checked=True, help=REPLAY_THREADS_HELP, show_default=False, rich_help_panel=DEVICE)]
EncodingOption = Annotated[str, typer.Option(help="Text encoding of the files.")]
# The precision of sample's and serve's products (charrnn.precision), and of eval's.
PrecisionOption = Annotated[Precision, typer.Option(help="Arithmetic of the model's products: fp32; bf16 on a CPU with native bf16 instructions (avx512_bf16, amx_bf16) or a GPU; fp16 on a GPU; auto = bf16 where a short probe of this model's step at this batch (the fast engine, 16 samples or more) finds it at least 1.25x fp32's speed, else fp32. Same seed, same text within one precision.", rich_help_panel=DEVICE)]
EvalPrecisionOption = Annotated[Precision, typer.Option(help="Arithmetic of the model's forward: fp32; bf16 on a CPU with native bf16 instructions (avx512_bf16, amx_bf16) or a GPU, faster and within a few thousandths of a bit per character; fp16 on a GPU; auto = fp32, the model's exact figure (for a --dynamic pass of 16 rows or more, bf16 where a probe of one segment finds it at least 1.25x fp32's speed).", rich_help_panel=DEVICE)]


def say_precision(choice: str, dtype, device, probe=None) -> None:
    """The precision line on stderr where it is not fp32 (in fp32 everything runs as it
    always has): bf16 or fp16, asked for or chosen by ``auto``'s probe, and why."""
    import torch

    from charrnn.precision import describe_inference_precision

    if dtype != torch.float32:
        err.print(f"precision: {describe_inference_precision(choice, dtype, device, probe)}", markup=False)


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


def output_path(value) -> Path:
    """The parser of every option that names a path to write (tests/test_output_paths.py finds
    them by it): refuses the empty string, as Path("") is the current directory, where a run
    or an export would land unasked. What is at the path is checked by charrnn.outputs before
    the command's work starts."""
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



INSPECT = DEFAULTS["inspect"]
WHAT_TO_SHOW = "What to show"


def given_options(ctx: typer.Context) -> dict[str, str]:
    """The parameters given on the command line or by an environment variable (not left at
    their defaults), by name, with the option as the user would write it."""
    given = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[param.name] = max(param.opts, key=len)
    return given


def read_inputs(checkpoint: Path, best: bool, text: Optional[Path], saved) -> list[Path]:
    """What inspect and gradients read (the checkpoint given, the file it resolves to, the
    text or the run's training files): none of them may be one of their outputs."""
    from charrnn import checkpoint as ckpt

    corpus = saved.corpus if text is None else None
    training = [Path(name) for name in corpus.train_files] if corpus is not None else []
    return [checkpoint, ckpt.resolve(checkpoint, "best" if best else "last"), text, *training]


def _note_no_png(png: Optional[Path]) -> bool:
    """Whether the PNG can be drawn; if not, one line says so and the terminal view goes on."""
    from charrnn.inspect.plots import have_matplotlib

    if png is None:
        return False
    if have_matplotlib():
        return True
    err.print(f"charrnn: no PNG written to {png}: it needs matplotlib (pip install 'charrnn[plot]'); the terminal view follows", markup=False)
    return False
