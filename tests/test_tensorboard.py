import json

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app

TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]


def scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_events_mirror_the_metrics_log_across_a_resume(text_file, tmp_path):
    pytest.importorskip("tensorboard")
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["--eval-every", "10", "--eval-sample-chars", "0", "--tensorboard"]
    result = runner.invoke(app, ["train", str(text_file), "--out", str(run), "--max-steps", "20", *TINY, *common])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "30", *common])
    assert result.exit_code == 0, result.stderr

    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    val = scalars(run / "tensorboard", "val/bpc")
    assert [step for step, _ in val] == [10, 20, 30]
    assert [round(v, 4) for _, v in val] == [round(e["val_bpc"], 4) for e in evals]
    assert [step for step, _ in scalars(run / "tensorboard", "train/loss_bits")] == list(range(1, 31))
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    recurrent = scalars(run / "tensorboard", "grad_norm/weight_hh_l0")
    assert [round(v, 6) for _, v in recurrent] == [round(s["grad_norms"]["weight_hh_l0"], 6) for s in steps if s["event"] == "step"]
    assert [step for step, _ in scalars(run / "tensorboard", "grad_norm/clip_share")] == list(range(1, 31))
