"""The choices a user makes by name, as str Enums that the command line offers and the library
checks; the model's and the trainer's configs; and ``DEFAULTS``, the one table of every option's
default. Nothing here imports torch or numpy: ``charrnn --help`` and shell completion read these
and must start at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from charrnn.cells import CELLS
from charrnn.errors import ConfigError
from charrnn.ranges import RANGES, check_ranges


LR_AUTO = "auto"  # --lr auto: a range test at the start of a new run chooses the rate


def parse_lr(value) -> float | str:
    """``--lr`` as given (on the command line, in a TOML file or a run's config.toml): a
    number, or ``auto``. The one place that knows what "auto" is spelled as."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.lower() == LR_AUTO:
        return LR_AUTO
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--lr must be a number or {LR_AUTO}, not {text!r}") from None


def is_lr_auto(value) -> bool:
    """Whether a parsed ``--lr`` asks for the range test."""
    return value == LR_AUTO


def check_seed(seed) -> None:
    if not isinstance(seed, int):
        raise ConfigError(f"--seed must be a whole number, not {seed!r}")
    RANGES["train"]["seed"].check("--seed", seed)


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"  # fp16 autocast on CUDA, fp32 on a CPU (bf16 there only when asked for)
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class ServePrecision(str, Enum):
    """serve's choices: the server steps its streams on the CPU."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


# --cell's choices: the registry's cell types.
Cell = Enum("Cell", [(name, name) for name in CELLS], type=str)


class Schedule(str, Enum):
    cosine = "cosine"  # warmup, then cosine decay to min_lr over the step or time budget
    plateau = "plateau"  # warmup, then halve the rate whenever validation stops improving
    constant = "constant"


class SamplingEngine(str, Enum):
    auto = "auto"  # fast on CPU; the model's own fused layers (cuDNN) on GPU
    fast = "fast"
    eager = "eager"


class TokenizerKind(str, Enum):
    chars = "chars"  # one token per character of the corpus (the default)
    bytes = "bytes"  # UTF-8 bytes: 256 tokens, any text
    bpe = "bpe"  # byte-level BPE trained on the corpus
    word = "word"  # words, whitespace and punctuation as tokens, the --vocab-size most frequent


class ExportFormatName(str, Enum):
    pt2 = "pt2"  # torch.export (the default)
    onnx = "onnx"
    c = "c"
    torchscript = "torchscript"  # retired: refused by charrnn.export.formats.check_request


class Quantization(str, Enum):
    int8 = "int8"
    float16 = "float16"


class Preset(str, Enum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    large = "large"


# -- the defaults ------------------------------------------------------------------------
# Every default of every option, in one table: the run's resolver (charrnn.training.plan)
# applies it, ModelConfig, TrainConfig and SampleConfig take their field defaults from it, and
# `--help` states it, so no two of them can disagree. Keys are the options' names with
# underscores. A value that depends on the device is in the "gpu" section (what changes on a
# CUDA device); one that depends on the preset is in PRESETS or PRESET_TRAINING.

# Named model sizes; any model option given explicitly wins.
PRESETS: dict[str, dict] = {
    # ~0.1M parameters: fast sampling, embedded use, smoke tests.
    "tiny": {"layers": 1, "hidden": 128, "embed": 32, "dropout": 0.0},
    # ~0.9M parameters: the default; fits a few minutes of CPU on a 1 MB corpus. Its dropout
    # is the budget's (DEFAULTS["budget_fit"]); this 0 is its floor, and ModelConfig's default.
    # At about 8 passes (a 6-minute run on tiny shakespeare, an older CPU) 0.1 gained per step
    # (1.492 against 1.506 nats/char at 7,750 steps) but cost 11% of the speed, and weight
    # decay (below) did better for free; at 10 passes and more dropout 0.2 did better.
    "small": {"layers": 2, "hidden": 256, "embed": 64, "dropout": 0.0},
    # ~3.3M parameters: tens of minutes of CPU, or a GPU.
    "medium": {"layers": 2, "hidden": 512, "embed": 128, "dropout": 0.2},
    # ~5.4M parameters: a GPU, or an hour-plus of CPU on a multi-MB corpus.
    "large": {"layers": 3, "hidden": 512, "embed": 128, "dropout": 0.25},
}

# Training defaults per preset (an explicit option wins).
# lr: small models take large steps: for `small` on tiny shakespeare (16x64 windows, 6000
#   steps) 3e-3, 5e-3 and 8e-3 reached 1.515, 1.509 and 1.498 nats/char. `medium` ran its PTB
#   hour at 5e-3; `large` keeps the cautious 3e-3.
#   On the corpus suite (docs/defaults.md: verse, news text, Python, 2,848 characters of
#   translation catalogues, Russian prose), 600 steps, with the decoder bias starting at the
#   text's log-frequencies, 8e-3 was the best of 2e-3, 4e-3, 8e-3 and 1.6e-2 or within 0.022
#   bpc of it on every corpus.
# weight_decay: the regulariser that pays for itself in a short run on a small corpus. For
#   `small` on tiny shakespeare at 7,750 steps (what 6 minutes hold), AdamW's decay 0.01,
#   0.05, 0.1, 0.15 and 0.3 reached 1.506, 1.456, 1.466, 1.479 and ~1.52 nats/char; dropout
#   0.1 reached 1.492 and costs 11% of the speed (torch's CPU dropout masks). `medium` and
#   `large` keep 0.01, with which the PTB figures were measured.
PRESET_TRAINING: dict[str, dict] = {
    "tiny": {"lr": 8e-3, "weight_decay": 0.05},
    "small": {"lr": 8e-3, "weight_decay": 0.05},
    "medium": {"lr": 5e-3, "weight_decay": 0.01},
    "large": {"lr": 3e-3, "weight_decay": 0.01},
}

DEFAULT_PRESET = "small"

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"preset": DEFAULT_PRESET, "cell": "lstm", **PRESETS[DEFAULT_PRESET]},
    "corpus": {
        "tokenizer": "chars",
        "encoding": "utf-8",
        "val_frac": 0.1,
    },
    # `train --items`: off, the text is one stream. A list's items are most often one a line
    # (names, titles, words), so the newline is the delimiter unless one is given.
    "items": {"items": False, "items_delimiter": "\n"},
    "train": {
        # Measured on tiny shakespeare on 2 cores: 32x64 windows ran no slower per character
        # than 64x128 and made 4.6x the updates (6 minutes: 3001 vs 655 steps; val 1.577 vs
        # 1.771 nats/char); 16x64 runs ~10% slower per character than 32x64 but, over the same
        # 6.1M characters, reached 1.515 against 1.560 nats/char (docs/results.md, "How the
        # defaults were chosen").
        "batch_size": 16,
        "seq_len": 64,
        **PRESET_TRAINING[DEFAULT_PRESET],  # lr, weight_decay
        "min_lr_frac": 0.1,
        "warmup_steps": 20,
        "schedule": "cosine",
        "grad_clip": 1.0,
        "max_steps": None,
        "minutes": None,
        # A full evaluation of tiny shakespeare's validation text costs ~30 training steps of 16x64.
        "eval_every": 500,
        "eval_chars": None,  # all of the validation text
        "checkpoint_every": None,  # at every evaluation
        "patience": 0,  # evaluations without improvement before stopping; 0 = never stop early
        "seed": 1337,
        "precision": "auto",
        # CPU training is reproducible as it is; this also forces deterministic CUDA kernels.
        "deterministic": False,
    },
    # `--lr auto`: the range test at the start of a new run (charrnn.training.lr_range).
    "lr_auto": {
        "steps": 130,  # one step per rate
        "low": 1e-4,
        "high": 1.0,
        # The chosen rate is the rate of the lowest smoothed loss divided by this. For the small
        # preset that rate was 0.12-0.17 on each corpus of the suite (docs/defaults.md), whose
        # best rates at 3 minutes were 4e-3 to 8e-3: a tenth (fastai's rule) lands above them.
        "fraction": 20.0,
        "beta": 0.9,  # smoothing of the loss (an exponential moving average)
        # Stop once the smoothed loss is this many times its lowest: past its lowest point it
        # rises steadily (tiny shakespeare, small: 2.10 nats at 0.06, 2.5 at 0.26, 3.1 at 0.5).
        "stop_above": 1.3,
    },
    # The budget of a new run given no --max-steps, --minutes or --epochs.
    "budget": {"minutes": 10.0},
    # A new run of these presets given no --dropout takes its dropout from the passes over the
    # training text that its budget will hold (charrnn.training.budget_fit): none up to
    # free_passes, then per_pass more for each pass, up to most. Measured on tiny shakespeare
    # (small, weight decay 0.05, 2-core Xeon, docs/performance.md "Learning per minute"): at
    # 10-13 passes (6 minutes) dropout 0.2 ended 0.04-0.06 nats/char below none, at 16-21
    # passes (10 minutes) it reached 1.397-1.404 where none ended at 1.478; at about 8 passes
    # none did as well as 0.1 (docs/defaults.md).
    "budget_fit": {
        "presets": ["small"],
        "free_passes": 6.0,
        "per_pass": 0.05,
        "most": 0.2,
        # The probe of the training step that a time budget plans by: one warm-up step, then
        # the fastest of `repeats` rounds of `steps` steps (a fixed count, so that every
        # process of a torchrun run takes part in the same number of steps).
        "probe_steps": 2,
        "probe_repeats": 3,
    },
    "run": {"eval_sample_chars": 200},
    "gpu": {
        # What `charrnn train` builds on a GPU when no --preset is given. A step of a 2x512
        # model costs about what a 2x256 one does there (cuDNN's time per step is launch-bound,
        # 11-13 ms on an H100 at batch 128-1024), so the larger model is free; and at ~1M
        # chars/s a 1 MB corpus is seen 100+ times in 2 minutes, so it needs more dropout than
        # `medium` carries for PTB on a CPU. Tiny shakespeare, 2 minutes on an H100 (four runs
        # sharing the GPU, batch 256): small 1.546 (alone), medium 1.487, medium with dropout
        # 0.4 1.459.
        "preset": "medium",
        "dropout": 0.4,
        # A step of 2x512 costs 11-13 ms from batch 128 to 1024 (H100, launch-bound), so a
        # batch 8x the CPU's is free. Not larger by default: on a 1 MB corpus a 2-minute run
        # already makes 100+ passes. Tiny shakespeare, medium, dropout 0.4 logged batch 128
        # 1.447, 256 1.459, 512 1.468 nats/char, but with zero-state evaluation rows, which
        # cost larger batches more; less that cost the three are level (~1.433-1.438,
        # docs/results.md, GPU). Raise it for large corpora.
        "batch_size": 128,
    },
    "sample": {
        "length": 1000,  # characters generated after the prime
        # Below 1: the most likely characters gain, so samples read better than the model's
        # raw distribution (1.0) while keeping variety.
        "temperature": 0.8,
        "top_k": 0,  # off
        "top_p": 1.0,  # off
        "min_p": 0.0,  # off
        "repetition_penalty": 1.0,  # off
        "repetition_window": 64,
        "num_samples": 1,
        "beam": 0,  # sample, not beam search
        "engine": "auto",
        # fp32, or bf16 on a CPU with native bf16 where a probe of this model's step at this
        # batch runs it clearly faster: timed only on the fast stepper at 16 samples or more,
        # where bf16 can gain (charrnn.generation.stepper.choose_precision).
        "precision": "auto",
        "unknown": "error",
        # Common words and short phrases recur in any text; runs this long rarely do by chance.
        "copy_min_run": 20,
        "items": 0,  # off: sample text, not items of a list
        # None: on for a run trained with --items (its users want items not in their list),
        # meaningless otherwise.
        "novel": None,
    },
    "eval": {"unknown": "error", "precision": "auto"},
    # `eval --dynamic` and `sample --adapt`: dynamic evaluation (Krause et al. 2018,
    # charrnn.model.dynamic). The update is theta -= lr * g / (RMS + epsilon) plus
    # decay * RMS_norm * (theta_0 - theta), RMS from the training text.
    "dynamic": {
        # Step size and decay: the choice that lost least, against each model's own best, on
        # the first 30,000 characters of the validation text of three models: tiny
        # shakespeare's 10-minute default model (a 4x4 grid, lr 1e-4 to 3e-3, decay 0.003 to
        # 0.1, and three more points; its best lr 3e-4, decay 0.01), PTB-char's 20-minute
        # `small` and its hour's `medium` (best 3e-4/0.03 and 2e-4/0.03). lr 3e-4 with decay
        # 0.03 came within 0.0042 bpc of each best; decay 0.01 lost 0.0137 on the `medium`
        # model, and from lr 1e-3 up (5e-4 for `medium`) the updates overshoot. The paper's
        # code searches lr 3e-5 to 1e-4 and decay 1e-3 to 5e-3 times segment length / 5, which
        # at 50 is the same range. docs/results.md, "Dynamic evaluation".
        "lr": 3e-4,
        "decay": 0.03,
        # Characters per segment: scored, then one update from its gradient.
        "seq": 50,
        # Rows read side by side, each segment's update from their mean gradient. 1 is the
        # paper's reading (one stream, an update every seq characters) and the strongest
        # score; more rows share each read of the weights, cheaper on a CPU for a smaller gain
        # (docs/results.md, "Dynamic evaluation", "Several rows").
        "rows": 1,
        # With several rows, the text is read in blocks of rows x row_chars characters, each cut
        # into the rows: rows near one another learn from the same stretch of text. On
        # PTB-char's validation text, 16 rows of the hour's `medium` model scored 1.3468 bpc in
        # rows of 200 characters, 1.3439 of 500, 1.3442 of 1,000, 1.3459 of 2,000, 1.3481 of
        # 4,000 and 1.3512 cut once over the whole text (static 1.3843).
        "row_chars": 1000,
        # The paper's stabiliser, in units of the RMS gradient (its code's default).
        "epsilon": 2e-5,
        # Gradient statistics: the first this many characters of the run's training text,
        # read in stats_batch rows of --dynamic-seq windows (the paper used all of it). The
        # 10-minute tiny shakespeare model on 30,000 validation characters scored 1.8057 bpc
        # with 65,536 (4.14 s of CPU for the statistics), 1.8053 with 16,384 (1.09 s) and
        # 1.8074 with 4,096 (0.29 s): a quarter of the start-up for the same figure.
        "stats_chars": 16384,
        "stats_batch": 16,
    },
    # pt2: it needs nothing beyond torch (ONNX needs the optional charrnn[export] packages).
    "export": {"format": "pt2", "quantize": None},
    # `charrnn bench --export`: validation characters stepped one at a time per format.
    "bench_export": {"chars": 5000},
    # `charrnn gradients`: a window of 100 steps is where the cells part ways (a plain RNN's
    # gradient is gone by 50 steps back, an LSTM's with forget bias 1 still there).
    "gradients": {"steps": 100, "seed": 0},
    # `charrnn inspect`: 5000 characters give every unit a few thousand steps to be counted on
    # and replay in about a second on a CPU.
    "inspect": {"chars": 5000, "state": "h", "top": 10},
    # `charrnn explore` (and /explore of `charrnn serve`): 20,000 characters of a 2x256 LSTM
    # are analysed in about a second on a CPU (states and gates: 12 KB a character, 250 MB),
    # and a reply of about 3 MB of JSON is still drawn at once by a browser. Port 0: a free one.
    "explore": {"max_chars": 20_000, "port": 0},
    "serve": {
        # Loopback only: a model reachable from the network must be asked for (--host) and
        # then needs an API key.
        "host": "127.0.0.1",
        "port": 8000,
        # Streams advanced together in one batched step. One thread's step of a 2x256 LSTM
        # took 0.13 ms for 1 row, 0.60 ms for 32 and 0.97 ms for 64 (2-core machine), so 64
        # rows still cost a seventh of a row each; past that a step delays every stream more.
        "max_streams": 64,
        "max_queue": 64,  # streams waiting for a slot; past this a request gets 503
        "max_tokens": 256,  # a request's max_tokens (num_predict) when it gives none
        "max_tokens_limit": 8192,  # the most a request may ask for
        "max_prompt": 8192,  # characters; a prompt runs through the model before the first character
        "max_body": 1 << 20,  # bytes of request body
        "max_n": 16,  # completions per request
        "grace": 10.0,  # seconds running streams get to finish after SIGTERM or Ctrl-C
        # One thread steps the model; the event loop that serves HTTP keeps the other core.
        "threads": 1,
        # As sample's, probed at max_streams rows: the load the server is sized for.
        "precision": "auto",
    },
}

CPU_BATCH_SIZE = DEFAULTS["train"]["batch_size"]
GPU_BATCH_SIZE = DEFAULTS["gpu"]["batch_size"]
GPU_DEFAULT_PRESET = DEFAULTS["gpu"]["preset"]
GPU_DEFAULT_OVERRIDES: dict = {"dropout": DEFAULTS["gpu"]["dropout"]}


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = DEFAULTS["model"]["cell"]
    layers: int = DEFAULTS["model"]["layers"]
    hidden: int = DEFAULTS["model"]["hidden"]
    embed: int = DEFAULTS["model"]["embed"]
    dropout: float = DEFAULTS["model"]["dropout"]

    def __post_init__(self) -> None:
        self.cell = Cell(self.cell).value
        if self.vocab_size < 1:
            raise ConfigError("the vocabulary is empty")
        check_ranges("model", asdict(self))

    def to_dict(self) -> dict:
        return asdict(self)

    def num_parameters(self) -> int:
        """``CharRNN(self).num_parameters()`` without allocating the model: a size to check
        against the memory there is before asking for it."""
        gates = CELLS[self.cell].weight_blocks * self.hidden
        rnn = sum(gates * (width + self.hidden) + 2 * gates for width in [self.embed] + [self.hidden] * (self.layers - 1))
        return self.vocab_size * self.embed + rnn + (self.hidden + 1) * self.vocab_size

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_TRAIN = DEFAULTS["train"]


@dataclass
class TrainConfig:
    batch_size: int = _TRAIN["batch_size"]
    seq_len: int = _TRAIN["seq_len"]
    lr: float = _TRAIN["lr"]
    min_lr_frac: float = _TRAIN["min_lr_frac"]
    warmup_steps: int = _TRAIN["warmup_steps"]
    schedule: str = _TRAIN["schedule"]
    weight_decay: float = _TRAIN["weight_decay"]
    grad_clip: float = _TRAIN["grad_clip"]
    max_steps: int | None = _TRAIN["max_steps"]
    minutes: float | None = _TRAIN["minutes"]
    eval_every: int = _TRAIN["eval_every"]
    eval_chars: int | None = _TRAIN["eval_chars"]
    checkpoint_every: int | None = _TRAIN["checkpoint_every"]
    patience: int = _TRAIN["patience"]
    seed: int = _TRAIN["seed"]
    precision: str = _TRAIN["precision"]
    deterministic: bool = _TRAIN["deterministic"]

    def __post_init__(self) -> None:
        self.schedule = Schedule(self.schedule).value
        # Not the seed: runs saved before seeds were checked may hold -1 and still resume; a
        # --seed given now is checked with the request (charrnn.training.plan).
        check_ranges("train", {name: value for name, value in asdict(self).items() if name != "seed"})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

