"""``RANGES``: the values every numeric option allows, in one table beside ``DEFAULTS``.

Each range is written once here and checked once. The options a config holds (the model's,
training's, the corpus split's, sampling's and the server's) are checked by that config, which
is where values from every edge meet: the command line, ``--config FILE.toml``, a resumed
checkpoint and the server's API; for those the command line only shows the range in
``--help``. The options no config holds (thread counts, the plot's size, what inspection reads)
are checked by the command line, from the same table. Torch-free, like ``options``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charrnn.errors import ConfigError

# The largest seed: torch's generators take a signed 64-bit integer (2**64 and more overflow
# there), and negative seeds would be a second spelling of large ones.
MAX_SEED = 2**63 - 1
# AdamW divides the rate by its bias correction and applies it in float32: anything bigger
# overflows there (an internal error) instead of merely diverging.
MAX_LR = 1e30


def check_finite(option: str, value) -> None:
    """NaN fails every comparison and infinity passes open ranges: refuse both by name,
    before any range check reads the value."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, not {value}")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Range:
    """``low <= x <= high`` (either end may be absent, or open: ``low < x``, ``x < high``);
    ``note`` says what a value at an edge means ("0 turns it off")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""
    # Said side by side ("positive", "at most 1e+30") rather than as an interval: for ranges
    # whose upper end is a limit of the arithmetic, not of the option's meaning.
    sides: bool = False

    def _above_low(self, value: float) -> bool:
        return self.low is None or (value > self.low if self.low_open else value >= self.low)

    def _below_high(self, value: float) -> bool:
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def admits(self, value: float) -> bool:
        return self._above_low(value) and self._below_high(value)

    def words(self, value: float | None = None) -> str:
        """The range as a message says it: "at least 1", "positive", "in [0, 1)"; for a
        range said by sides, the side ``value`` is past (both without one)."""
        low, high = self.low, self.high
        if low is not None and high is not None and not self.sides:
            return f"in {'(' if self.low_open else '['}{_number(low)}, {_number(high)}{')' if self.high_open else ']'}"
        below = "" if low is None else ("positive" if low == 0 else f"above {_number(low)}") if self.low_open else f"at least {_number(low)}"
        above = "" if high is None else f"below {_number(high)}" if self.high_open else f"at most {_number(high)}"
        if value is not None and below and above:
            return below if not self._above_low(value) else above
        return ", ".join(part for part in (below, above) if part)

    def shown(self) -> str | None:
        """The range as ``--help`` shows it beside the value ("x>=1", "0<=x<1"), or None for an
        open lower end: "x>0" reads as a slip for "x>=0", so those options say it in words."""
        if self.low_open:
            return None
        below = "<" if self.high_open else "<="
        if self.high is None:
            return f"x>={_number(self.low)}"
        if self.low is None:
            return f"x{below}{_number(self.high)}"
        return f"{_number(self.low)}<=x{below}{_number(self.high)}"

    def check(self, option: str, value) -> None:
        """Refuse ``value`` for ``option`` in one line (None, an option not given, passes)."""
        if value is None or isinstance(value, bool):
            return
        check_finite(option, value)
        if not self.admits(value):
            note = f" ({self.note})" if self.note else ""
            raise ConfigError(f"{option} must be {self.words(value)}{note}, not {_number(value)}")


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)

# By section, as in DEFAULTS; keys are the options' names with underscores.
RANGES: dict[str, dict[str, Range]] = {
    "model": {"layers": AT_LEAST_1, "hidden": AT_LEAST_1, "embed": AT_LEAST_1, "dropout": Range(0, 1, high_open=True)},
    "corpus": {
        "val_frac": Range(0, 1, high_open=True),
        "vocab_size": Range(256, note="bpe: 256 byte tokens, then merges"),
    },
    "train": {
        "batch_size": AT_LEAST_1,
        "seq_len": AT_LEAST_1,
        "lr": Range(0, MAX_LR, low_open=True, sides=True),
        "min_lr_frac": Range(0, 1),
        "warmup_steps": NOT_NEGATIVE,
        "weight_decay": NOT_NEGATIVE,
        "grad_clip": Range(0, note="0 turns clipping off"),
        "max_steps": AT_LEAST_1,
        "minutes": POSITIVE,
        "eval_every": AT_LEAST_1,
        "eval_chars": Range(2),
        "checkpoint_every": AT_LEAST_1,
        "patience": Range(0, note="0 never stops early"),
        "seed": Range(0, MAX_SEED, note="2**63 - 1"),
    },
    # Budgets in passes and what a resume adds; RunPlan turns them into steps and minutes.
    "budget": {"epochs": POSITIVE, "extend_steps": AT_LEAST_1, "extend_epochs": POSITIVE, "extend_minutes": POSITIVE},
    "sample": {
        "length": AT_LEAST_1,
        "temperature": Range(0, note="0 means greedy"),
        "top_k": Range(0, note="0 turns it off"),
        "top_p": Range(0, 1, low_open=True),
        "min_p": Range(0, 1, note="0 turns it off"),
        "repetition_penalty": Range(0, low_open=True, note="1 turns it off"),
        "repetition_window": AT_LEAST_1,
        "num_samples": AT_LEAST_1,
        "seed": Range(0, MAX_SEED, note="2**63 - 1"),
        "beam": Range(0, note="0 samples"),
        "copy_min_run": AT_LEAST_1,
        "items": Range(0, note="0 is off"),
    },
    "serve": {
        "port": Range(0, 65535, note="0 picks a free port"),
        "max_streams": AT_LEAST_1,
        "max_queue": NOT_NEGATIVE,
        "max_tokens": AT_LEAST_1,
        "max_tokens_limit": AT_LEAST_1,
        "max_prompt": AT_LEAST_1,
        "max_body": Range(1024, note="bytes"),
        "max_n": AT_LEAST_1,
        "grace": NOT_NEGATIVE,
        "threads": AT_LEAST_1,
    },
    # `eval --dynamic` and `sample --adapt`: DynamicConfig (charrnn.model.dynamic) checks them.
    "dynamic": {
        "lr": Range(0, note="0 leaves the weights as trained"),
        "decay": Range(0, 1, note="0 never pulls the weights back"),
        "seq": AT_LEAST_1,
        "rows": AT_LEAST_1,
        "row_chars": AT_LEAST_1,
    },
    # Options no config holds: the command line checks these.
    "run": {"eval_sample_chars": Range(0, note="0 writes none")},
    "threads": {"threads": AT_LEAST_1},
    "inspect": {"chars": AT_LEAST_1, "top": AT_LEAST_1},
    "explore": {"max_chars": AT_LEAST_1},
    "gradients": {"steps": AT_LEAST_1, "seed": NOT_NEGATIVE},
    "plot": {"width": Range(20, 400), "height": Range(5, 200)},
    "bench": {"batch_size": AT_LEAST_1, "seq_len": AT_LEAST_1, "corpus_mb": AT_LEAST_1},
    "bench_export": {"chars": Range(2)},
}


def option_name(field: str) -> str:
    """The command-line spelling of a config field: ``min_lr_frac`` -> ``--min-lr-frac``."""
    return "--" + field.replace("_", "-")


def check_ranges(section: str, values: dict, prefix: str = "") -> None:
    """Refuse the first value of ``values`` (by field name) outside its range in ``section``;
    the message names the option ``prefix + name`` (``prefix="dynamic_"``: --dynamic-lr)."""
    ranges = RANGES[section]
    for name, value in values.items():
        if name in ranges:
            ranges[name].check(option_name(prefix + name), value)
