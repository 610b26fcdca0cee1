"""The start-up benchmark (``charrnn bench --startup``): how long ``--help`` and tab completion
take, against the interpreter starting and doing nothing (``python -c pass``), in the same run.

Each command runs as a fresh process (``python -m charrnn ...``), as a shell runs it; the
commands are measured in turn, round after round, so that a moment of load on the machine falls
on all of them alike. A figure is the median of the rounds, beside the best.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

# What a user waits for before --help answers: the issue a start-up target is set against.
TARGET_SECONDS = 0.3
REFERENCE = "python -c pass"


@dataclass
class StartupResult:
    rounds: int = 0
    target_s: float = TARGET_SECONDS
    rows: list[dict] = field(default_factory=list)  # what, median_s, best_s, times_reference

    def to_dict(self) -> dict:
        return asdict(self)


def _completion_env(words: str) -> dict:
    """The environment bash's completion function gives the program for ``words``."""
    return {
        **os.environ,
        "_CHARRNN_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }


def _seconds(argv: Sequence[str], env: dict | None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - started


def run_startup(
    commands: Sequence[Sequence[str]],
    completions: Sequence[str],
    rounds: int = 7,
    progress: Callable[[str], None] = lambda message: None,
) -> StartupResult:
    """``commands``: argument lists after ``charrnn`` (each measured with ``--help``);
    ``completions``: command lines as typed before pressing tab."""
    runs: list[tuple[str, list[str], dict | None]] = [(REFERENCE, [sys.executable, "-c", "pass"], None)]
    charrnn = [sys.executable, "-m", "charrnn"]
    runs += [(" ".join(["charrnn", *args, "--help"]), [*charrnn, *args, "--help"], None) for args in commands]
    runs += [(f"complete '{words}'", charrnn, _completion_env(words)) for words in completions]
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for round_number in range(rounds):
        progress(f"start-up round {round_number + 1} of {rounds}")
        for name, argv, env in runs:
            times[name].append(_seconds(argv, env))
    reference = statistics.median(times[REFERENCE])
    result = StartupResult(rounds=rounds)
    for name, measured in times.items():
        median = statistics.median(measured)
        result.rows.append(
            {"what": name, "median_s": median, "best_s": min(measured), "times_reference": median / reference}
        )
    return result
