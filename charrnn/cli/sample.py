"""`charrnn sample`: stream samples to stdout, a beam search, or the interactive prompt loop."""

import itertools
from dataclasses import fields
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.errors import EXIT_INTERRUPTED, fail
from charrnn.cli.dynamic import PANEL as DYNAMIC_PANEL, DynamicDecay, DynamicLr, DynamicRows, DynamicSeq, dynamic_config
from charrnn.cli.shared import CheckpointArgument, BestOption, given_options, err, SAMPLE, MODEL, MODES, COPYING, _generation_threads, ranged, DeviceOption, ThreadsOption, PrecisionOption, _given_path, say_precision
from charrnn.options import DeviceChoice, Precision, SamplingEngine

DEFAULT_SEPARATOR = "--- sample {i} of {n} {status} ---"
# Samples after the first are written out whole; stdout is flushed at most this often for them.
FLUSH_SECONDS = 0.05


def sample(
    ctx: typer.Context,
    checkpoint: CheckpointArgument,
    length: Annotated[int, ranged("sample", "length", help="Characters to generate per sample.")] = SAMPLE["length"],
    temperature: Annotated[float, ranged("sample", "temperature", help="Sampling temperature; 0 = greedy.")] = SAMPLE["temperature"],
    top_k: Annotated[int, ranged("sample", "top_k", help="Sample only among the k most likely characters; 0 = off.")] = SAMPLE["top_k"],
    top_p: Annotated[float, ranged("sample", "top_p", help="Nucleus sampling mass, above 0 and at most 1; 1 = off.")] = SAMPLE["top_p"],
    min_p: Annotated[float, ranged("sample", "min_p", help="Drop characters less likely than this fraction of the most likely one; 0 = off.")] = SAMPLE["min_p"],
    repetition_penalty: Annotated[float, ranged("sample", "repetition_penalty", help="Above 1, characters seen in the last --repetition-window become less likely; 1 = off; above 0 and below 1, more likely.")] = SAMPLE["repetition_penalty"],
    repetition_window: Annotated[int, ranged("sample", "repetition_window", help="Recent characters (prime included) the repetition penalty looks at.")] = SAMPLE["repetition_window"],
    beam: Annotated[int, ranged("sample", "beam", checked=True, help="Beam search with this many beams instead of sampling: the most likely continuation, deterministic; good for short completions, repetitive on long ones. 0 = sample.", rich_help_panel=MODES)] = SAMPLE["beam"],
    items: Annotated[int, ranged("sample", "items", checked=True, metavar="N", help="From a run trained with --items: N whole new items of its list, one a line, each from the start state to its delimiter (--prime starts every one; --length caps each). 0 = off.", rich_help_panel=MODES)] = SAMPLE["items"],
    novel: Annotated[Optional[bool], typer.Option("--novel/--no-novel", help="With --items: drop items found verbatim in the run's list (and draw again); repeats are always dropped. \\[default: on]", show_default=False, rich_help_panel=MODES)] = SAMPLE["novel"],
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Prompt loop: each line you type is continued; /help lists commands (/temp, /len, ...), /quit or EOF ends.", rich_help_panel=MODES)] = False,
    prime: Annotated[str, typer.Option(help="Text to condition on first (printed before the sample).")] = "",
    prime_file: Annotated[Optional[Path], typer.Option(help="Read the prime from this UTF-8 file instead of --prime (a long prime without shell quoting; --unknown applies as to --prime).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed, 0 to 2**63-1: same seed, same text. \\[default: random, reported]")] = None,
    num_samples: Annotated[int, ranged("sample", "num_samples", help="Samples to make, generated together in one batch; each is written out as soon as its text is final, in order, followed by a --separator line.")] = SAMPLE["num_samples"],
    separator: Annotated[str, typer.Option(help="With --num-samples > 1, the line written on stdout after each sample, for scripts to split on: {i} becomes the sample's number, {n} the number of samples, {status} 'complete' or 'cut short' (Ctrl-C).")] = DEFAULT_SEPARATOR,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample at this string (repeatable; not printed).")] = None,
    unknown: Annotated[str, typer.Option(metavar="<error|skip>", help="Characters of --prime and of the --adapt text outside the vocabulary: error (names them) or skip.")] = SAMPLE["unknown"],
    best: BestOption = False,
    engine: Annotated[SamplingEngine, typer.Option(help="fast = weights laid out once for single steps (CPU); eager = the model's own forward (the reference; cuDNN on GPU); auto = fast on CPU, eager on GPU. Same seed, same text either way.", rich_help_panel=MODEL)] = SamplingEngine(SAMPLE["engine"]),
    device: DeviceOption = DeviceChoice.auto,
    threads: ThreadsOption = None,
    precision: PrecisionOption = Precision(SAMPLE["precision"]),
    check_copying: Annotated[bool, typer.Option("--check-copying", help="After sampling, report on stderr the longest substring of each sample found verbatim in the training text, and the share of it in copied runs of --copy-min-run+ characters, beside the same figures for unseen validation text. About 1 s per 1,000 sampled characters per MB of training text.", rich_help_panel=COPYING)] = False,
    training_text: Annotated[Optional[Path], typer.Option(help="Check copying against this file instead of the training files the checkpoint records (implies --check-copying).", show_default=False, rich_help_panel=COPYING)] = None,
    copy_min_run: Annotated[int, ranged("sample", "copy_min_run", checked=True, help="Shortest verbatim run counted as copied by --check-copying.", rich_help_panel=COPYING)] = SAMPLE["copy_min_run"],
    adapt: Annotated[Optional[Path], typer.Option(parser=_given_path, help="Before sampling, adapt a copy of the model to this text by dynamic evaluation (as eval --dynamic does), so that it writes in its style; stderr says how far the text's bits per character fell. The checkpoint is not changed.", show_default=False, rich_help_panel=DYNAMIC_PANEL)] = None,
    dynamic_lr: DynamicLr = None,
    dynamic_decay: DynamicDecay = None,
    dynamic_seq: DynamicSeq = None,
    dynamic_rows: DynamicRows = None,
) -> None:
    """Generate text, streaming it to stdout as it is made."""
    # The options by name: SampleConfig takes the fields of its own names from them.
    options = {name: getattr(value, "value", value) for name, value in locals().items() if name != "ctx"}
    from charrnn.device import resolve_device
    from charrnn.model.loading import load_model

    check_copying = _check_modes(ctx, options)
    config = _sample_config(options, prime_file, stop)
    dynamic = dynamic_config(dynamic_lr, dynamic_decay, dynamic_seq, dynamic_rows, None if adapt is None else "adapt")
    target = resolve_device(device.value)
    governor = _generation_threads(threads, paced=not (beam or interactive)) if target.type == "cpu" else None
    model, vocab, saved = load_model(checkpoint, "best" if best else "last", device.value)
    if dynamic is not None:
        model = _adapted(model, vocab, saved, adapt, config, dynamic, target)
    # Read before sampling: a missing training file is answered before any output.
    references = _copying_references(saved, training_text) if check_copying else None
    # A beam search steps the model's own layers, a beam a row.
    config, dtype = _resolve_precision(model, config, beam or items or config.num_samples, "eager" if beam else config.engine, target)
    if items:
        _sample_items(model, vocab, saved, config, items, novel, target)
    elif beam:
        _report_copying(references, _sample_beam(model, vocab, config, beam, target, separator, dtype), copy_min_run)
    else:
        _check_ready(model, vocab, config, target, check_memory=not interactive)
        err.print(f"seed {config.seed}", markup=False)
        if interactive:
            _sample_interactive(model, vocab, config, target)
        else:
            _stream_and_report(model, vocab, config, target, separator, governor, references, copy_min_run)


def _sample_config(options: dict, prime_file: Optional[Path], stop: Optional[list[str]]):
    """SampleConfig from the options of its fields' names; the prime read from --prime-file."""
    from charrnn.generation.sample import SampleConfig

    if prime_file is not None:
        from charrnn.generation.prime import read_prime_file

        options = {**options, "prime": read_prime_file(prime_file)}
    return SampleConfig(**{f.name: options[f.name] for f in fields(SampleConfig)} | {"stop": tuple(stop or ())})


def _resolve_precision(model, config, rows: int, engine: str, target):
    """The precision to sample in, said on stderr (``auto`` times this model's step at this
    batch), and the config that names it, so that no later step probes again."""
    from dataclasses import replace

    from charrnn.generation.stepper import choose_precision
    from charrnn.precision import DTYPE_NAMES

    dtype, probe = choose_precision(model, engine, rows, config.precision, target)
    say_precision(config.precision, dtype, target, probe)
    return replace(config, precision=DTYPE_NAMES[dtype]), dtype


def _copying_references(saved, training_text: Optional[Path]):
    from charrnn.generation.copying import reference_texts

    return reference_texts(saved.corpus, training_text)


def _check_ready(model, vocab, config, target, check_memory: bool) -> None:
    """A prime the model cannot read, or samples that would not fit in memory, are answered
    before any output."""
    from charrnn.generation.batch_memory import check_sample_memory
    from charrnn.generation.sample import prime_ids

    prime_ids(vocab, config)
    if check_memory:
        check_sample_memory(model.config, config, target, vocab)


def _stream_and_report(model, vocab, config, target, separator: str, governor, references, copy_min_run: int) -> None:
    """Stream the samples, then say how fast, warn of separator clashes, and report an
    interrupt (exit 130) or the copying check."""
    texts, cut, seconds = _stream_samples(model, vocab, config, target, separator, governor)
    produced = sum(len(text) for text in texts)
    err.print(f"{produced} characters in {seconds:.2f} s ({produced / max(seconds, 1e-9):,.0f} chars/s)", markup=False)
    if config.num_samples > 1:
        _warn_separator_clashes(texts, config.prime, separator)
    if cut is not None:
        fail(f"charrnn: interrupted: {_cut_summary(cut, config.num_samples)}", EXIT_INTERRUPTED)
    _report_copying(references, texts, copy_min_run)


def _adapted(model, vocab, saved, path: Path, config, dynamic, target):
    """A copy of ``model`` adapted to the text at ``path``; stderr says how its bits per
    character went: before, while adapting (each segment scored before it was learned from)
    and after (the text scored again by the adapted copy)."""
    from charrnn.cli.dynamic import adapt
    from charrnn.data.corpus import resolve_sources
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.errors import ConfigError, CorpusError
    from charrnn.generation.sample import prime_ids
    from charrnn.model.evaluation import evaluate
    from charrnn.options import DEFAULTS
    from charrnn.text import shown
    from charrnn.units import nats_to_bpc

    if getattr(saved.corpus, "items_delimiter", None) is not None:
        raise ConfigError("--adapt reads its text as one stream, and a run trained with --items reads item by item from the zero state: drop --adapt")
    prime_ids(vocab, config)  # a prime the model cannot read is answered before the adaptation
    sources = resolve_sources([str(path)], encoding=DEFAULTS["corpus"]["encoding"])
    advice = "the model cannot adapt to characters it never saw; pass --unknown skip to leave them out"
    text = vocab_kind(vocab.kind).score_text(sources.train, vocab, DEFAULTS["corpus"]["encoding"], config.unknown, advice)
    if len(text.ids) < 2:
        raise CorpusError(f"the --adapt text needs at least 2 characters the model can read; {len(text.ids)} {'is' if len(text.ids) == 1 else 'are'} there")
    started = time.perf_counter()
    adaptation = adapt(model, vocab, saved, text.ids, config=dynamic, target=target, precision=config.precision)
    score, adapted = adaptation.score, adaptation.model
    seconds = time.perf_counter() - started
    before = nats_to_bpc(score.static_mean * text.tokens_per_char)
    during = nats_to_bpc(score.mean * text.tokens_per_char)
    report = (
        f"adapted to {shown(path)} ({text.chars:,} characters{_left_out(text.skipped)}) in {seconds:.1f} s: {before:.4f} bpc before, "
        f"{during:.4f} while adapting ({during - before:+.4f})"
    )
    if score.stopped:
        # No "after": scoring the text again would take as long again, and a Ctrl-C acts now.
        fail(f"charrnn: interrupted while adapting, after {score.tokens:,} of {len(text.ids) - 1:,} tokens: {report}", EXIT_INTERRUPTED)
    after = nats_to_bpc(evaluate(adapted, text.ids, target) * text.tokens_per_char)
    err.print(f"{report}, {after:.4f} after ({after - before:+.4f})", markup=False)
    return adapted


def _left_out(skipped: int) -> str:
    return f", {skipped:,} more outside the vocabulary left out" if skipped else ""


# What each mode does not use: given with it, an option would be silently ignored.
IGNORED_BY = {
    "--beam": ("temperature", "top_k", "top_p", "min_p", "seed", "engine"),
    "--interactive": ("num_samples", "separator"),
    "--items": ("num_samples", "separator"),
}


def _check_modes(ctx: typer.Context, options: dict) -> bool:
    """Refuse modes that cannot be combined and options the chosen mode would ignore, before
    the checkpoint is read; returns whether the copying check is on."""
    from charrnn.errors import ConfigError
    from charrnn.text import require_valid

    beam, interactive = bool(options["beam"]), options["interactive"]
    copying = options["check_copying"] or options["training_text"] is not None
    require_valid(options["separator"], "--separator")
    if not options["separator"]:
        raise ConfigError("--separator must not be empty: it is the line that tells samples apart")
    if "\n" in options["separator"] or "\r" in options["separator"]:
        raise ConfigError("--separator must be one line: scripts split the samples on a line equal to it")
    if beam and interactive:
        raise ConfigError("--beam and --interactive cannot be combined")
    if options["prime_file"] is not None and "prime" in given_options(ctx):
        raise ConfigError("--prime and --prime-file cannot be combined: give the prime one way")
    if copying and interactive:
        raise ConfigError("--check-copying works on generated samples, not the --interactive loop")
    if options["items"] and (beam or interactive or copying):
        other = "--beam" if beam else "--interactive" if interactive else "--check-copying"
        raise ConfigError(f"--items cannot be combined with {other} (--novel checks the items against the list)")
    if options["novel"] is not None and not options["items"]:
        raise ConfigError("--novel and --no-novel apply to --items: give --items N too, or drop it")
    _refuse_what_the_mode_ignores(ctx, beam, interactive, copying)
    return copying


def _refuse_what_the_mode_ignores(ctx: typer.Context, beam: bool, interactive: bool, copying: bool) -> None:
    from charrnn.errors import ConfigError

    given = given_options(ctx)
    ignored = {mode: [name for name in names if name in given] for mode, names in IGNORED_BY.items()}
    for mode, on in (("--beam", beam), ("--interactive", interactive), ("--items", "items" in given and ctx.params["items"] > 0)):
        if on and ignored[mode]:
            options = ", ".join(given[name] for name in ignored[mode])
            raise ConfigError(f"{mode} does not use {options}: drop {'it' if len(ignored[mode]) == 1 else 'them'}")
    if "copy_min_run" in given and not copying:
        raise ConfigError("--copy-min-run sets what --check-copying counts: give --check-copying too, or drop it")


def _separator_line(template: str, number: int, count: int, cut: bool) -> str:
    # str.replace, not str.format: any other braces in the template are kept as written.
    fields = {"{i}": str(number), "{n}": str(count), "{status}": "cut short" if cut else "complete"}
    for field, value in fields.items():
        template = template.replace(field, value)
    return template


def _stream_samples(model, vocab, config, target, separator: str, governor=None):
    """Write the samples to stdout as ``stream_samples`` gives them out: the first as it is
    made, each later one as soon as its text is final. The first Ctrl-C (or SIGTERM) ends
    generation and writes out every sample made so far; a second one quits at once.
    Returns the texts, the numbers of the samples cut short (None without a Ctrl-C), seconds."""
    from charrnn.generation.sample import stream_samples
    from charrnn.cli.signals import graceful_stop

    stop_requested = False

    def request_stop(signum: int) -> None:
        nonlocal stop_requested
        stop_requested = True

    n = config.num_samples
    parts: list[list[str]] = [[] for _ in range(n)]
    cut: list[int] = []
    started = flushed = time.perf_counter()
    with graceful_stop(request_stop):
        pieces = stream_samples(model, vocab, config, target, should_stop=lambda: stop_requested, governor=governor)
        first = next(pieces)  # errors (a bad prime) surface before anything is printed
        for piece in itertools.chain([first], pieces):
            if not parts[piece.sample]:
                sys.stdout.write(config.prime)
            parts[piece.sample].append(piece.text)
            sys.stdout.write(piece.text)
            if piece.last:
                sys.stdout.write("\n")
                if piece.cut:
                    cut.append(piece.sample + 1)
                if n > 1:
                    sys.stdout.write(_separator_line(separator, piece.sample + 1, n, piece.cut) + "\n")
            # The first sample streams as it is made; the rest come whole, and a flush each
            # would make writing out a million samples after a Ctrl-C take seconds.
            if piece.sample == 0 or time.perf_counter() - flushed > FLUSH_SECONDS:
                sys.stdout.flush()
                flushed = time.perf_counter()
        sys.stdout.flush()
    seconds = time.perf_counter() - started
    return ["".join(p) for p in parts], (cut if stop_requested else None), seconds


def _cut_summary(cut: list[int], count: int) -> str:
    if count == 1:
        return "the sample was cut short; what was made is on stdout" if cut else "the sample was complete"
    if not cut:
        return f"all {count} samples were complete"
    numbers = ", ".join(str(i) for i in cut)
    return f"{len(cut)} of {count} samples cut short ({numbers}); what was made is on stdout"


def _warn_separator_clashes(texts: list[str], prime: str, separator: str) -> None:
    """A sample with a line equal to a separator line would split wrongly: say so."""
    n = len(texts)
    lines = {_separator_line(separator, i, n, cut) for i in range(1, n + 1) for cut in (False, True)}
    clashes = [str(i) for i, text in enumerate(texts, 1) if lines.intersection((prime + text).split("\n"))]
    if clashes:
        err.print(
            f"warning: sample {', '.join(clashes)} has a line equal to a separator line; "
            "choose another with --separator to split the samples reliably",
            markup=False,
        )


def _report_copying(references, texts: list[str], min_run: int) -> None:
    """One stderr line per sample: its longest verbatim copy and copied share, then the same
    figures for unseen text of the same length, so the user can tell learning from copying."""
    if references is None:
        return
    from charrnn.generation.copying import copy_report, unseen_baseline

    err.print(f"copying check against {references.source} ({len(references.train):,} training characters):", markup=False)
    for i, text in enumerate(texts, 1):
        report = copy_report(text, references.train, min_run)
        label = f"sample {i}" if len(texts) > 1 else "sample"
        err.print(f"  {label}: {_copy_figures(report)}", markup=False)
    baseline = unseen_baseline(references, max(len(t) for t in texts), min_run)
    if baseline is not None:
        err.print(f"  unseen validation text, same length: {_copy_figures(baseline)}", markup=False)


def _copy_figures(report) -> str:
    return (
        f"longest verbatim run {report.longest} chars {report.longest_text!r}; "
        f"{report.copied_fraction:.1%} in runs of {report.min_run}+ chars"
    )


def _sample_items(model, vocab, saved, config, count: int, novel, target) -> None:
    """--items: whole items of the run's list, one a line, then what was drawn on stderr."""
    from charrnn.errors import ConfigError
    from charrnn.generation.items import list_items, sample_items

    delimiter = saved.corpus.items_delimiter
    if delimiter is None:
        raise ConfigError("--items N samples a run trained with --items; this run read its text as one stream")
    known = None
    if novel is None or novel:
        from charrnn.generation.copying import reference_texts

        references = reference_texts(saved.corpus)
        known = list_items(references.train + delimiter + (references.unseen or ""), delimiter)
    err.print(f"seed {config.seed}", markup=False)
    report = sample_items(model, vocab, config, count, delimiter, known, target)
    for item in report.items:
        sys.stdout.write(item + "\n")
    sys.stdout.flush()
    err.print(report.describe(count), markup=False)


def _sample_beam(model, vocab, config, width: int, target, separator: str, dtype) -> list[str]:
    from charrnn.generation.beam import BeamConfig, beam_search
    from charrnn.errors import ConfigError

    if config.num_samples > width:
        raise ConfigError(f"--num-samples {config.num_samples} is more than the {width} beams kept")
    beams = beam_search(
        model,
        vocab,
        BeamConfig(
            width=width,
            length=config.length,
            prime=config.prime,
            unknown=config.unknown,
            stop=config.stop,
            repetition_penalty=config.repetition_penalty,
            repetition_window=config.repetition_window,
        ),
        target,
        dtype,
    )
    for i, found in enumerate(beams[: config.num_samples], 1):
        if config.num_samples > 1:
            err.print(f"--- beam {i}/{config.num_samples}: log-probability {found.log_prob:.3f} ---", markup=False)
        sys.stdout.write(config.prime + found.text + "\n")
        if config.num_samples > 1:
            sys.stdout.write(_separator_line(separator, i, config.num_samples, cut=False) + "\n")
        sys.stdout.flush()
    return [found.text for found in beams[: config.num_samples]]


def _sample_interactive(model, vocab, config, target) -> None:
    from charrnn.generation.interactive import HELP, InteractiveIO, InteractiveSession

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def prompt() -> None:
        sys.stderr.write("> ")
        sys.stderr.flush()

    def edited_line() -> str:
        try:
            return input("> ") + "\n"
        except EOFError:
            return ""

    err.print(HELP, markup=False)
    # A typed line that is not UTF-8 reaches the session as text with its bad bytes kept, to
    # be refused there in one line, instead of ending the session with a decoding error.
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    readline = _line_editing()
    io = InteractiveIO(
        read_line=edited_line if readline else sys.stdin.readline,
        write=write,
        tell=lambda line: err.print(line, markup=False),
        # input() shows the prompt itself (on the terminal), so that editing can redraw it.
        prompt=(lambda: None) if readline else prompt,
    )
    history = _load_prompt_history(readline)
    try:
        replies = InteractiveSession(model, vocab, config, target).run(io)
    finally:
        _save_prompt_history(readline, history)
    sys.stderr.write("\n")
    err.print(f"{replies} replies", markup=False)


def _line_editing():
    """Python's readline module, which gives input() arrow keys, editing and history, when
    stdin and stdout are a terminal (input() uses it only then); None otherwise, or where
    the module is absent (Windows)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    try:
        import readline
    except ImportError:
        return None
    return readline


def _load_prompt_history(readline) -> Path | None:
    """Earlier prompts from the history file in the cache directory (none when the cache is
    off); a history that cannot be read starts empty."""
    from charrnn.data.cache import cache_dir

    directory = cache_dir()
    if readline is None or directory is None:
        return None
    path = directory / "sample_history"
    readline.set_history_length(1000)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    return path


def _save_prompt_history(readline, path: Path | None) -> None:
    if readline is None or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass  # history is a convenience: an unwritable cache must not fail the command
