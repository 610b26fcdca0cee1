"""Gradients during training: per-group norms and clipping in metrics.jsonl, TensorBoard and
`charrnn plot --gradients`; the once-only warnings when gradients explode or vanish; all from
real training on small text."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.training.gradient_stats import CLIP_WINDOW, VANISHING_STEPS
from tests.conftest import TINY_MODEL, TINY_TRAIN, small_text

runner = CliRunner()
TINY = ["--layers", "2", "--hidden", "24", "--embed", "8", "--batch-size", "4", "--seq-len", "24", "--dropout", "0"]
GROUPS = {"embedding", "weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1", "decoder"}


def records(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def tiny_trainer(grad_clip: float, grad_stats: bool = True, cell: str = "lstm"):
    from charrnn.data.vocab import Vocab
    from charrnn.model.network import CharRNN, ModelConfig
    from charrnn.training.trainer import TrainConfig, Trainer

    text = small_text(40)
    vocab = Vocab.from_text(text)
    torch.manual_seed(3)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell=cell, **TINY_MODEL))
    config = TrainConfig(**{**TINY_TRAIN, "grad_clip": grad_clip, "max_steps": 100, "seed": 3})
    return Trainer(model, config, vocab.encode(text), None, torch.device("cpu"), grad_stats=grad_stats)


def test_group_norms_are_the_norms_of_the_gradients_the_step_applied():
    trainer = tiny_trainer(grad_clip=0)  # no clipping: the step applies the gradients as they are
    stats = trainer.train_step()
    grads = {name: p.grad for name, p in trainer.model.named_parameters()}
    assert set(stats.grad_norms) == GROUPS and not stats.clipped and stats.clip_share == 0

    def norm(*names):
        return math.sqrt(sum(float(torch.sum(grads[n].double() ** 2)) for n in names))

    expected = {
        "embedding": norm("embedding.weight"),
        "decoder": norm("decoder.weight", "decoder.bias"),
        **{f"weight_{kind}_l{k}": norm(f"rnn.weight_{kind}_l{k}") for kind in ("ih", "hh") for k in (0, 1)},
    }
    for group, value in expected.items():
        assert stats.grad_norms[group] == pytest.approx(value, rel=1e-5), group
    assert stats.grad_norm == pytest.approx(norm(*grads), rel=1e-5)

    clipping = tiny_trainer(grad_clip=1e-3)
    stats = clipping.train_step()
    assert stats.clipped and stats.clip_share == 1
    total = math.sqrt(sum(float(torch.sum(p.grad.double() ** 2)) for p in clipping.model.parameters()))
    assert total == pytest.approx(1e-3, rel=1e-4)  # what was left after the clip


def test_the_statistics_change_nothing_the_model_learns():
    # Their clip is computed from the same per-tensor norms as clip_grad_norm_: bit-identical.
    on, off = tiny_trainer(grad_clip=0.05), tiny_trainer(grad_clip=0.05, grad_stats=False)
    for _ in range(8):
        a, b = on.train_step(), off.train_step()
        assert a.loss == b.loss and a.grad_norm == b.grad_norm
    assert any(on.gradient_watch.recent_clips) and b.grad_norms == {}
    for (name, p), q in zip(on.model.named_parameters(), off.model.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_exploding_gradients_are_told_once_and_not_again_after_resume(text_file, tmp_path):
    run = tmp_path / "run"
    # A clip far under any gradient's norm: clipping acts on every step.
    common = ["--grad-clip", "0.001", "--eval-every", "60", "--eval-chars", "400", "--eval-sample-chars", "0"]
    result = runner.invoke(app, ["train", str(text_file), "--out", str(run), "--max-steps", "120", *TINY, *common])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("gradients explode") == 1
    assert f"warning: step {CLIP_WINDOW}: gradients explode: clipping acted on {CLIP_WINDOW} of the last" in result.stderr
    (warning,) = records(run, "warning")
    assert warning["kind"] == "exploding" and warning["step"] == CLIP_WINDOW
    steps = records(run, "step")
    assert all(s["clipped"] and set(s["grad_norms"]) == GROUPS for s in steps)
    assert steps[9]["clip_share"] == 1.0

    resumed = runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "150", *common])
    assert resumed.exit_code == 0, resumed.stderr
    assert "gradients explode" not in resumed.stderr
    assert len(records(run, "warning")) == 1 and len(records(run, "step")) == 150

    chart = runner.invoke(app, ["plot", str(run), "--terminal", "--gradients", "--height", "8"])
    assert chart.exit_code == 0, chart.stderr
    assert "clipping acted on 100% of the last 100 steps at step 150" in chart.stdout
    assert "0 weight_hh_l0" in chart.stdout and "gradient norm (smoothed, log scale)" in chart.stdout
    picture = runner.invoke(app, ["plot", str(run), "--gradients", "--out", str(tmp_path / "g.png")])
    assert picture.exit_code == 0, picture.stderr
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_normal_run_warns_of_nothing(trained_run):
    steps = records(trained_run, "step")
    assert len(steps) == 400 and records(trained_run, "warning") == []
    assert all(set(s["grad_norms"]) == GROUPS for s in steps)
    # The figures the thresholds were set against: far from both.
    assert max(s["clip_share"] for s in steps) < 0.25
    assert min(s["grad_norms"]["weight_hh_l0"] / s["grad_norm"] for s in steps) > 1e-3


@pytest.mark.slow
def test_a_layer_with_its_input_gates_shut_is_told_to_vanish(tmp_path):
    from charrnn.training.runs import RunRequest, prepare_run, train_run
    from charrnn.training.trainer import Callback

    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    train = {**TINY_TRAIN, "max_steps": VANISHING_STEPS + 20, "eval_every": 1000}
    run = prepare_run(RunRequest(sources=[str(corpus)], out=tmp_path / "run", model=dict(TINY_MODEL), train=train, device="cpu"))
    hidden = run.model.config.hidden
    with torch.no_grad():
        # Input gate (the first quarter of the LSTM's bias) shut: layer 0's cells stay empty,
        # its output is ~0, and its weights get next to no gradient; layer 1 learns on.
        run.model.rnn.bias_ih_l0[:hidden].fill_(-15.0)

    class Heard(Callback):
        warnings = []

        def on_warning(self, trainer, warning):
            self.warnings.append(warning)

    train_run(run, [Heard()], sample_chars=0)
    (warning,) = Heard.warnings
    assert warning.kind == "vanishing:weight_hh_l0" and warning.step == VANISHING_STEPS
    assert "gradients vanish in layer 0" in warning.message and "--cell" not in warning.message
    logged = records(tmp_path / "run", "warning")
    assert [(w["step"], w["kind"]) for w in logged] == [(VANISHING_STEPS, "vanishing:weight_hh_l0")]


def test_plot_gradients_of_a_log_without_them_is_one_clear_line(trained_run, tmp_path):
    # A log written before the statistics existed: the same records without their fields.
    old = tmp_path / "metrics.jsonl"
    kept = []
    for line in (trained_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for key in ("grad_norms", "clipped", "clip_share"):
            record.pop(key, None)
        kept.append(json.dumps(record))
    old.write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["plot", str(old), "--terminal", "--gradients"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "no gradient statistics in metrics.jsonl" in result.stderr and "Traceback" not in result.stderr
    assert runner.invoke(app, ["plot", str(old), "--terminal"]).exit_code == 0


def test_bench_times_the_statistics_on_and_off_in_the_same_run(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app, ["bench", "--preset", "tiny", "--no-memory", "--no-sampling", "--device", "cpu", "--threads", "1",
              "--batch-size", "4", "--seq-len", "16", "--grad-stats-cost", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "gradient statistics: training steps with them off and on" in result.stdout
    row = json.loads(out.read_text())["training"][0]
    assert row["grad_stats_pairs"] == 30
    assert row["grad_stats_best_ratio"] == pytest.approx(row["grad_stats_on_step_s"] / row["grad_stats_off_step_s"])
    assert 0.5 < row["grad_stats_median_ratio"] < 2
