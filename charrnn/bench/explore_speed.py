"""`charrnn bench --explore RUN`: the explorer's analysis of a text (the reply its page asks
for: every character's bits and top guesses, one unit, the property search and the gates)
beside `charrnn eval` of the same text, in the same process, on one thread.

The text is the first characters of the run's validation text (10,000 by default, the size the
explorer's speed is judged at). Each figure is the best of several repeats after one untimed
pass: the fastest is what the code can do, slower ones met other work on the machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

EXPLORE_CHARS = 10_000
REPEATS = 5


@dataclass
class ExploreFigures:
    run: str
    chars: int
    eval_best_s: float
    eval_median_s: float
    explain_best_s: float
    explain_median_s: float
    bpc_eval: float
    bpc_explain: float

    @property
    def ratio(self) -> float:
        """The analysis's time in units of eval's."""
        return self.explain_best_s / self.eval_best_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def _timed(work: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    result = work()  # untimed: first-call allocations and caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), result


def run_explore_bench(run: Path, chars: int = EXPLORE_CHARS, repeats: int = REPEATS, progress: Callable[[str], None] = lambda message: None) -> ExploreFigures:
    import torch

    from charrnn.cells import CELLS
    from charrnn.bench.export_speed import validation_text
    from charrnn.explore.app import Explorer
    from charrnn.explore.requests import explain_request
    from charrnn.model.evaluation import evaluate
    from charrnn.model.loading import load_model
    from charrnn.threads import set_threads
    from charrnn.units import nats_to_bpc

    set_threads(1)  # as the explorer's worker runs
    model, vocab, saved = load_model(run, "last", "cpu")
    text = validation_text(saved, chars)
    explorer = Explorer(model, vocab, max_chars=max(chars, len(text)))
    c = model.config
    wanted = explain_request({"text": text, "units": [{"layer": c.layers - 1, "unit": 0}], "features": True, "gates": True},
                             explorer.max_chars, c.layers, c.hidden, CELLS[c.cell].has_cell_state)  # fmt: skip
    ids = vocab.encode(text)
    progress(f"{run}: eval of {len(text):,} validation characters")
    eval_best, eval_median, loss = _timed(lambda: evaluate(model, ids, torch.device("cpu")), repeats)
    progress(f"{run}: the explorer's analysis of the same text")
    explain_best, explain_median, answer = _timed(lambda: explorer._explain(wanted), repeats)
    return ExploreFigures(
        run=str(run), chars=len(text), eval_best_s=eval_best, eval_median_s=eval_median,
        explain_best_s=explain_best, explain_median_s=explain_median,
        bpc_eval=nats_to_bpc(loss), bpc_explain=answer["bpc"],
    )  # fmt: skip
