"""The unigram baseline (run header, eval), the warning for a run stuck near it, and the
decoder bias that starts a model at it."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.data.unigram import unigram_bpc
from tests.conftest import TINY_MODEL, TINY_TRAIN, small_text

runner = CliRunner()
# 300 steps: the first evaluation the warning looks at (STALL_AFTER_STEPS).
STALL_RUN = ["--layers", "2", "--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "32",
             "--max-steps", "300", "--eval-every", "300", "--eval-sample-chars", "0", "--threads", "1"]


def entropy_by_hand(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def test_unigram_bpc_is_the_entropy_of_the_frequencies():
    # "aab": p = 2/3, 1/3 -> H = log2(3) - 2/3
    assert unigram_bpc(np.array([0, 0, 1])) == pytest.approx(math.log2(3) - 2 / 3, abs=1e-12)
    assert unigram_bpc(np.array([5, 5, 5, 5])) == 0.0
    assert unigram_bpc(np.array([0, 1, 2, 3]), tokens_per_char=0.5) == pytest.approx(1.0)
    assert unigram_bpc(np.array([], dtype=np.int64)) is None


def test_train_header_and_eval_report_the_baseline(tmp_path):
    text = small_text()
    corpus = tmp_path / "verse.txt"
    corpus.write_text(text, encoding="utf-8")
    validation = text[len(text) - int(len(text) * 0.1):]  # the default --val-frac 0.1, at the end
    result = runner.invoke(app, ["train", str(corpus), "--out", str(tmp_path / "run"), *STALL_RUN[:10],
                                 "--max-steps", "5", "--eval-every", "5", "--eval-sample-chars", "0"])
    assert result.exit_code == 0, result.stderr
    shown = float(re.search(r"unigram baseline: ([0-9.]+) bpc on the validation text", result.stderr)[1])
    assert shown == pytest.approx(entropy_by_hand(validation), abs=6e-4)

    other = tmp_path / "other.txt"
    other.write_text("ROMEO, ROMEO! night.\n" * 3, encoding="utf-8")
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), str(other)])
    assert result.exit_code == 0, result.stderr
    shown = float(re.search(r"unigram baseline ([0-9.]+) bpc", result.stdout)[1])
    assert shown == pytest.approx(entropy_by_hand(other.read_text(encoding="utf-8")), abs=6e-5)


@pytest.mark.parametrize("lr, learns", [("30", False), ("5e-3", True)])
def test_stall_warning_fires_once_when_the_model_cannot_learn_and_never_when_it_does(tmp_path, lr, learns):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    # 30 is thousands of times too high: every step throws the LSTM into saturation and
    # validation ends above the 4.9 bpc baseline (12.5); 5e-3 ends near 1 bpc.
    result = runner.invoke(app, ["train", str(corpus), "--out", str(tmp_path / "run"), *STALL_RUN, "--lr", lr])
    assert result.exit_code == 0, result.stderr
    best = float(re.search(r"best val ([0-9.]+) bpc", result.stderr)[1])
    if learns:
        assert "warning:" not in result.stderr and best < 2.0
        return
    assert result.stderr.count("unigram baseline of") == 1 and best > 4.4
    warning = next(line for line in result.stderr.splitlines() if "unigram baseline of" in line)
    assert warning.startswith("charrnn: warning: validation is") and "--lr 7.5" in warning


def test_a_new_model_starts_at_the_training_text_frequencies(tmp_path):
    from charrnn.training.runs import RunRequest, prepare_run

    text = small_text()
    corpus = tmp_path / "verse.txt"
    corpus.write_text(text, encoding="utf-8")
    run = prepare_run(RunRequest(sources=[str(corpus)], out=tmp_path / "run", model=dict(TINY_MODEL),
                                 train={**TINY_TRAIN, "max_steps": 1}, device="cpu"))
    training_text = text[: len(run.corpus.train)]
    counts = Counter(training_text)
    total = len(training_text) + len(run.vocab)
    expected = [math.log((counts.get(ch, 0) + 1) / total) for ch in run.vocab.chars]
    assert run.model.decoder.bias.detach().double().numpy() == pytest.approx(expected, abs=1e-5)
    # So the untrained model already scores the validation text near the baseline, far below
    # the uniform guess of log2(V) bits.
    val_bpc = run.trainer.evaluate(run.trainer.val_ids) / math.log(2)
    assert abs(val_bpc - run.unigram_bpc) < 0.3 < math.log2(len(run.vocab)) - val_bpc
