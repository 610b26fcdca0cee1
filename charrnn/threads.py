"""How many CPU threads torch (OpenMP) and numpy's BLAS use: chosen by measured speed unless
the user fixes the count.

Why not simply use every core: torch's OpenMP threads meet at a barrier after each parallel
region (for an LSTM, at every time step) and spin there waiting for each other. When another
process holds one of the cores, a waiting thread spins through its time slice while the thread
it waits for is not running, and a step takes many times longer. On a 2-core machine
(tiny shakespeare, small preset, 16x64 windows) one process trained at 19.3k chars/s with two
threads and 12.6k with one; two processes at once made 3.2k chars/s each with two threads and
12.0k each with one. One thread per process is right on a busy machine and wrong on an idle
one, and a machine changes from one to the other while a run goes on, so the count is
measured, not guessed: ``ThreadGovernor`` watches the speed of the work it paces and now and
then tries a neighbouring count, keeping whichever runs faster.

The thread count does not change a CPU result: training 12 steps with 1, 2 or alternating
threads gave bit-identical weights (oneDNN and MKL split the work, never a reduction), so the
choice stays out of what exact resume compares (``tests/test_threads.py`` checks it).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from charrnn.errors import ConfigError

# Environment variables that fix the count, as for any OpenMP or MKL program.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# OpenBLAS's runtime setters, by the symbol prefix its build uses (numpy's wheels bundle a
# build whose symbols carry a "scipy_" prefix and a "64_" suffix).
_BLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


@dataclass(frozen=True)
class ThreadPolicy:
    """The thread count a command runs with: ``fixed`` by the user, or adaptive up to ``most``."""

    fixed: int | None
    source: str  # "--threads", an environment variable's name, or "adaptive"
    most: int  # the largest count worth trying: the cores this process may use

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def choices(self) -> tuple[int, ...]:
        """Counts the governor may pick, largest first: ``most``, halved down to 1."""
        counts, n = [], self.most
        while n > 1:
            counts.append(n)
            n //= 2
        return tuple(counts) + (1,)

    def describe(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed} ({self.source})"
        if self.most == 1:
            return "1 (one core)"
        return f"adaptive, {' or '.join(map(str, self.choices()))} by measured speed (--threads N fixes it)"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# More threads than cores only queue for them, and past a point each one's stack and OpenMP's
# per-thread buffers make the allocation fail (`--threads 100000`: libgomp's "Out of memory
# allocating 21601344 bytes", OpenBLAS's "Memory allocation still failed") after the command
# has begun. Oversubscription a user may want to measure (8 per core, or 64 on a small
# machine) stays allowed.
THREADS_PER_CORE = 8
FEWEST_ALLOWED = 64


def most_threads(cores: int | None = None) -> int:
    """The largest thread count any command accepts."""
    return max(FEWEST_ALLOWED, THREADS_PER_CORE * (available_cores() if cores is None else cores))


def check_thread_count(count: int, source: str = "--threads") -> None:
    """Refuse a count no machine of this size can run; ``source`` is the option (``--threads``)
    or the environment variable that asked for it."""
    cores = available_cores()
    limit = most_threads(cores)
    if count > limit:
        asked = f"{source}={count}" if source in THREAD_ENV_VARS else f"{source} {count}"
        advice = "set it to" if source in THREAD_ENV_VARS else "give"
        raise ConfigError(
            f"{asked} is more than this machine can run: it has {cores} core{'s' if cores != 1 else ''}; "
            f"{advice} at most {limit}"
        )


def resolve_policy(requested: int | None, environ: dict | None = None) -> ThreadPolicy:
    """``--threads N`` wins, then OMP_NUM_THREADS / MKL_NUM_THREADS, then adaptive. A count
    past ``most_threads`` is a ConfigError, named by where it came from."""
    environ = os.environ if environ is None else environ
    cores = available_cores()
    if requested is not None:
        check_thread_count(requested)
        return ThreadPolicy(fixed=requested, source="--threads", most=cores)
    for name in THREAD_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            try:
                count = int(value.split(",")[0])
            except ValueError:
                continue  # torch ignores what it cannot read; so do we
            if count >= 1:
                check_thread_count(count, name)
                return ThreadPolicy(fixed=count, source=name, most=cores)
    return ThreadPolicy(fixed=None, source="adaptive", most=cores)


def set_threads(count: int) -> None:
    """Run torch's intra-op work and numpy's BLAS on ``count`` threads (of this thread's
    OpenMP team: call it from the thread that does the work)."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    set_blas_threads(count)


_blas_setter: Callable[[int], None] | None | bool = False  # False: not looked up yet


def set_blas_threads(count: int) -> bool:
    """Set OpenBLAS's thread count at run time (OPENBLAS_NUM_THREADS is read only when numpy
    loads it); False where no OpenBLAS is loaded or it offers no setter."""
    global _blas_setter
    if _blas_setter is False:
        _blas_setter = _find_blas_setter()
    if _blas_setter is None:
        return False
    _blas_setter(count)
    return True


def _find_blas_setter() -> Callable[[int], None] | None:
    importlib.import_module("numpy")  # loads its BLAS, so that the library is in the map below

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # already loaded: this returns the same handle
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                return lambda count, setter=setter: setter(int(count))
    return None


class ThreadGovernor:
    """Keeps the thread count that does the most work per second, measured as it goes.

    Call ``observe(seconds, work)`` after each unit of work (a training step, a generation
    step). After ``first_look`` seconds at the current count, it tries a neighbouring count
    for up to ``probe_steps`` units and keeps it if it ran more than ``margin`` faster
    (``margin_up`` for more threads). A probe
    that loses waits twice as long before the next one (up to ``longest_look``), so a choice
    that keeps winning costs almost nothing; a probe ends after one unit that ran below
    ``abort_below`` of the current speed, so a clearly worse count costs one unit. If the speed at the current count
    falls below ``drop`` of what it was when chosen (another process started), it probes
    fewer threads at once. It starts at the fewest threads and climbs.
    """

    def __init__(
        self,
        choices: Sequence[int],
        apply: Callable[[int], None] = set_threads,
        first_look: float = 1.0,
        longest_look: float = 30.0,
        probe_steps: int = 3,
        margin: float = 1.08,
        margin_up: float = 1.25,
        drop: float = 0.7,
        skip: int = 2,
        abort_below: float = 0.75,
    ) -> None:
        self.choices = tuple(sorted(set(choices), reverse=True))
        self.apply = apply
        self.first_look, self.longest_look = first_look, longest_look
        self.probe_steps, self.margin, self.drop, self.abort_below = probe_steps, margin, drop, abort_below
        self.margin_up = margin_up
        # Start low: a count too low for an idle machine costs a third of the speed until the
        # first probe, one too high for a busy one nine tenths (2 cores: 12.6k against 19.3k
        # chars/s alone; 3.2k against 12.0k beside another training).
        self.current = self.choices[-1]
        self._interval = first_look
        self._skip = skip  # the first units after start-up run cold
        self._rates: deque[float] = deque(maxlen=5)
        self._reference: float | None = None  # the current count's speed when it was chosen
        self._waited = 0.0
        self._probe: int | None = None
        self._probe_rates: list[float] = []
        self._next_side = 1  # which neighbour to try next: +1 fewer threads, -1 more
        self.switches = 0
        self.seconds_at: dict[int, float] = {}
        self.apply(self.current)

    @classmethod
    def for_policy(cls, policy: ThreadPolicy, **options) -> "ThreadGovernor | None":
        """A governor for an adaptive policy; None (and the count applied) for a fixed one."""
        if policy.fixed is not None:
            set_threads(policy.fixed)
            return None
        return cls(policy.choices(), **options)

    @property
    def threads(self) -> int:
        """The count the work runs at now (a probe's, while one is under way)."""
        return self._probe if self._probe is not None else self.current

    def observe(self, seconds: float, work: float = 1.0) -> None:
        if seconds <= 0:
            return
        self.seconds_at[self.threads] = self.seconds_at.get(self.threads, 0.0) + seconds
        if self._skip:
            self._skip -= 1
            return
        rate = work / seconds
        if self._probe is not None:
            self._probe_rates.append(rate)
            if rate < self.abort_below * self._baseline() or len(self._probe_rates) >= self.probe_steps:
                self._end_probe()
            return
        self._rates.append(rate)
        self._waited += seconds
        if len(self.choices) < 2 or len(self._rates) < 3:
            return
        baseline = self._baseline()
        if self._reference is None:
            self._reference = baseline
        # A drop means other work arrived, which fewer threads answer. At the fewest there is
        # nothing to try: probing more then would only slow everyone (and make the other
        # process's governor see a drop of its own).
        dropped = (
            baseline < self.drop * self._reference
            and len(self._rates) == self._rates.maxlen
            and self.current != self.choices[-1]
        )
        if dropped:
            self._start_probe(fewer=True)
        elif self._waited >= self._interval:
            self._start_probe()

    def _baseline(self) -> float:
        return statistics.median(self._rates)

    def _start_probe(self, fewer: bool = False) -> None:
        index = self.choices.index(self.current)
        for side in ((1,) if fewer else (self._next_side, -self._next_side)):
            if 0 <= index + side < len(self.choices):
                self._probe = self.choices[index + side]
                self._next_side = -side
                break
        self._probe_rates = []
        self.apply(self._probe)

    def _end_probe(self) -> None:
        probe_rate = statistics.median(self._probe_rates)
        baseline = self._baseline()
        # More threads must pay for themselves clearly: on a shared machine a process that
        # takes more threads can run faster by taking time from the others (the scheduler
        # shares by thread), while all of them together go slower.
        needed = self.margin_up if self._probe > self.current else self.margin
        if probe_rate > needed * baseline:
            self.current = self._probe
            self._rates = deque(self._probe_rates, maxlen=self._rates.maxlen)
            self._reference = probe_rate
            self._interval = self.first_look
            self.switches += 1
        else:
            self.apply(self.current)
            self._interval = min(self._interval * 2, self.longest_look)
            # The speed now may be lower than when the count was chosen, through no fault of
            # the count: take it as the new reference, so the drop rule does not fire forever.
            self._reference = baseline
        self._probe = None
        self._waited = 0.0
