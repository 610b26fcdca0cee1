"""The run's plan: what every option of a `charrnn train` request comes to, given the run it
resumes (if any), the device type and the number of processes.

One precedence for every option: the command line, then the resumed run, then the preset,
then the defaults table (``charrnn.options.DEFAULTS``). ``resolve_plan`` is pure: it reads no
file and touches no device or random generator, so a plan can be checked for a GPU or for
torchrun on any machine. Budgets in passes over the text (``--epochs``, ``--extend-epochs``)
become steps in one place, ``RunPlan.epoch_steps``, once the text's length is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.data.batches import plan_layout
from charrnn.data.vocab_kinds import KINDS
from charrnn.errors import ConfigError
from charrnn.model.presets import preset_training, resolve_preset
from charrnn.options import DEFAULTS, ModelConfig, TrainConfig, check_seed, is_lr_auto
from charrnn.ranges import check_finite, check_ranges, option_name
from charrnn.saved import CorpusOptions, SavedRun
from charrnn.text import require_valid

ARCHITECTURE_KEYS = ("cell", "layers", "hidden", "embed")
MODEL_KEYS = ARCHITECTURE_KEYS + ("dropout",)
BUDGET_KEYS = ("max_steps", "minutes")
MAX_INTEGER = 2**63 - 1


# The model's options a run request carries (the preset is a field of its own).
MODEL_OPTIONS = [name for name in DEFAULTS["model"] if name != "preset"]


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
    items: bool = False  # --items: the text is a list of items
    items_delimiter: str | None = None  # --items-delimiter (implies --items)
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

    @classmethod
    def of(cls, options: dict) -> "RunRequest":
        """The request from ``charrnn train``'s options by name: the model's and training's
        options (the "model" and "train" sections of the defaults table) go to their dicts,
        the text to read to ``sources`` and ``val_sources``, the rest to the field of their
        name. A choice is kept as its value."""
        values = {name: getattr(value, "value", value) for name, value in options.items()}
        model = {name: values.pop(name) for name in MODEL_OPTIONS}
        train = {name: values.pop(name) for name in DEFAULTS["train"]}
        sources, val_sources = list(values.pop("paths") or []), list(values.pop("val_file") or [])
        return cls(sources=sources, val_sources=val_sources, out=values.pop("out_dir"), model=model, train=train, **values)


@dataclass
class CorpusPlan:
    """The text to read and how, before any file is looked at."""

    train_specs: list[str]  # paths, directories or corpus names, as given or as the run recorded
    val_specs: list[str]
    encoding: str
    val_frac: float
    tokenizer: str  # "chars", "bytes" or "bpe"
    vocab_size: int | None  # --vocab-size as asked (bpe)
    extend_vocab: bool
    items_delimiter: str | None = None  # a list of items, between them this character

    def options(self, train_files, val_files, vocab_size: int) -> CorpusOptions:
        """The corpus options a run records, once its files and vocabulary are known."""
        return CorpusOptions(
            train_files=[str(Path(p).resolve()) for p in train_files],
            val_files=[str(Path(p).resolve()) for p in val_files],
            encoding=self.encoding,
            val_frac=self.val_frac,
            tokenizer=self.tokenizer,
            vocab_size=vocab_size if self.tokenizer in ("bpe", "word") else None,
            items_delimiter=self.items_delimiter,
        )


@dataclass
class RunPlan:
    corpus: CorpusPlan
    preset: str
    model: dict  # ModelConfig options; the vocabulary's size comes from the corpus
    # TrainConfig options. In a new run planned in passes over the text, max_steps is None
    # until ``train_config`` turns the passes into steps.
    train: dict
    world_size: int = 1
    resumed: bool = False
    epochs: float | None = None
    # With --resume: the budget given again as totals ("max_steps", "minutes"), checked against
    # the run's own by ``budget_extension``, and what --extend-* asks to add.
    totals: dict = field(default_factory=dict)
    extend_steps: int | None = None
    extend_epochs: float | None = None
    extend_minutes: float | None = None
    resume: Path | None = None  # as given, for the advice in messages
    # --lr auto in a new run: a range test chooses the rate once the model exists (``train``
    # then holds the preset's rate, which the test replaces).
    lr_auto: bool = False
    # A new run whose preset takes its dropout from the passes its budget holds, given no
    # --dropout (``charrnn.training.budget_fit``; ``model`` then holds the preset's floor).
    dropout_by_budget: bool = False

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **self.model)

    def windows(self, train_ids: int) -> int:
        """Steps per pass over a text of ``train_ids`` ids: under torchrun each step reads a
        window on every process, so N processes make a pass in 1/N of the steps."""
        return plan_layout(train_ids, self.train["batch_size"], self.train["seq_len"], self.world_size).windows

    def epoch_steps(self, epochs: float, train_ids: int) -> int:
        """``epochs`` passes over the text in steps (at least one)."""
        return max(1, math.ceil(epochs * self.windows(train_ids)))

    def train_config(self, train_ids: int) -> TrainConfig:
        """The training config for a text of ``train_ids`` ids."""
        options = dict(self.train)
        if self.epochs is not None and not self.resumed:
            options["max_steps"] = self.epoch_steps(self.epochs, train_ids)
        return TrainConfig(**options)

    def budget_extension(self, config: TrainConfig, train_ids: int) -> tuple[int, float]:
        """(steps, minutes) a resume adds to the budget of ``config`` (the run's own, with the
        options given now): from --extend-*, or from totals given again, which may not lower
        the budget nor change its kind. Refuses what would silently change or not use it."""
        steps = self.extend_steps or 0
        if self.extend_epochs:
            steps += self.epoch_steps(self.extend_epochs, train_ids)
        minutes = self.extend_minutes or 0.0
        named = describe_budget(config)
        total_steps = []  # (the option as given, the step total it asks for)
        if "max_steps" in self.totals:
            total_steps.append((f"--max-steps {self.totals['max_steps']}", self.totals["max_steps"]))
        if self.epochs is not None:
            epoch_steps = self.epoch_steps(self.epochs, train_ids)
            total_steps.append((f"--epochs {self.epochs:g} ({epoch_steps} steps)", epoch_steps))
        for label, total in total_steps:
            steps = _steps_to_total(label, total, config, steps, named)
        if "minutes" in self.totals:
            minutes = _minutes_to_total(self.totals["minutes"], config, minutes, named)
        if steps and config.max_steps is None:
            raise ConfigError(f"this run's budget is {named}, not steps: extend it with --extend-minutes M")
        if minutes and config.minutes is None:
            raise ConfigError(f"this run's budget is {named}, not minutes: extend it with --extend-steps N")
        return steps, minutes


def _steps_to_total(label: str, total: int, config: TrainConfig, steps: int, named: str) -> int:
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
    return total - config.max_steps


def _minutes_to_total(total: float, config: TrainConfig, minutes: float, named: str) -> float:
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
    return total - config.minutes


def describe_budget(config: TrainConfig) -> str:
    """A budget in words: "400 steps", "10 min" or "400 steps + 10 min"."""
    parts = [f"{config.max_steps} steps" if config.max_steps else "", f"{config.minutes:g} min" if config.minutes else ""]
    return " + ".join(part for part in parts if part)


# -- checks of the request alone ---------------------------------------------------------


def check_request(request: RunRequest) -> None:
    """Refuse what the request alone shows to be wrong, before any file is read."""
    _check_numbers(request)
    if request.preset is not None and request.resume is not None:
        # A preset sizes a new model; a resumed run keeps the model its checkpoint holds.
        raise ConfigError("--preset sizes a new model: a resumed run keeps its own model (drop --preset, or start a new run)")
    if request.extend_vocab and request.resume is None:
        raise ConfigError("--extend-vocab fine-tunes a trained model: it needs --resume RUN")
    for option, value in _extensions(request):
        if request.resume is None:
            raise ConfigError(f"{option} adds to the budget of a run being resumed: it needs --resume RUN")
        check_ranges("budget", {option.removeprefix("--").replace("-", "_"): value})


def _check_numbers(request: RunRequest) -> None:
    """Refuse what no later check catches before the run directory exists: NaN and infinity
    (NaN fails no comparison, so ranges let it through; infinity passes open ranges and cannot
    be written to config.toml), integers past 64 bits, seeds the random generators cannot
    take, and an empty encoding (which would silently mean the default)."""
    numbers = {
        **{option_name(k): v for k, v in {**request.model, **request.train}.items()},
        "--val-frac": request.val_frac,
        "--epochs": request.epochs,
        "--vocab-size": request.vocab_size,
        **dict(_extensions(request)),
    }
    for option, value in numbers.items():
        check_finite(option, value)
        if isinstance(value, int) and value > MAX_INTEGER:
            # Checkpoints and config.toml hold 64-bit integers; a bigger count is a typo.
            raise ConfigError(f"{option} must be at most {MAX_INTEGER} (2**63 - 1), not {value}")
    if request.train.get("seed") is not None:
        check_seed(request.train["seed"])
    if request.encoding is not None and not request.encoding.strip():
        raise ConfigError("--encoding must not be empty: name a text encoding such as utf-8")


def _extensions(request: RunRequest) -> list[tuple[str, float]]:
    given = [
        ("--extend-steps", request.extend_steps),
        ("--extend-epochs", request.extend_epochs),
        ("--extend-minutes", request.extend_minutes),
    ]
    return [(option, value) for option, value in given if value is not None]


# -- the resolver ------------------------------------------------------------------------


def resolve_plan(request: RunRequest, saved: SavedRun | None, device_type: str, world_size: int = 1) -> RunPlan:
    """The plan of the run ``request`` asks for (``check_request`` has passed it), resuming
    ``saved`` if given, on a device of ``device_type`` ("cpu" or "cuda") in ``world_size``
    processes. Raises ``ConfigError`` for options that contradict each other or the run."""
    corpus = _corpus_plan(request, saved)
    preset, preset_options = resolve_preset(request.preset, device_type)
    model = _model_options(request, saved, preset_options)
    train, totals, lr_auto = _train_options(request, saved, preset, device_type)
    return RunPlan(
        corpus=corpus,
        preset=preset,
        model=model,
        train=train,
        world_size=world_size,
        resumed=saved is not None,
        epochs=request.epochs,
        totals=totals,
        extend_steps=request.extend_steps,
        extend_epochs=request.extend_epochs,
        extend_minutes=request.extend_minutes,
        resume=request.resume,
        lr_auto=lr_auto,
        dropout_by_budget=saved is None and request.model.get("dropout") is None and preset in DEFAULTS["budget_fit"]["presets"],
    )


def _corpus_plan(request: RunRequest, saved: SavedRun | None) -> CorpusPlan:
    recorded = saved.corpus if saved is not None else CorpusOptions(train_files=[])
    defaults = DEFAULTS["corpus"]
    val_frac = request.val_frac if request.val_frac is not None else (
        recorded.val_frac if saved is not None else defaults["val_frac"]
    )
    check_ranges("corpus", {"val_frac": val_frac, "vocab_size": request.vocab_size})
    plan = CorpusPlan(
        train_specs=list(request.sources or recorded.train_files),
        val_specs=list(request.val_sources or ([] if request.sources else recorded.val_files)),
        encoding=request.encoding or (recorded.encoding if saved is not None else defaults["encoding"]),
        val_frac=val_frac,
        tokenizer=_tokenizer(request.tokenizer, saved),
        vocab_size=request.vocab_size,
        extend_vocab=request.extend_vocab,
        items_delimiter=_items_delimiter(request, recorded.items_delimiter if saved is not None else None),
    )
    _check_vocab_options(plan, saved)
    if plan.items_delimiter is not None and plan.tokenizer != "chars":
        raise ConfigError(f"--items reads a list of characters: it needs --tokenizer chars, not {plan.tokenizer}")
    if plan.items_delimiter is not None and (request.epochs is not None or request.extend_epochs is not None):
        raise ConfigError("--epochs counts passes in windows of a stream; with --items give --max-steps or --minutes")
    if plan.items_delimiter is not None and saved is None and is_lr_auto(request.train.get("lr")):
        raise ConfigError("--lr auto tests rates on windows of a stream; with --items give --lr a number")
    return plan


def _items_delimiter(request: RunRequest, recorded: str | None) -> str | None:
    """The delimiter of a list of items (--items: a newline), or None for a stream; a resumed
    run keeps what it was trained as."""
    given = request.items_delimiter if request.items_delimiter is not None else (
        DEFAULTS["items"]["items_delimiter"] if request.items else None
    )
    if given is not None:
        require_valid(given, "--items-delimiter")
    if given is not None and len(given) != 1:
        raise ConfigError(f"--items-delimiter must be one character, not {given!r}: it ends every item the model makes")
    if recorded is not None and given is not None and given != recorded:
        raise ConfigError(f"--items-delimiter {given!r} differs from the run's {recorded!r}; a resumed run keeps its delimiter")
    return recorded if recorded is not None else given


def _tokenizer(requested: str | None, saved: SavedRun | None) -> str:
    recorded = saved.vocab.kind if saved is not None else None
    if requested is not None and requested not in KINDS:
        raise ConfigError(f"--tokenizer must be one of {', '.join(KINDS)}")
    if recorded is not None and requested is not None and requested != recorded:
        raise ConfigError(f"--tokenizer {requested} differs from the checkpoint's {recorded}; a resumed model keeps its tokenizer")
    return recorded or requested or DEFAULTS["corpus"]["tokenizer"]


def _check_vocab_options(plan: CorpusPlan, saved: SavedRun | None) -> None:
    if plan.tokenizer == "chars":
        if plan.vocab_size is not None:
            raise ConfigError(
                "--vocab-size applies to --tokenizer bpe only; the chars tokenizer's vocabulary "
                "is every character of the text"
            )
        return
    if saved is not None and plan.vocab_size is not None and plan.vocab_size != len(saved.vocab):
        raise ConfigError("--vocab-size differs from the checkpoint's; a resumed model keeps its tokenizer")


def _model_options(request: RunRequest, saved: SavedRun | None, preset_options: dict) -> dict:
    options = dict(preset_options)
    options["cell"] = DEFAULTS["model"]["cell"]
    if saved is not None:
        recorded = saved.model_config.to_dict()
        options.update({k: recorded[k] for k in MODEL_KEYS})
        for key in ARCHITECTURE_KEYS:
            given = request.model.get(key)
            if given is not None and given != recorded[key]:
                raise ConfigError(
                    f"--{key} {given} differs from the checkpoint's {recorded[key]}; "
                    "a resumed model keeps its architecture"
                )
    options.update({k: v for k, v in request.model.items() if v is not None})
    check_ranges("model", options)  # now, where ModelConfig would only see them once the text is read
    return options


def _train_options(
    request: RunRequest, saved: SavedRun | None, preset: str, device_type: str
) -> tuple[dict, dict, bool]:
    """The TrainConfig options, (resuming) the budget totals given again, and whether a range
    test is to choose the rate (--lr auto in a new run)."""
    given = {k: v for k, v in request.train.items() if v is not None}
    lr_auto = is_lr_auto(given.get("lr"))
    if lr_auto:
        del given["lr"]
        if saved is not None and not saved.trainer_state.get("lr_range"):
            raise ConfigError(
                f"--lr auto chooses a new run's rate with a range test at its start; this run "
                f"trains at --lr {saved.train_config.lr:g}: resume it with that, or give another --lr"
            )
        # A resumed --lr auto run keeps the rate its test chose: it is in the checkpoint.
        lr_auto = saved is None
    check_ranges("budget", {"epochs": request.epochs})
    if saved is not None:
        # A resumed run keeps its budget: totals given again are checked against it once the
        # text's length is known (``RunPlan.budget_extension``).
        totals = {k: given.pop(k) for k in BUDGET_KEYS if k in given}
        options = {**saved.train_config.to_dict(), **given}
    else:
        totals = {}
        batch_size = DEFAULTS["gpu" if device_type == "cuda" else "train"]["batch_size"]
        options = {**DEFAULTS["train"], "batch_size": batch_size, **preset_training(preset), **given}
        if request.epochs is not None:
            options["max_steps"] = None  # passes over the text decide it (``RunPlan.train_config``)
        elif options["max_steps"] is None and options["minutes"] is None:
            options["minutes"] = DEFAULTS["budget"]["minutes"]
    TrainConfig(**options)  # refuses bad values now, before any text is read
    return options, totals, lr_auto
