"""`charrnn gradients` and `charrnn inspect` on real runs and on models whose weights are set by
hand, so that the right answer is known without the code under test."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from io import StringIO

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.inspect.gradients import compare_cells, decline
from charrnn.inspect.neurons import find_units
from charrnn.inspect.replayed import replay_text
from charrnn.inspect.saturation import gate_saturation
from charrnn.model.network import CharRNN, ModelConfig
from tests.conftest import REPO, TINY_MODEL, TINY_TRAIN, small_text, train_small_run

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def cell_runs(tmp_path_factory) -> dict:
    """A GRU and a plain RNN run, a few real steps each (their gates or lack of them matter here,
    not what they learned)."""
    runs = {}
    for cell in ("gru", "rnn"):
        root = tmp_path_factory.mktemp(cell)
        runs[cell] = train_small_run(root, {**TINY_MODEL, "cell": cell}, {**TINY_TRAIN, "max_steps": 3, "eval_every": 3})
    return runs


# ------------------------------------------------------------------------------ gradients


def test_plain_rnn_gradient_falls_faster_than_an_lstm_with_forget_bias_1_at_initialisation(shakespeare):
    text = shakespeare.read_text(encoding="utf-8")[:61]
    chars = sorted(set(text))
    ids = np.array([chars.index(ch) for ch in text])
    flows = {f.label: f for f in compare_cells(ModelConfig(len(chars), "lstm", 2, 64, 32, 0.0), ids, seed=0)}
    rnn, lstm1, lstm0 = flows["plain RNN"], flows["LSTM, forget bias 1 (charrnn)"], flows["LSTM, forget bias 0"]
    fall = {name: f.inputs[50] / f.inputs[0] for name, f in flows.items()}
    assert fall["plain RNN"] < 1e-6 * fall["LSTM, forget bias 1 (charrnn)"], fall
    assert fall["LSTM, forget bias 0"] < 1e-3 * fall["LSTM, forget bias 1 (charrnn)"], fall
    assert rnn.inputs[50] < lstm1.inputs[50] and lstm0.inputs[50] < lstm1.inputs[50]


def test_decline_names_the_power_of_ten_and_the_step_that_reaches_it():
    norms = 10.0 ** -np.arange(0, 30, 0.5)  # ten times smaller every two steps
    assert decline(norms).startswith("falls by 10^29 within 58 steps")
    assert decline(np.array([1.0, 0.5, 0.3])).startswith("stays within a factor of 10")
    assert "exactly 0" in decline(np.array([1.0, 1e-3, 0.0, 0.0]))


def test_gradients_command_shows_trained_and_initial_models_and_draws_a_png(trained_run, text_file, tmp_path):
    png = tmp_path / "flow.png"
    result = cli("gradients", trained_run, "--text", text_file, "--steps", 40, "--png", png)
    assert result.exit_code == 0, result.output
    summaries = [l for l in result.stdout.splitlines() if ": the gradient " in l]
    assert len(summaries) == 2 and summaries[0].startswith("trained (step 400)") and summaries[1].startswith("at initialisation")
    assert "k=39" in result.stdout and "h, layer 1" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradients_compare_draws_four_cells(trained_run, text_file):
    result = cli("gradients", trained_run, "--text", text_file, "--steps", 30, "--compare")
    assert result.exit_code == 0, result.output
    for label in ("plain RNN", "GRU", "LSTM, forget bias 1 (charrnn)", "LSTM, forget bias 0"):
        assert f"{label}: the gradient " in result.stdout


@pytest.mark.slow
def test_without_matplotlib_the_terminal_view_stays_and_one_line_says_why(trained_run, text_file, tmp_path):
    probe = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from charrnn.cli.app import main\n"
        "sys.argv = ['charrnn', *sys.argv[1:]]\n"
        "main()\n"
    )
    args = ["gradients", str(trained_run), "--text", str(text_file), "--steps", "20", "--png", str(tmp_path / "g.png")]
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "needs matplotlib" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "at initialisation: the gradient" in result.stdout and not (tmp_path / "g.png").exists()


# ------------------------------------------------------------------------------ gates


def _lstm(vocab: int, hidden: int, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell="lstm", layers=2, hidden=hidden, embed=8, dropout=0.0)).eval()


def test_units_forced_saturated_are_saturated_on_every_step():
    model = _lstm(12, 10)
    h = 10
    with torch.no_grad():
        for layer, (gate, unit, bias) in enumerate([(1, 3, 40.0), (0, 5, -40.0)]):  # forget open, input shut
            row = gate * h + unit
            getattr(model.rnn, f"weight_ih_l{layer}")[row].zero_()
            getattr(model.rnn, f"weight_hh_l{layer}")[row].zero_()
            getattr(model.rnn, f"bias_hh_l{layer}")[row] = 0.0
            getattr(model.rnn, f"bias_ih_l{layer}")[row] = bias
    saturation = gate_saturation(replay_text(model, np.arange(300) % 12))
    assert saturation.right["f"][0, 3] == 1.0 and saturation.left["f"][0, 3] == 0.0
    assert saturation.left["i"][1, 5] == 1.0 and saturation.right["i"][1, 5] == 0.0
    free = saturation.left["o"][0] + saturation.right["o"][0]
    assert (free < 1.0).any()  # the units left alone are not all saturated


def test_gru_gates_work_and_a_plain_rnn_has_none(cell_runs, text_file, tmp_path):
    result = cli("inspect", cell_runs["gru"], "--text", text_file, "--gates", "--png", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert "reset gate" in result.stdout and "update gate" in result.stdout
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    one_line_error(cli("inspect", cell_runs["rnn"], "--text", text_file, "--gates"), 2, "a plain RNN has no gates")


def test_lstm_gates_table_covers_every_layer_and_gate(trained_run, text_file):
    result = cli("inspect", trained_run, "--text", text_file, "--gates", "--chars", 800)
    assert result.exit_code == 0, result.output
    rows = [l for l in result.stdout.splitlines() if " gate " in l and " of 32 " in l]
    assert len(rows) == 6, result.stdout  # 2 layers x input, forget, output


# ------------------------------------------------------------------------------ units


def _quote_text(repeats: int = 40) -> str:
    rng = np.random.default_rng(0)
    words = ["he", "said", "so", "and", "then", "we", "went", "home", "now", "bye", "well"]
    parts = []
    for _ in range(repeats):
        parts.append(" ".join(rng.choice(words, rng.integers(2, 7))))
        parts.append(' "' + " ".join(rng.choice(words, rng.integers(1, 6))) + '" ')
    return "".join(parts)


def _planted_quote_model(chars: list[str], unit: int) -> CharRNN:
    """A one-layer LSTM whose unit ``unit`` flips its cell between -1 and +1 at every double
    quote: g = tanh(3 - 10 h) reads the sign of its own h, and the input and forget gates let
    it in on a quote only. The other units keep their random initial weights."""
    vocab, hidden = len(chars), 12
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab, cell="lstm", layers=1, hidden=hidden, embed=vocab, dropout=0.0)).eval()
    quote = chars.index('"')
    i, f, g, o = (k * hidden + unit for k in range(4))
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(vocab))
        w_ih, w_hh, b_ih, b_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0, model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
        for row in (i, f, g, o):
            w_ih[row].zero_(), w_hh[row].zero_(), b_ih.__setitem__(row, 0.0), b_hh.__setitem__(row, 0.0)
        w_ih[i].fill_(-10.0), w_ih[i, quote].fill_(10.0)
        w_ih[f].fill_(10.0), w_ih[f, quote].fill_(-10.0)
        w_hh[g, unit], b_ih[g] = -10.0, 3.0
        b_ih[o] = 10.0
    return model


def test_the_search_finds_a_planted_quote_unit_first():
    text = _quote_text()
    chars = sorted(set(text))
    ids = np.array([chars.index(ch) for ch in text])
    model = _planted_quote_model(chars, unit=7)
    top, absent = find_units(replay_text(model, ids), list(text), "h", top=5)
    assert (top[0].feature, top[0].layer, top[0].unit) == ("inside quotes", 0, 7), top
    assert top[0].correlation > 0.9
    assert "indentation" in absent  # no line of this text is indented


def test_find_on_a_trained_model_lists_units_with_correlations(trained_run, text_file):
    result = cli("inspect", trained_run, "--text", text_file, "--find", "--top", 4)
    assert result.exit_code == 0, result.output
    ranks = [l for l in result.stdout.splitlines() if l.strip("│ ").split(" ")[0] in {"1", "2", "3", "4"}]
    assert len(ranks) == 4, result.stdout
    assert "inside brackets" in result.stdout and "position in line" in result.stdout
    assert "inside quotes" in result.stdout  # not in this text: said so


class _Spans(HTMLParser):
    """The text inside the <pre>, span by span; fails on tags left open or closed twice."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.spans: list[str] = []
        self.loose: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta",):
            self.open.append(tag)
        if tag == "span" and "pre" in self.open:
            self.spans.append("")

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open)
        self.open.pop()

    def handle_data(self, data):
        if self.open[-2:] == ["pre", "span"]:
            self.spans[-1] += data
        elif self.open and self.open[-1] == "pre":
            self.loose.append(data)


def test_neuron_html_is_well_formed_and_holds_every_character_once(trained_run, tmp_path):
    text = small_text(3)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    page = tmp_path / "unit.html"
    result = cli("inspect", trained_run, "--text", path, "--neuron", "1:5", "--html", page)
    assert result.exit_code == 0, result.output
    parser = _Spans()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [] and parser.loose == []
    assert parser.spans == list(text)
    assert "<script" not in page.read_text(encoding="utf-8") and "http" not in page.read_text(encoding="utf-8")
    # Without colour (not a terminal): each line of text, then a digit under each character.
    lines = result.stdout.splitlines()
    first = text.splitlines()[0]
    at = lines.index(first)
    assert len(lines[at + 1]) == len(first) and set(lines[at + 1]) <= set("0123456789")


def test_neuron_in_colour_on_a_terminal(model_and_vocab):
    from rich.console import Console

    from charrnn.cli.inspect_views import show_neuron

    buffer = StringIO()
    show_neuron(Console(file=buffer, force_terminal=True, color_system="truecolor"), list("ab\ncd"), [-1.0, 0.0, 0.5, 1.0, 0.2])
    shown = buffer.getvalue()
    assert "\x1b[" in shown and "48;2;255;255;255" in shown  # white behind the value 0
    assert "48;2;0;0;255" in shown and "48;2;255;0;0" in shown  # blue at -1, red at +1


def test_dump_states_matches_the_fused_model_and_loads_without_pickle(trained_run, model_and_vocab, text_file, tmp_path):
    model, vocab = model_and_vocab
    target = tmp_path / "states.npz"
    result = cli("inspect", trained_run, "--text", text_file, "--chars", 300, "--dump-states", target)
    assert result.exit_code == 0, result.output
    with np.load(target, allow_pickle=False) as npz:
        assert npz["h"].shape == (2, 300, 32) and npz["h"].dtype == np.float32
        assert npz["c"].shape == (2, 300, 32) and npz["gate_f"].shape == (2, 300, 32)
        assert "".join(npz["text"]) == text_file.read_text(encoding="utf-8")[:300]
        assert str(npz["cell"]) == "lstm"
        ids = torch.as_tensor(npz["ids"]).unsqueeze(0)
        with torch.no_grad():
            out, (h_n, c_n) = model.rnn(model.embedding(ids))
        np.testing.assert_allclose(npz["h"][-1], out[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(npz["c"][:, -1], c_n[:, 0].numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("spec, words", [
    ("2:0", ["layer 2 is out of range", "0..1"]),
    ("0:32", ["unit 32 is out of range", "0..31"]),
    ("-1:3", ["layer -1 is out of range"]),
    ("seven", ["give LAYER:UNIT"]),
])  # fmt: skip
def test_neuron_index_out_of_range(trained_run, text_file, spec, words):
    one_line_error(cli("inspect", trained_run, "--text", text_file, "--neuron", spec), 2, *words)


def test_text_with_unseen_characters_empty_text_and_nothing_asked(trained_run, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("ROMEO: ~Zq~", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    for command in (["inspect", trained_run, "--find"], ["gradients", trained_run]):
        one_line_error(cli(*command, "--text", unseen), 1, "vocabulary:", "'~'", "not in the model's vocabulary")
        one_line_error(cli(*command, "--text", empty), 1, "file is empty")
    one_line_error(cli("inspect", trained_run, "--text", unseen), 2, "choose what to show")
    one_line_error(cli("inspect", trained_run, "--find", "--html", tmp_path / "x.html"), 2, "give it with --neuron")
    one_line_error(cli("inspect", trained_run, "--find", "--state", "q"), 2, "--state must be h or c")
