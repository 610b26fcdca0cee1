"""charrnn export: the TorchScript file, loaded by torch alone, gives the checkpoint's
next-character probabilities and carries its vocabulary."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.runs import load_model
from tests.conftest import TINY_TRAIN, train_small_run

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
    result = runner.invoke(app, ["export", str(run), "--out", str(out)])
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
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(tmp_path / "m.pt")])
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
    assert facts["tok"] == {c: i for i, c in enumerate(vocab.chars)}
    assert done.returncode != 0 and "character not in the vocabulary: Q" in done.stderr


def test_export_default_path_and_bad_checkpoint(trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), "--best"])
    assert result.exit_code == 0, result.stderr
    assert (trained_run / "model.torchscript.pt").is_file()
    bad = runner.invoke(app, ["export", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "no such checkpoint" in bad.stderr and "Traceback" not in bad.stderr
