"""Which of `charrnn bench`'s options each benchmark reads. The speed benchmark is the default;
``--contention``, ``--startup``, ``--serve``, ``--export`` and ``--explore`` each measure something else
instead, one per run, and read few of the options. An option the chosen benchmark does not
read is refused rather than dropped: the figures would look as if it had been applied."""

from __future__ import annotations

from charrnn.errors import ConfigError

# The "instead" benchmarks, by parameter name; ``serve_run`` alone also asks for ``--serve``.
INSTEAD = {"contention": "--contention", "startup": "--startup", "serve": "--serve", "export_runs": "--export", "explore_run": "--explore"}

# What each benchmark reads besides --json (which every one writes).
READS = {
    "contention": {"long"},
    "startup": {"long"},
    "serve": {"long", "serve_run"},
    "export_runs": {"export_chars"},
    "explore_run": set(),
    None: {
        "long", "preset", "cell", "batch_size", "seq_len", "corpus_mb", "text", "memory", "sampling",
        "device", "threads", "grad_stats_cost",
    },
}  # fmt: skip
ALWAYS = {"json_path"}

# The options that make the corpus only the memory figures use.
CORPUS_OPTIONS = ("corpus_mb", "text")


def check_bench_options(given: dict[str, str], memory: bool = True) -> str | None:
    """The benchmark ``given`` (parameter name -> the option as written, for those given on the
    command line) asks for: a key of ``INSTEAD``, or None for the speed benchmark. A
    ConfigError for two of them at once, or for an option the chosen one does not read."""
    chosen = [name for name in INSTEAD if name in given]
    if "serve_run" in given and "serve" not in chosen:
        chosen.append("serve")
    if len(chosen) > 1:
        names = [_named(name, given) for name in chosen]
        raise ConfigError(
            f"{_listed(names)} are separate benchmarks: give one of them (each is its own charrnn bench run)"
        )
    mode = chosen[0] if chosen else None
    ignored = [given[name] for name in given if name not in READS[mode] | ALWAYS | set(INSTEAD)]
    if mode is not None and ignored:
        raise ConfigError(f"{_named(mode, given)} does not use {_listed(ignored)}: drop {_them(ignored)}")
    if mode is None:
        if "export_chars" in given:
            raise ConfigError("--export-chars sets what --export measures: give --export RUN too, or drop it")
        unused = [given[name] for name in CORPUS_OPTIONS if name in given]
        if unused and not memory:
            raise ConfigError(
                f"{_listed(unused)} {'sets' if len(unused) == 1 else 'set'} the corpus that the memory "
                f"figures measure, which --no-memory leaves out: drop {_them(unused)}, or --no-memory"
            )
    return mode


def _named(mode: str, given: dict[str, str]) -> str:
    """The option that chose ``mode``, as written (--serve-run alone chooses --serve)."""
    return given.get(mode) or given.get("serve_run") or INSTEAD[mode]


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"
