"""The benchmark's tables (stdout) for ``charrnn bench``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from charrnn.bench.speed import BATCHED_SAMPLES, BenchResult

FLOP_NOTE = (
    "FLOPs counted: matrix multiplies only. Per character, a recurrent layer's forward is "
    "2*G*H*(I+H) (G = 4 LSTM, 3 GRU, 1 RNN; I = embedding for layer 0, else H), the decoder "
    "2*H*V, the embedding 0; a training step is 3x the forward (backward = 2x). Ratios are "
    "against the matmul peak measured in this run in the row's precision (bf16: autocast, "
    "against the bf16 matmul peak); speeds are the best of the repeats."
)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _model_name(row: dict) -> str:
    """"small 2x256", or only "2x512" where the model was asked for by its shape."""
    return row["shape"] if row["preset"] == row["shape"] else f"{row['preset']} {row['shape']}"


def render_bench(result: BenchResult, console: Console) -> None:
    machine, peak = result.machine, result.peak
    gpu = "fp16_gflops" in peak
    unit = "TFLOP/s" if gpu else "GFLOP/s"
    scale = 1e-3 if gpu else 1.0
    console.print(
        f"machine: {machine['device']}, {machine['cpus']} CPUs, torch {machine['torch']} "
        f"({machine['torch_threads']} threads)"
        + (f", cuDNN {machine['cudnn']}" if machine.get("cudnn") else ""),
        markup=False,
    )
    if machine.get("cpu_model"):
        flags = ", ".join(machine.get("bf16_flags") or ()) or "none"
        console.print(f"CPU: {machine['cpu_model']}; native bf16 instructions: {flags}", markup=False)
    precisions = [key.removesuffix("_gflops") for key in peak if key.endswith("_gflops")]
    console.print(
        "matmul peak: " + ", ".join(f"{name} {peak[name + '_gflops'] * scale:,.2f} {unit}" for name in precisions),
        markup=False,
    )

    if result.training:
        table = Table(title="training (whole step: forward, loss, backward, clip, AdamW)", box=None)
        for column in ("model", "batch x seq", "precision", "chars/s", unit, "of peak", "MFLOP/char", "params"):
            table.add_column(column, justify="right" if column != "model" else "left")
        for row in result.training:
            table.add_row(
                f"{_model_name(row)} {row['cell']}",
                f"{row['batch_size']}x{row['seq_len']}",
                row.get("precision", peak.get("reference", "fp32")),
                _num(row["chars_per_s"]),
                _num(row["gflops"] * scale, 2 if scale < 1 else 1),
                f"{row['ratio']:.2f}",
                _num(row["flops_per_char"] / 1e6, 2),
                _num(row["parameters"]),
            )
        console.print(table)
        if any("grad_stats_best_ratio" in row for row in result.training):
            _render_grad_stats_cost(result, console)

    if result.sampling:
        _render_sampling(result, console)

    memory = result.memory
    if memory:
        console.print(
            f"encoding {memory['chars'] / 1e6:,.0f} M chars: vocabulary pass "
            f"{memory['vocab_pass_mchars_per_s']:,.0f} M chars/s, ids pass "
            f"{memory['encode_pass_mchars_per_s']:,.0f} M chars/s, both "
            f"{memory['both_passes_mchars_per_s']:,.0f} M chars/s",
            markup=False,
        )
        console.print(
            f"peak RSS training on {memory['corpus_bytes'] / 1e6:,.0f} MB: "
            f"{_num(memory['train_peak_rss_cold_mb'])} MiB (first run, encodes into the cache), "
            f"{_num(memory['train_peak_rss_warm_mb'])} MiB (memory-mapped cache; "
            f"{_num(memory['train_peak_file_warm_mb'])} MiB of it file pages)",
            markup=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(FLOP_NOTE, markup=False)


def _render_sampling(result: BenchResult, console: Console) -> None:
    table = Table(title="sampling chars/s", box=None)
    columns = (
        "model", "batch 1 eager (ref)", "batch 1 fast", "fast / eager",
        f"batch {BATCHED_SAMPLES}", "batched / batch 1", f"CLI: 1 run of {BATCHED_SAMPLES} / {BATCHED_SAMPLES} runs",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right" if column != "model" else "left")
    for row in result.sampling:
        cli = row.get("cli_batched_vs_separate")
        table.add_row(
            _model_name(row),
            _num(row["eager_b1"]),
            _num(row["fast_b1"]),
            f"{row['fast_vs_eager']:.1f}x",
            _num(row["batched"]),
            f"{row['batched_vs_separate']:.1f}x",
            "-" if cli is None else f"{cli:.0f}x",
        )
    console.print(table)
    bf16 = [row for row in result.sampling if "fast_b1_bf16" in row]
    if bf16:
        table = Table(title="sampling in bf16 (--precision bf16), chars/s and against fp32 (the table above)", box=None)
        columns = ("model", "batch 1 fast", "/ fp32", f"batch {BATCHED_SAMPLES} fast", "/ fp32", f"batch {BATCHED_SAMPLES} eager", "/ fp32")
        for column in columns:
            table.add_column(column, justify="right" if column != "model" else "left")
        for row in bf16:
            table.add_row(
                _model_name(row),
                _num(row["fast_b1_bf16"]), f"{row['fast_b1_bf16'] / row['fast_b1']:.2f}x",
                _num(row["batched_fast_bf16"]), f"{row['batched_fast_bf16'] / row['batched']:.2f}x",
                _num(row["batched_eager_bf16"]), f"{row['batched_eager_bf16'] / row['batched']:.2f}x",
            )  # fmt: skip
        console.print(table)
        if result.machine.get("bf16_one_row"):
            console.print(f"bf16 batch 1: {result.machine['bf16_one_row']}", markup=False)
        if result.machine.get("bf16_rows"):
            console.print(f"bf16 several rows: {result.machine['bf16_rows']}", markup=False)


def _render_grad_stats_cost(result: BenchResult, console: Console) -> None:
    table = Table(title="gradient statistics: training steps with them off and on, alternating", box=None)
    columns = ("model", "batch x seq", "pairs", "best off (ms)", "best on (ms)", "best on / off",
               "median off (ms)", "median on (ms)", "median of pair ratios")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right" if column != "model" else "left")
    for row in result.training:
        if "grad_stats_best_ratio" not in row:
            continue
        table.add_row(
            f"{_model_name(row)} {row['cell']}",
            f"{row['batch_size']}x{row['seq_len']}",
            str(row["grad_stats_pairs"]),
            f"{row['grad_stats_off_step_s'] * 1e3:.2f}",
            f"{row['grad_stats_on_step_s'] * 1e3:.2f}",
            f"{row['grad_stats_best_ratio']:.3f}",
            f"{row['grad_stats_off_median_step_s'] * 1e3:.2f}",
            f"{row['grad_stats_on_median_step_s'] * 1e3:.2f}",
            f"{row['grad_stats_median_ratio']:.3f}",
        )
    console.print(table)


def render_contention(result, console: Console) -> None:
    """Each process's chars/s side by side with other work, and the ratios against alone."""
    console.print(
        f"contention: {result.cores} cores, {result.seconds:g} s per measurement; small preset, "
        "training 16x64 windows, sampling one stream",
        markup=False,
    )
    table = Table(title="chars/s of each charrnn process", box=None)
    for column in ("task", "beside it", "threads", "chars/s each", "time at 1 / more threads"):
        table.add_column(column, justify="left" if column in ("task", "beside it", "threads") else "right")
    for row in result.rows:
        shares = row.get("threads", {})
        one = shares.get("1", 0.0)
        table.add_row(
            row["task"], row["beside"], row["policy"], _num(row["chars_per_s"]), f"{one:.0%} / {1 - one:.0%}"
        )
    console.print(table)
    table = Table(title="ratios (beside other work: against the same threads alone; alone: against all cores alone)", box=None)
    for column in ("task", "beside it", "adaptive", "all cores", "target (adaptive)", "met"):
        table.add_column(column, justify="left" if column in ("task", "beside it") else "right")
    for ratio in result.ratios:
        table.add_row(
            ratio["task"],
            ratio["beside"],
            "-" if ratio["adaptive"] is None else f"{ratio['adaptive']:.2f}",
            "-" if ratio["all cores"] is None else f"{ratio['all cores']:.2f}",
            f">= {ratio['target']:.2f}",
            "yes" if ratio["met"] else "NO",
        )
    console.print(table)


def _kilobytes(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e3:,.1f}"


def render_export_bench(result, console: Console) -> None:
    """Per run: each format's file size, batch-1 latency and speed, and validation bpc against
    the checkpoint's, the FastStepper first as the reference measured in the same run."""
    for figures in result.runs:
        best = "" if figures.best_val_bpc is None else f"; best validation bpc logged in training {figures.best_val_bpc:.4f}"
        console.print(
            f"{figures.run}: {figures.model}, {figures.parameters:,} parameters, checkpoint "
            f"{figures.checkpoint_bytes / 1e3:,.1f} kB{best}",
            markup=False,
        )
        table = Table(title=f"exports at batch 1 over {figures.chars:,} validation characters", box=None)
        for column in ("format", "size kB", "size / float", "µs/char", "chars/s", "vs reference", "bpc", "Δ bpc"):
            table.add_column(column, justify="left" if column == "format" else "right")
        # A quantized row's size against the same format in float32 ("onnx int8" against "onnx").
        floats = {row.name: row.size_bytes for row in figures.rows}
        reference = figures.rows[0].chars_per_s
        for row in figures.rows:
            float_size = floats.get(row.name.split(" ")[0])
            table.add_row(
                row.name,
                _kilobytes(row.size_bytes),
                "-" if row.size_bytes is None or not float_size else f"{row.size_bytes / float_size:.2f}",
                f"{row.seconds_per_char * 1e6:,.0f}",
                _num(row.chars_per_s),
                f"{row.chars_per_s / reference:.2f}x",
                f"{row.bpc:.4f}",
                f"{row.bpc_change:+.4f}",
            )
        console.print(table)
        for note in figures.notes:
            console.print(f"note: {note}", markup=False)


def render_startup(result, console: Console) -> None:
    """Each command's start-up time beside the interpreter's own, and whether it meets the target."""
    table = Table(title=f"start-up, median of {result.rounds} rounds (target: under {result.target_s:g} s)", box=None)
    for column in ("what", "median s", "best s", "x python -c pass", "under target"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in result.rows:
        reference = row["what"] == "python -c pass"
        table.add_row(
            row["what"],
            f"{row['median_s']:.3f}",
            f"{row['best_s']:.3f}",
            f"{row['times_reference']:.1f}",
            "" if reference else ("yes" if row["median_s"] < result.target_s else "NO"),
        )
    console.print(table)


def render_serve_loads(results, console: Console) -> None:
    """``charrnn bench --serve``: a table per precision, then each precision's clients against
    one fp32 client (today's single stream)."""
    for result in results:
        render_serve_load(result, console)
    fp32 = next((r for r in results if r.precision == "fp32"), None)
    one = fp32.levels[0].chars_per_s if fp32 and fp32.levels and fp32.levels[0].clients == 1 else None
    for result in results:
        if one and result is not fp32:
            ratios = ", ".join(f"{level.clients} {level.chars_per_s / one:.1f}x" for level in result.levels)
            console.print(f"{result.precision} clients' chars/s against one fp32 client's: {ratios}", markup=False)


def render_serve_load(result, console: Console) -> None:
    """One precision: one row per number of clients."""
    console.print(
        f"charrnn serve {result.model} ({result.precision}): streaming /v1/completions, {result.max_tokens} characters per request, "
        f"{result.level_seconds:g} s per level, {result.cpus} CPUs (clients and server share them)",
        markup=False,
    )
    table = Table(box=None)
    for name in ("clients", "chars/s", "x 1 client", "first char p50 ms", "p99 ms", "gap p99 ms", "requests", "completed", "errors", "failed", "busiest step", "load before"):
        table.add_column(name, justify="right")
    one = result.levels[0].chars_per_s if result.levels and result.levels[0].clients == 1 else None
    for level in result.levels:
        errors = ", ".join(f"{n} x {status}" for status, n in sorted(level.errors.items())) or "0"
        table.add_row(
            str(level.clients),
            _num(level.chars_per_s),
            "-" if not one else f"{level.chars_per_s / one:.1f}",
            _num(level.ttfc_p50_ms, 1),
            _num(level.ttfc_p99_ms, 1),
            _num(level.gap_p99_ms, 1),
            f"{level.sent:,}",
            f"{level.completed:,}",
            errors,
            str(level.failed) + ("" if level.accounted else " (unaccounted!)"),
            str(level.busiest_step),
            f"{level.load_before[0]:.2f}",
        )
    console.print(table)
    if result.step_ms:
        times = ", ".join(f"{rows} {'row' if rows == 1 else 'rows'} {ms:.3f} ms" for rows, ms in sorted(result.step_ms.items()))
        ceilings = ", ".join(f"{rows} rows {result.ceiling(rows):.1f}x" for rows in sorted(result.step_ms) if rows > 1)
        console.print(
            f"the batched model step alone (one thread, median of 300): {times}; characters per second of N rows "
            f"against one row, N x (1-row step) / (N-row step): {ceilings}",
            markup=False,
        )
    if result.step_path:
        console.print(f"bf16 step here: {result.step_path}", markup=False)


def render_explore_bench(result, console: Console) -> None:
    """The explorer's analysis beside eval of the same text."""
    table = Table(title=f"the explorer's analysis of {result.chars:,} validation characters of {result.run} (one thread)", box=None)
    for column in ("what", "best s", "median s", "bpc"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row("charrnn eval (64 rows at a time)", f"{result.eval_best_s:.3f}", f"{result.eval_median_s:.3f}", f"{result.bpc_eval:.4f}")
    table.add_row("explorer: bits, top 5, a unit, properties, gates", f"{result.explain_best_s:.3f}", f"{result.explain_median_s:.3f}", f"{result.bpc_explain:.4f}")
    console.print(table)
    console.print(f"the analysis takes {result.ratio:.1f}x eval's time (best against best); the page's target is under 1 s", markup=False)
