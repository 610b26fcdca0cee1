"""`charrnn bench`: every benchmark, dispatched by its option, rendered as tables."""

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console


from charrnn.cli.shared import given_options, output_path, err, out, _default, MEASURED, ranged
from charrnn.options import DEFAULTS, Cell, DeviceChoice, Preset


def bench(
    ctx: typer.Context,
    long: Annotated[bool, typer.Option("--long", help="Measure ~4x longer for steadier figures (several minutes).", rich_help_panel=MEASURED)] = False,
    preset: Annotated[Optional[list[Preset]], typer.Option(metavar="<preset>...", help=f"Model size to measure (repeatable): {', '.join(p.value for p in Preset)}. \\[default: small and large; on a GPU 2x512 and 3x1024]")] = None,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell of the measured models.")] = Cell.lstm,
    batch_size: Annotated[Optional[int], ranged("bench", "batch_size", checked=True, help="Training batch. \\[default: the trainer's default for the device]")] = None,
    seq_len: Annotated[Optional[int], ranged("bench", "seq_len", checked=True, help="Training window. \\[default: the trainer's default]")] = None,
    corpus_mb: Annotated[int, ranged("bench", "corpus_mb", checked=True, help="Size of the generated corpus for encoding speed and peak RSS.", rich_help_panel=MEASURED)] = 100,
    text: Annotated[Optional[Path], typer.Option(help="Text repeated to make that corpus. \\[default: generated words]", rich_help_panel=MEASURED)] = None,
    memory: Annotated[bool, typer.Option(help="Measure encoding speed and training peak RSS.", rich_help_panel=MEASURED)] = True,
    sampling: Annotated[bool, typer.Option(help="Measure sampling speed.", rich_help_panel=MEASURED)] = True,
    device: Annotated[DeviceChoice, typer.Option(help="Where to measure.")] = DeviceChoice.auto,
    json_path: Annotated[Optional[Path], typer.Option("--json", parser=output_path, metavar="<path>", help="Also write the figures as JSON here.")] = None,
    threads: Annotated[Optional[int], ranged("threads", "threads", checked=True, help="CPU threads for every figure. \\[default: all cores for training and batches, one for a single sample, as the commands choose]", show_default=False)] = None,
    grad_stats_cost: Annotated[bool, typer.Option("--grad-stats-cost", help="Also time training steps with the per-group gradient statistics (on by default in train) off and on, alternating in the same run, and show their cost as a ratio.", rich_help_panel=MEASURED)] = False,
    export_runs: Annotated[Optional[list[Path]], typer.Option("--export", metavar="RUN", help="Instead: export this run (repeatable) in every format and measure each file's size, batch-1 latency and chars/s, and validation bpc against the checkpoint's, beside the FastStepper in the same run.", show_default=False)] = None,
    export_chars: Annotated[int, ranged("bench_export", "chars", checked=True, help=f"Validation characters each format steps through with --export. {_default('bench_export', 'chars')}", show_default=False)] = DEFAULTS["bench_export"]["chars"],
    contention: Annotated[bool, typer.Option("--contention", help="Instead: measure training and sampling beside other work (two trainings at once, a busy loop), adaptive threads against all cores, as ratios to each alone (about 6 minutes; --long: 18).")] = False,
    startup: Annotated[bool, typer.Option("--startup", help="Instead: measure how long every command's --help and tab completion take to start, against `python -c pass` (about 30 s; --long: 2 minutes).")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="Instead: start `charrnn serve` and stream from it with 1, 8, 32 and 64 clients at once: chars/s of all together, time to first character, gaps between characters, every request accounted for (about 40 s; --long: 2 minutes).")] = False,
    explore_run: Annotated[Optional[Path], typer.Option("--explore", metavar="RUN", help="Instead: the explorer's analysis of 10,000 characters of the run's validation text (every character's bits and guesses, a unit, the property search, the gates) beside `charrnn eval` of the same text, one thread, best of 5.", show_default=False)] = None,
    serve_run: Annotated[Optional[Path], typer.Option("--serve-run", metavar="RUN", help="With --serve: the run to serve. \\[default: a small-preset model trained one step]", show_default=False)] = None,
) -> None:
    """Measure training, sampling and encoding speed against this machine's matmul peak."""
    from charrnn.bench.modes import check_bench_options
    from charrnn.outputs import check_output_file

    if json_path is not None:
        check_output_file(json_path, "--json", [text, serve_run, explore_run, *(export_runs or ())], example="bench.json")
    given = given_options(ctx)
    for name, on in (("memory", memory), ("sampling", sampling)):
        if name in given and not on:
            given[name] = f"--no-{name}"
    mode = check_bench_options(given, memory)
    instead = {
        "contention": lambda: _bench_contention(long, json_path),
        "export_runs": lambda: _bench_export(export_runs, export_chars, json_path),
        "startup": lambda: _bench_startup(long, json_path),
        "serve": lambda: _bench_serve(long, serve_run, json_path),
        "explore_run": lambda: _bench_explore(explore_run, json_path),
    }
    if mode is not None:
        instead[mode]()
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


def _bench_explore(run: Path, json_path: Optional[Path]) -> None:
    from charrnn.bench.explore_speed import run_explore_bench
    from charrnn.cli.bench_tables import render_explore_bench

    result = run_explore_bench(run, progress=lambda message: err.print(f"bench: {message}", markup=False))
    render_explore_bench(result, out if out.is_terminal else Console(highlight=False, width=140))
    _write_json(result, json_path)


def _write_json(result, json_path: Optional[Path]) -> None:
    if json_path is not None:
        from charrnn.checkpoint import atomic_write

        atomic_write(json_path, (json.dumps(result.to_dict(), indent=2) + "\n").encode("utf-8"), "bench figures")
        err.print(f"wrote {json_path}", markup=False)


class _ByPrecision:
    """Several results as one JSON object, keyed by their precision."""

    def __init__(self, results) -> None:
        self.results = results

    def to_dict(self) -> dict:
        return {result.precision: result.to_dict() for result in self.results}


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

    from charrnn.cli.app import app

    commands = [[]] + [[c.name or c.callback.__name__] for c in app.registered_commands]
    commands += [[group.name] for group in app.registered_groups]
    completions = ["charrnn tr", "charrnn train --", "charrnn train --cell ", "charrnn sample --"]
    result = run_startup(
        commands, completions, rounds=25 if long else 7, progress=lambda message: err.print(f"bench: {message}", markup=False)
    )
    render_startup(result, out if out.is_terminal else Console(highlight=False, width=140))
    _write_json(result, json_path)


def _bench_serve(long: bool, run: Optional[Path], json_path: Optional[Path]) -> None:
    from charrnn.bench.serve_load import run_serve_loads, serving_precisions
    from charrnn.cli.bench_tables import render_serve_loads
    from charrnn.serve.config import require_server_packages

    require_server_packages()
    started = time.perf_counter()
    report = lambda message: err.print(f"bench: {message}", markup=False)  # noqa: E731
    results = run_serve_loads(run, serving_precisions(), report, seconds=24.0 if long else 6.0)
    render_serve_loads(results, out if out.is_terminal else Console(highlight=False, width=140))
    err.print(f"bench took {time.perf_counter() - started:.0f} s", markup=False)
    _write_json(_ByPrecision(results), json_path)
