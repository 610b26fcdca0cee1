"""charrnn export --format torchscript: the TorchScript file, loaded by torch alone, gives the checkpoint's
next-character probabilities and carries its vocabulary."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.model.loading import load_model
from tests.conftest import REPO, TINY_TRAIN, small_text, train_small_run

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
runner = CliRunner()
PRIME = "[JULIET] Good night, good "


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    return train_small_run(
        tmp_path_factory.mktemp("gru"),
        {"cell": "gru", "layers": 2, "hidden": 24, "embed": 8, "dropout": 0.1},
        {**TINY_TRAIN, "max_steps": 30},
        sample_chars=0,
    )


def reference_probs(run, text):
    model, vocab, _ = load_model(run, device="cpu")
    with torch.no_grad():
        logits, _, _ = model(torch.tensor([vocab.encode(text).tolist()]))
    return torch.softmax(logits[0], dim=-1)  # (T, V): the next character after every prefix


@pytest.mark.parametrize("which", ["lstm", "gru"])
def test_export_gives_the_checkpoints_probabilities(which, trained_run, gru_run, tmp_path):
    run = trained_run if which == "lstm" else gru_run
    out = tmp_path / f"{which}.pt"
    result = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "TorchScript" in result.stderr and result.stdout == ""

    m = torch.jit.load(str(out))
    expected = reference_probs(run, PRIME)
    assert torch.allclose(m.next_char_probs(PRIME), expected[-1], atol=1e-6)
    # Step by step with the carried state, as a user would sample: the same at every position.
    ids = m.encode(PRIME)
    state = m.initial_state(1)
    with torch.no_grad():
        for t, char_id in enumerate(ids):
            logits, state = m(torch.tensor([[char_id]]), state)
            assert torch.allclose(torch.softmax(logits[0, -1], -1), expected[t], atol=1e-5)
    assert m.decode(ids) == PRIME


def test_export_runs_without_charrnn_and_embeds_the_vocabulary(trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.stderr
    script = (
        "import json, sys, torch\n"
        "extra = {'charrnn.json': '', 'tokenizer.json': ''}\n"
        f"m = torch.jit.load({str(tmp_path / 'm.pt')!r}, _extra_files=extra)\n"
        "meta = json.loads(extra['charrnn.json'])\n"
        "assert 'charrnn' not in sys.modules\n"
        "p = m.next_char_probs('[ROMEO]')\n"
        "print(json.dumps({'vocab': meta['vocab'], 'sum': float(p.sum()), 'n': p.numel(),"
        " 'tok': json.loads(extra['tokenizer.json'])['model']['vocab']}))\n"
        "m.encode('Q')\n"
    )
    # Run from an empty directory so that the charrnn source tree is not importable either.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    facts = json.loads(done.stdout)
    _, vocab, _ = load_model(trained_run, device="cpu")
    assert facts["vocab"] == list(vocab.chars) and facts["n"] == len(vocab)
    assert abs(facts["sum"] - 1) < 1e-5
    assert facts["tok"] == {**{c: i for i, c in enumerate(vocab.chars)}, "[UNK]": len(vocab)}
    assert done.returncode != 0 and "character not in the vocabulary: Q" in done.stderr


def test_export_default_path_and_bad_checkpoint(trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), "--best", "--format", "torchscript"])
    assert result.exit_code == 0, result.stderr
    assert (trained_run / "model.torchscript.pt").is_file()
    bad = runner.invoke(app, ["export", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "no such checkpoint" in bad.stderr and "Traceback" not in bad.stderr


# Accented Latin, CJK, and an emoji outside the Basic Multilingual Plane (4 UTF-8 bytes).
UNICODE_LINE = "Grüße aus Köln 😀 und 東京 — ça va?\n"


@pytest.fixture(scope="module")
def unicode_run(tmp_path_factory):
    from charrnn.training.runs import RunRequest, prepare_run, train_run

    root = tmp_path_factory.mktemp("unicode")
    corpus = root / "verse.txt"
    corpus.write_text(small_text(40) + UNICODE_LINE * 20, encoding="utf-8")
    run = prepare_run(RunRequest(
        sources=[str(corpus)], out=root / "run", device="cpu",
        model={"cell": "lstm", "layers": 1, "hidden": 24, "embed": 8, "dropout": 0.0},
        train={**TINY_TRAIN, "max_steps": 20, "eval_every": 10},
    ))
    train_run(run, sample_chars=0)
    return root / "run"


# Runs as a user of the exported file would: torch alone, charrnn neither imported nor importable.
UNICODE_SCRIPT = """
import json, sys, torch
path, texts, prompt = json.loads(sys.argv[1])
m = torch.jit.load(path)
assert 'charrnn' not in sys.modules

def error(call, *args):
    try:
        call(*args)
    except Exception as exc:
        return str(exc)
    return None

ids = [m.encode(t) for t in texts]
print(json.dumps({
    'ids': ids,
    'decoded': [m.decode(i) for i in ids],
    'probs': m.next_char_probs(prompt).tolist(),
    'unknown': error(m.encode, 'Köln Ж'),
    'bad_id': error(m.decode, [0, 10**6]),
    'empty': error(m.next_char_probs, ''),
}))
"""


def test_export_encodes_decodes_and_predicts_any_character_of_the_vocabulary(unicode_run, tmp_path):
    out = tmp_path / "m.pt"
    # The real CLI with every warning shown: TorchScript's deprecation warnings stay off stderr.
    done = subprocess.run(
        [sys.executable, "-W", "always", "-m", "charrnn", "export", str(unicode_run), "--format", "torchscript", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    # Two lines: what was written (with its size), and the check run on it.
    assert done.stdout == "" and done.stderr.count("\n") == 2 and "TorchScript" in done.stderr
    assert "check: max |Δp|" in done.stderr
    assert "Warning" not in done.stderr

    _, vocab, _ = load_model(unicode_run, device="cpu")
    assert {"ü", "ß", "ç", "東", "京", "—", "😀"} <= set(vocab.chars)
    texts = ["ç", "Grüße", "東京", "😀", "naïve café — 東京 😀!", UNICODE_LINE]
    prompt = "Grüße aus 東京 😀"
    done = subprocess.run(
        [sys.executable, "-c", UNICODE_SCRIPT, json.dumps([str(out), texts, prompt])],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["ids"] == [vocab.encode(t).tolist() for t in texts]
    assert facts["decoded"] == texts
    expected = reference_probs(unicode_run, prompt)[-1]
    assert len(facts["probs"]) == len(vocab)
    assert torch.allclose(torch.tensor(facts["probs"]), expected, atol=1e-5)
    # An unknown character is named, with its code point (it may print as nothing).
    assert "character not in the vocabulary: Ж (U+0416)" in facts["unknown"]
    assert f"is not in the vocabulary (ids 0..{len(vocab) - 1})" in facts["bad_id"]
    assert "next_char_probs needs at least one character" in facts["empty"]
