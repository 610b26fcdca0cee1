"""Export a model as one dependency-free C99 source file, and measure the compiled program.

The file (``model.c``) is ``c/charrnn_model.c`` with the model's shape as macros and its
weights as arrays: nothing is read at run time, the weights sit in read-only memory (flash
on a microcontroller), and a compiler is all a user needs. It runs as a program (prime,
sample with temperature, top-k and a seed, ``--info``, ``--logits``, ``--score``,
``--bench``) and as a library (``charrnn_init``, ``charrnn_step``, ``charrnn_sample``); its
opening comment says how. Weights are embedded rather than written to a file beside it so
that there is one file to ship, no loader, no path to get wrong, and no start-up cost.

Weights (``quantize``): None keeps float32 (exact hex literals: the program's logits match
the checkpoint's to float rounding); "int8" stores each matrix row as int8 times one float
scale (max |w| / 127), every product computed in float: a quarter of the size; "float16"
stores IEEE half-precision bits, widened to float as they are read: half the size, a
smaller accuracy cost than int8. Biases stay float32 in every form.

Character vocabularies map each Unicode character to its id and write UTF-8; byte-level
vocabularies (``--tokenizer bytes``) read and write bytes. BPE needs its merges to encode a
prompt, which the C model does not implement: exporting one raises ``ExportError``.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from charrnn.cells import CELLS
from charrnn import __version__
from charrnn.c_compiler import find_compiler
from charrnn.errors import ExportError
from charrnn.export.report import ExportReport
from charrnn.model.network import CharRNN

QUANTIZE = (None, "int8", "float16")
SOURCE_NAME = "model.c"
TEMPLATE = "charrnn_model.c"
# The flags every check compiles with: strict C99, every warning an error.
STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror")
# The export's own check: the compiled program's logits on a short text against PyTorch's,
# float32 weights within this much times the largest logit (at least 1).
FLOAT_TOLERANCE = 1e-4
VALUES_PER_LINE = 24


def export_c(model: CharRNN, vocab, output: Path, quantize: str | None = None) -> ExportReport:
    """Write the C source of ``model`` and check it.

    ``output`` is a directory (created if needed), which receives ``model.c``, or a path
    ending in ``.c``, written as given. The check compiles the file with the system's C
    compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) with strict C99 flags and compares
    the program's logits on a short text with the model's; float32 weights must agree to
    1e-4 times the largest logit (``ExportError`` otherwise), int8 and float16 ones report
    how far they are and their cost on text drawn from the model. Without
    a compiler the check says so and the file is still written."""
    if quantize not in QUANTIZE:
        raise ExportError(f"the C model's weights are float32 (no --quantize), int8 or float16, not {quantize!r}")
    tokens = _token_bytes(vocab)
    path = _source_path(Path(output))
    source = render_source(model, vocab, quantize)
    try:
        path.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    check = _check(model, tokens, path, quantize)
    return ExportReport(paths=[path], size_bytes=path.stat().st_size, check=check)


def render_source(model: CharRNN, vocab, quantize: str | None = None) -> str:
    """The C source text of ``model`` with ``vocab`` (``export_c`` without writing or checking)."""
    cfg = model.config
    if cfg.cell == "rnn" and model.rnn.nonlinearity not in ("tanh", "relu"):
        raise ExportError(f"the C model has tanh and relu RNNs, not {model.rnn.nonlinearity}")
    tokens = _token_bytes(vocab)
    template = resources.files("charrnn.export").joinpath("c", TEMPLATE).read_text(encoding="utf-8")
    table = folds_input(cfg, len(tokens))
    weights = _Weights(quantize, table)
    weights.write_model(model)
    weights.write_vocabulary(tokens, _start_id(vocab))
    form = quantize or "float32"
    kind = "bytes" if getattr(vocab, "kind", "chars") == "bytes" else "characters"
    description = (
        f"charrnn C model: {cfg.cell.upper()} {cfg.layers}x{cfg.hidden}, embedding {cfg.embed}, "
        f"vocabulary {len(tokens)} {kind}, {form} weights.\n"
        f" * Written by charrnn {__version__} (charrnn export --format c)."
    )
    defines = {
        "CHARRNN_CELL_LSTM": int(cfg.cell == "lstm"),
        "CHARRNN_CELL_GRU": int(cfg.cell == "gru"),
        "CHARRNN_CELL_RNN": int(cfg.cell == "rnn"),
        "CHARRNN_RNN_RELU": int(cfg.cell == "rnn" and model.rnn.nonlinearity == "relu"),
        "CHARRNN_CELL_NAME": f'"{cfg.cell.upper()}"',
        "CHARRNN_LAYERS": cfg.layers,
        "CHARRNN_HIDDEN": cfg.hidden,
        "CHARRNN_EMBED": cfg.embed,
        "CHARRNN_VOCAB": len(tokens),
        "CHARRNN_GATES": f"({CELLS[cfg.cell].weight_blocks} * CHARRNN_HIDDEN)",
        "CHARRNN_PARAMETERS": f"{model.num_parameters()}UL",
        "CHARRNN_WEIGHTS_INT8": int(quantize == "int8"),
        "CHARRNN_WEIGHTS_FLOAT16": int(quantize == "float16"),
        "CHARRNN_WEIGHTS_NAME": f'"{form}"',
        "CHARRNN_BYTE_LEVEL": int(kind == "bytes"),
        "CHARRNN_INPUT_TABLE": int(table),
        "CHARRNN_START_ID": _start_id(vocab),
    }
    define_text = "\n".join(f"#define {name} {value}" for name, value in defines.items())
    return (
        template.replace("@DESCRIPTION@", description)
        .replace("/*@MODEL_DEFINES@*/", define_text)
        .replace("/*@MODEL_WEIGHTS@*/", weights.text())
    )


# ----------------------------------------------------------------------------- weights


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows and one float32 scale per row: w ~= q * scale[:, None], |q| <= 127."""
    w = np.asarray(w, dtype=np.float32)
    scale = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def folds_input(cfg, vocab_size: int) -> bool:
    """Whether the first layer's input product is stored per character, as a (vocabulary,
    gates) table of W_ih e + b: one row read instead of a product, where the table has no
    more entries than the embedding and W_ih together (a small vocabulary)."""
    gates = CELLS[cfg.cell].weight_blocks * cfg.hidden
    return vocab_size * gates <= gates * cfg.embed + vocab_size * cfg.embed


def input_table(model: CharRNN) -> torch.Tensor:
    """W_ih e + b of the first layer for every character e (b_ih + b_hh but for the GRU,
    whose b_hh is scaled by its reset gate), summed in float64."""
    rnn = model.rnn
    bias = rnn.bias_ih_l0.double() + (0 if model.config.cell == "gru" else rnn.bias_hh_l0.double())
    with torch.no_grad():
        return (model.embedding.weight.double() @ rnn.weight_ih_l0.double().T + bias).float()


def _hex_float(value: float) -> str:
    """An exact C99 float literal: hexadecimal, trailing zeros dropped."""
    if value == 0.0:
        return "-0.0f" if math.copysign(1.0, value) < 0 else "0.0f"
    text = value.hex()  # e.g. -0x1.9a00000000000p-4
    mantissa, exponent = text.split("p")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}p{exponent}f"


def _values(items: list[str]) -> str:
    lines = [",".join(items[i : i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    return "    " + ",\n    ".join(lines) if lines else "    0"


class _Weights:
    """The arrays of the C file, and the sum of their sizes as the compiler sees them."""

    def __init__(self, quantize: str | None, input_table: bool) -> None:
        self.quantize = quantize
        self.input_table = input_table
        self.parts: list[str] = []
        self.names: list[str] = []

    def array(self, name: str, ctype: str, items: list[str]) -> None:
        self.parts.append(f"static const {ctype} {name}[{max(len(items), 1)}] = {{\n{_values(items)}\n}};")
        self.names.append(name)

    def floats(self, name: str, values: np.ndarray) -> None:
        self.array(name, "float", [_hex_float(v) for v in np.asarray(values, np.float32).ravel().tolist()])

    def matrix(self, name: str, w: torch.Tensor, by_column: bool = True) -> str:
        """A weight matrix in the export's form, column after column unless ``by_column`` is
        False (the embedding, read a row at a time); returns its charrnn_matrix initializer."""
        w = w.detach().cpu().float().numpy()
        order = (lambda a: a.T) if by_column else (lambda a: a)
        if self.quantize == "int8":
            q, scale = quantize_rows(w)
            self.array(name, "charrnn_weight", [str(v) for v in order(q).ravel().tolist()])
            self.floats(f"{name}_scale", scale)
            return f"{{{name}, {name}_scale}}"
        if self.quantize == "float16":
            half = w.astype(np.float16)
            if not np.isfinite(half).all():
                raise ExportError(f"{name} has weights beyond float16's range (65504): export float32 or int8")
            # Subnormal halves (below 6.1e-5) become 0: the program widens only normal ones,
            # where the arithmetic stays fast.
            half[np.abs(half) < np.float16(2.0**-14)] = 0
            self.array(name, "charrnn_weight", [str(v) for v in order(half).view(np.uint16).ravel().tolist()])
            return f"{{{name}, NULL}}"
        self.floats(name, order(w))
        return f"{{{name}, NULL}}"

    def write_model(self, model: CharRNN) -> None:
        cfg = model.config
        rnn = model.rnn
        table = input_table(model) if self.input_table else None
        self.matrix("charrnn_embedding", model.embedding.weight if table is None else table, by_column=False)
        layers = []
        for l in range(cfg.layers):
            hh = self.matrix(f"charrnn_l{l}_hh", getattr(rnn, f"weight_hh_l{l}"))
            b_ih = getattr(rnn, f"bias_ih_l{l}").detach().cpu().float().numpy()
            b_hh = getattr(rnn, f"bias_hh_l{l}").detach().cpu().float().numpy()
            bias_hh = "NULL"
            if cfg.cell == "gru":
                self.floats(f"charrnn_l{l}_bias_hh", b_hh)
                bias_hh = f"charrnn_l{l}_bias_hh"
            if l == 0 and table is not None:
                layers.append(f"    {{{{NULL, NULL}}, {hh}, NULL, {bias_hh}, 0}}")
                continue
            ih = self.matrix(f"charrnn_l{l}_ih", getattr(rnn, f"weight_ih_l{l}"))
            self.floats(f"charrnn_l{l}_bias", b_ih if cfg.cell == "gru" else b_ih + b_hh)
            inputs = cfg.embed if l == 0 else cfg.hidden
            layers.append(f"    {{{ih}, {hh}, charrnn_l{l}_bias, {bias_hh}, {inputs}}}")
        decoder = self.matrix("charrnn_decoder_w", model.decoder.weight)
        self.floats("charrnn_decoder_bias", model.decoder.bias.detach().cpu().float().numpy())
        self.parts.append(
            "static const charrnn_layer charrnn_layers[CHARRNN_LAYERS] = {\n" + ",\n".join(layers) + "\n};"
        )
        self.parts.append(f"static const charrnn_matrix charrnn_decoder = {decoder};")

    def write_vocabulary(self, tokens: list[bytes], start_id: int) -> None:
        starts = np.cumsum([0] + [len(t) for t in tokens]).tolist()
        self.array("charrnn_token_bytes", "unsigned char", [str(b) for b in b"".join(tokens)])
        self.array("charrnn_token_start", "unsigned long", [f"{s}UL" for s in starts])
        codes = sorted((_code_of(t), i) for i, t in enumerate(tokens))
        self.array("charrnn_codes", "unsigned long", [f"{c}UL" for c, _ in codes])
        self.array("charrnn_code_ids", "int", [str(i) for _, i in codes])

    def text(self) -> str:
        size = " + ".join(f"sizeof {name}" for name in self.names)
        return "\n\n".join(self.parts) + f"\n\n#define CHARRNN_WEIGHT_BYTES ({size})\n"


def _token_bytes(vocab) -> list[bytes]:
    """Each id's bytes: a character's UTF-8, or a byte-level token's byte."""
    kind = getattr(vocab, "kind", "chars")
    if kind == "chars":
        return [c.encode("utf-8") for c in vocab.chars]
    if kind == "bytes":
        return list(vocab.token_bytes)
    raise ExportError(
        f"the C model reads characters or bytes, and this model's vocabulary is {kind.upper()} "
        f"(encoding a prompt needs {'its merges' if kind == 'bpe' else 'its tokenizer'}): export it as onnx or pt2 instead"
    )


def _code_of(token: bytes) -> int:
    """What the C program looks a token up by: a byte-level token's byte, else its code point."""
    return token[0] if len(token) == 1 else ord(token.decode("utf-8"))


def _start_id(vocab) -> int:
    """The id sampling starts from without a prime (a line start), as charrnn sample does."""
    return vocab.chars.index("\n") if "\n" in vocab.chars else -1


def _source_path(output: Path) -> Path:
    if output.suffix == ".c":
        directory, path = output.parent, output
    else:
        directory, path = output, output / SOURCE_NAME
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"cannot write into {directory}: it is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {directory}: {exc.strerror or exc}") from None
    return path


# ----------------------------------------------------------------------------- compiling


def compile_program(source: Path, program: Path, flags: tuple[str, ...] = ("-O2",), compiler: str | None = None) -> Path:
    """Compile ``source`` (with STRICT_FLAGS and ``flags``) into ``program``."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise ExportError("no C compiler found: install cc (gcc or clang) or set CC")
    command = [compiler, *STRICT_FLAGS, *flags, "-o", str(program), str(source), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:300])
        raise ExportError(f"{Path(compiler).name} could not compile {source}: {first}")
    return program


def run_program(program: Path, args: list[str], stdin: bytes = b"") -> str:
    done = subprocess.run([str(program), *args], input=stdin, capture_output=True)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise ExportError(f"the compiled C model failed: {message}")
    return done.stdout.decode("utf-8", "replace")


def program_logits(program: Path, text: bytes) -> np.ndarray:
    """The logits (T, V) the program gives after each character of ``text``."""
    lines = run_program(program, ["--logits"], text).splitlines()
    return np.array([[float(v) for v in line.split()] for line in lines], dtype=np.float64)


CHECK_DRAWN = 200  # characters drawn from the model for the check, after every id once


@torch.no_grad()
def _check_ids(model: CharRNN) -> list[int]:
    """Every id once, in order, so that each row of the embedding and the decoder is used;
    then CHECK_DRAWN ids drawn from the model itself (seeded), text like the text it makes,
    on which the cost of int8 or float16 weights is measured."""
    vocab_size = model.config.vocab_size
    ids = list(range(vocab_size))
    logits, _, state = model(torch.tensor([ids]))
    generator = torch.Generator().manual_seed(0)
    for _ in range(CHECK_DRAWN):
        next_id = int(torch.multinomial(torch.softmax(logits[0, -1].double(), -1), 1, generator=generator))
        ids.append(next_id)
        logits, _, state = model(torch.tensor([[next_id]]), state)
    return ids


def _nats_per_char(logits: torch.Tensor, ids: list[int], start: int) -> float:
    """Mean nats of ids[start + 1:] under the logits before each."""
    targets = torch.tensor(ids[start + 1 :])
    return float(torch.nn.functional.cross_entropy(logits[start:-1].double(), targets))


def _check(model: CharRNN, tokens: list[bytes], path: Path, quantize: str | None) -> str:
    compiler = find_compiler()
    if compiler is None:
        return "not compiled or checked: no C compiler found (install cc, gcc or clang, or set CC)"
    model = model.cpu().eval()
    ids = _check_ids(model)
    with tempfile.TemporaryDirectory(prefix="charrnn-c-") as work:
        program = compile_program(path, Path(work) / "model", ("-O1",), compiler)
        got = program_logits(program, b"".join(tokens[i] for i in ids))
    with torch.no_grad():
        expected, _, _ = model(torch.tensor([ids]))
    expected = expected[0].double()
    if got.shape != tuple(expected.shape):
        raise ExportError(f"the compiled C model gave logits of shape {got.shape}, expected {tuple(expected.shape)}")
    gap = float(np.abs(got - expected.numpy()).max())
    what = (
        f"compiled with {Path(compiler).name} -std=c99 -pedantic -Werror; logits within {gap:.2g} of the "
        f"checkpoint's over {len(ids)} characters (every one, then {CHECK_DRAWN} drawn from the checkpoint)"
    )
    if quantize is None:
        # Relative to the logits' size: float32 rounding grows with them (a trained tiny
        # model's reach 46, where PyTorch's own float32 logits are 4e-5 from float64's).
        allowed = FLOAT_TOLERANCE * max(1.0, float(expected.abs().max()))
        if not gap <= allowed:
            raise ExportError(f"the compiled C model's logits differ from the checkpoint's by {gap:.3g} (more than {allowed:.2g})")
        return what
    start = len(tokens)
    cost = _nats_per_char(torch.from_numpy(got), ids, start) - _nats_per_char(expected, ids, start)
    return f"{what}; {quantize} weights cost {cost:+.4f} nats per character on the {CHECK_DRAWN} drawn from the checkpoint"


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class CMeasurement:
    """The compiled program's size and speed at batch 1, and its score of a text."""

    flags: tuple[str, ...]
    program_bytes: int  # the executable as compiled with ``flags``
    weight_bytes: int  # the weights and vocabulary tables in it (``--info``)
    state_bytes: int  # one stream's state: all the writable memory a step uses
    seconds_per_char: float  # one step and one draw, the fastest of the repeats
    chars_per_second: float
    # The processor time of a step: below the wall clock's where other programs shared the core.
    processor_seconds_per_char: float
    nats: float | None = None  # of the text's characters after the first
    scored: int | None = None  # how many ids were scored
    characters: int | None = None  # characters of the text

    @property
    def bpc(self) -> float | None:
        """Bits per character of the text: bits per scored id, times ids per character (1 for
        a character vocabulary; a byte-level one has a byte per id)."""
        if self.nats is None or not self.scored or not self.characters:
            return None
        return self.nats / math.log(2) / self.scored * (self.scored + 1) / self.characters


def measure(
    source: Path,
    steps: int = 2000,
    text: str | None = None,
    repeats: int = 3,
    flags: tuple[str, ...] = ("-O3", "-march=native", "-ffp-contract=fast"),
) -> CMeasurement:
    """Compile ``source`` with ``flags`` (strict C99 as always) and time ``steps`` steps of
    generation at batch 1 (each a step and a draw at temperature 1), the fastest of
    ``repeats`` runs; with ``text``, also its score (``--score``): nats, and bits per
    character. ``-march=native`` is dropped where the compiler refuses it."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="charrnn-c-") as work:
        program = Path(work) / "model"
        try:
            compile_program(source, program, flags)
        except ExportError:
            if "-march=native" not in flags:
                raise
            flags = tuple(f for f in flags if f != "-march=native")
            compile_program(source, program, flags)
        info = dict(_info_line(line) for line in run_program(program, ["--info"]).splitlines())
        best = best_processor = math.inf
        for _ in range(repeats):
            words = run_program(program, ["--bench", str(steps), "--temperature", "1", "--seed", "1"]).split()
            best = min(best, float(words[words.index("seconds") + 1]) / steps)
            best_processor = min(best_processor, float(words[words.index("processor_seconds") + 1]) / steps)
        nats = scored = characters = None
        if text is not None:
            words = run_program(program, ["--score"], text.encode("utf-8")).split()
            nats = float(words[words.index("nats") + 1])
            scored = int(words[words.index("scored") + 1])
            characters = len(text)
        return CMeasurement(
            flags=flags,
            program_bytes=program.stat().st_size,
            weight_bytes=int(info["weights"]),
            state_bytes=int(info["state"]),
            seconds_per_char=best,
            chars_per_second=1.0 / best if best > 0 else math.inf,
            processor_seconds_per_char=best_processor,
            nats=nats,
            scored=scored,
            characters=characters,
        )


def _info_line(line: str) -> tuple[str, str]:
    key, _, rest = line.partition(":")
    return key.strip(), rest.split()[0] if rest.split() else ""
