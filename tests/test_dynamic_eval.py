"""Dynamic evaluation (`eval --dynamic`, `sample --adapt`): the update against a loop written
here from the paper's formula, scores that never see their own segment or a later one, the
static figure and the checkpoint left as they were, every cell and vocabulary kind, refusals."""

from __future__ import annotations

import hashlib
import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.conftest import REPO, small_text

runner = CliRunner()
FIGURES = re.compile(r"^static (\d+\.\d+) bpc, dynamic (\d+\.\d+) bpc \(([-+]\d+\.\d+)\) over ([\d,]+) characters")
ADAPTED = re.compile(r"(\d+\.\d+) bpc before, (\d+\.\d+) while adapting \([-+]\d+\.\d+\), (\d+\.\d+) after")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tiny_model(cell: str = "lstm", vocab: int = 11, seed: int = 0):
    from charrnn.model.network import CharRNN, ModelConfig

    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=2, hidden=12, embed=6, dropout=0.0)).eval()


def random_ids(n: int, vocab: int = 11, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int64)


def reference_stats(model, ids, seq, batch):
    """RMS of the training gradients, written out: ``batch`` rows of ``(len - 1) // batch``
    inputs, walked in windows of ``seq`` with the state carried, every full window counted."""
    params = dict(model.named_parameters())
    n = (len(ids) - 1) // batch
    rows_in = torch.tensor(ids[: batch * n].reshape(batch, n))
    rows_out = torch.tensor(ids[1 : batch * n + 1].reshape(batch, n))
    squares = {k: torch.zeros_like(p) for k, p in params.items()}
    state, windows = None, n // seq
    for w in range(windows):
        x, y = rows_in[:, w * seq : (w + 1) * seq], rows_out[:, w * seq : (w + 1) * seq]
        out, state = model.rnn(model.embedding(x), state)
        loss = F.cross_entropy(model.decoder(out).reshape(-1, model.config.vocab_size), y.reshape(-1))
        grads = torch.autograd.grad(loss, list(params.values()))
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        for (k, _), g in zip(params.items(), grads):
            squares[k] += g * g
    return {k: torch.sqrt(s / windows) for k, s in squares.items()}


def reference_dynamic(model, ids, rms, lr, decay, eps, seq):
    """Krause et al. 2018, section 5, written directly: score a segment, then
    theta += decay * min(RMS / mean RMS, 1 / decay) * (theta0 - theta) - lr * g / (RMS + eps).
    Returns each segment's total nats and the final weights."""
    names = list(rms)
    theta = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    theta0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    mean_rms = sum(r.mean().item() for r in rms.values()) / len(rms)
    losses, state = [], None
    for start in range(0, len(ids) - 1, seq):
        end = min(start + seq, len(ids) - 1)
        x, y = torch.tensor(ids[start:end])[None], torch.tensor(ids[start + 1 : end + 1])
        out, state = _forward(model, theta, x, state)
        loss = F.cross_entropy(out.reshape(-1, model.config.vocab_size), y)
        losses.append(loss.item() * len(y))
        grads = torch.autograd.grad(loss, [theta[k] for k in names])
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        with torch.no_grad():
            for k, g in zip(names, grads):
                rate = torch.clamp(rms[k] / mean_rms, max=1.0 / decay) if decay > 0 else torch.zeros_like(rms[k])
                theta[k] += decay * rate * (theta0[k] - theta[k]) - lr * g / (rms[k] + eps)
    return losses, {k: v.detach() for k, v in theta.items()}


def _forward(model, theta, x, state):
    logits, _, state = torch.func.functional_call(model, theta, (x, state))
    return logits, state


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_dynamic_score_equals_a_hand_written_score_then_update_loop(cell, one_thread):
    from charrnn.model.dynamic import Adapter, DynamicConfig, gradient_stats

    model = tiny_model(cell)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A text that repeats a phrase: one the updates can learn.
    train, text = random_ids(2000, seed=2), np.tile(random_ids(37, seed=3), 9)[:333]
    # A large rate, so that the updates move the score well beyond the tolerance.
    config = DynamicConfig(lr=3e-3, decay=0.02, seq=20, epsilon=1e-4, stats_chars=2000, stats_batch=4)
    stats = gradient_stats(model, train, config.seq, config.stats_batch, torch.device("cpu"))
    rms = reference_stats(model, train, config.seq, config.stats_batch)
    for got, (name, want) in zip(stats.rms, rms.items()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)
    adapter = Adapter(model, stats, config, torch.device("cpu"))
    losses = [nats for nats, _ in adapter.segments(text)]
    want_losses, want_theta = reference_dynamic(model, text, rms, config.lr, config.decay, config.epsilon, config.seq)
    assert len(losses) == len(want_losses) == math.ceil(332 / 20)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3])  # it learned: the rates bite
    for (name, got), want in zip(adapter.model.named_parameters(), want_theta.values()):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6, msg=name)
    # The model given was never changed.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_no_segment_is_scored_after_learning_from_itself_or_later_text(one_thread):
    from charrnn.model.dynamic import Adapter, DynamicConfig, gradient_stats

    model = tiny_model()
    config = DynamicConfig(lr=5e-3, decay=0.01, seq=16, stats_chars=1000, stats_batch=2)
    stats = gradient_stats(model, random_ids(1000, seed=5), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(16 * 8 + 1, seed=6)
    changed = text.copy()
    changed[16 * 5 + 1 :] = (changed[16 * 5 + 1 :] + 1) % 11  # segment 5's targets on
    first = [nats for nats, _ in Adapter(model, stats, config, torch.device("cpu")).segments(text)]
    second = [nats for nats, _ in Adapter(model, stats, config, torch.device("cpu")).segments(changed)]
    assert first[:5] == second[:5]  # exactly: nothing before segment 5 read its text
    assert first[5] != second[5]
    # The first segment is scored by the trained weights: the static score of those characters.
    with torch.no_grad():
        _, loss, _ = model(torch.tensor(text[:16])[None], None, torch.tensor(text[1:17])[None])
    assert first[0] == pytest.approx(loss.item() * 16, rel=1e-6)
    # And the second by the weights after one update from the first: not the trained ones.
    with torch.no_grad():
        _, state = model.rnn(model.embedding(torch.tensor(text[:16])[None]))
        _, static_second, _ = model(torch.tensor(text[16:32])[None], state, torch.tensor(text[17:33])[None])
    assert first[1] != pytest.approx(static_second.item() * 16, rel=1e-4)


def test_a_stop_request_ends_between_segments_with_the_score_so_far(one_thread):
    from charrnn.model.dynamic import Adapter, DynamicConfig, dynamic_evaluate, gradient_stats

    model = tiny_model()
    config = DynamicConfig(seq=10, stats_chars=500, stats_batch=2)
    stats = gradient_stats(model, random_ids(500), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(101)
    asked = iter([False, False, True])
    score, _ = dynamic_evaluate(model, text, stats, config, torch.device("cpu"), should_stop=lambda: next(asked))
    assert score.stopped and score.tokens == 30
    whole = [nats for nats, _ in Adapter(model, stats, config, torch.device("cpu")).segments(text)]
    assert score.nats == pytest.approx(sum(whole[:3]), rel=1e-9)


def test_lr_zero_and_decay_zero_is_the_static_score(one_thread):
    from charrnn.model.dynamic import DynamicConfig, dynamic_evaluate, gradient_stats

    model = tiny_model("gru")
    config = DynamicConfig(lr=0.0, decay=0.0, seq=7, stats_chars=300, stats_batch=2)
    stats = gradient_stats(model, random_ids(300), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(200, seed=9)
    score, adapted = dynamic_evaluate(model, text, stats, config, torch.device("cpu"))
    with torch.no_grad():
        _, loss, _ = model(torch.tensor(text[:-1])[None], None, torch.tensor(text[1:])[None])
    assert score.mean == pytest.approx(loss.item(), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(adapted.parameters(), model.parameters()))


def reference_rows(model, ids, rms, lr, decay, eps, seq, rows, burn, block):
    """The update over rows, written out. The text's targets are taken ``block`` at a time;
    each block's inputs are cut into ``rows`` rows (fewer where a row would be shorter than a
    segment) of n = block // rows, row r reading inputs
    r*n .. (r+1)*n - 1; row 0 goes on from the state the last block ended in, and every later
    row first reads the ``burn`` characters before it with the weights as they stand. Each
    segment is ``seq`` columns of every row, scored by their mean cross-entropy, then one
    update; a block's leftover characters continue its last row alone. Returns each
    segment's total nats and tokens."""
    names = list(rms)
    theta = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    theta0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    mean_rms = sum(r.mean().item() for r in rms.values()) / len(rms)

    def learn(x, y, state):
        out, state = _forward(model, theta, x, state)
        loss = F.cross_entropy(out.reshape(-1, model.config.vocab_size), y.reshape(-1))
        grads = torch.autograd.grad(loss, [theta[k] for k in names])
        with torch.no_grad():
            for k, g in zip(names, grads):
                rate = torch.clamp(rms[k] / mean_rms, max=1.0 / decay)
                theta[k] += decay * rate * (theta0[k] - theta[k]) - lr * g / (rms[k] + eps)
        return (loss.item() * y.numel(), y.numel()), tuple(s.detach() for s in state)

    segments, state = [], model.initial_state(1)
    for first in range(0, len(ids) - 1, block):
        last = min(first + block, len(ids) - 1)  # the block's targets: first + 1 .. last
        rows_here = max(1, min(rows, (last - first) // seq))  # rows of a segment at least
        n = (last - first) // rows_here
        primer = min(burn, n)
        states = [state]
        with torch.no_grad():
            for r in range(1, rows_here):
                at = first + r * n
                _, primed = _forward(model, {k: v.detach() for k, v in theta.items()}, torch.tensor(ids[at - primer : at])[None], None)
                states.append(primed)
        state = tuple(torch.cat([s[i] for s in states], dim=1) for i in range(2))
        inputs = torch.tensor(np.stack([ids[first + r * n : first + (r + 1) * n] for r in range(rows_here)]))
        targets = torch.tensor(np.stack([ids[first + r * n + 1 : first + (r + 1) * n + 1] for r in range(rows_here)]))
        for start in range(0, n, seq):
            scored, state = learn(inputs[:, start : start + seq], targets[:, start : start + seq], state)
            segments.append(scored)
        state = tuple(s[:, -1:] for s in state)
        tail = np.arange(first + rows_here * n, last)
        for start in range(0, len(tail), seq):
            at = tail[start : start + seq]
            scored, state = learn(torch.tensor(ids[at])[None], torch.tensor(ids[at + 1])[None], state)
            segments.append(scored)
    return segments


@pytest.mark.parametrize("row_chars", [1000, 100])
def test_several_rows_equal_a_hand_written_loop_over_rows_side_by_side(one_thread, row_chars):
    from charrnn.data.batches import EVAL_BURN_IN
    from charrnn.model.dynamic import Adapter, DynamicConfig, gradient_stats

    model = tiny_model("lstm")
    train, text = random_ids(2000, seed=2), np.tile(random_ids(37, seed=3), 40)[:1203]
    config = DynamicConfig(lr=1e-2, decay=0.02, seq=20, rows=3, row_chars=row_chars, epsilon=1e-4, stats_chars=2000, stats_batch=4)
    stats = gradient_stats(model, train, config.seq, config.stats_batch, torch.device("cpu"))
    rms = reference_stats(model, train, config.seq, config.stats_batch)
    adapter = Adapter(model, stats, config, torch.device("cpu"))
    got = list(adapter.segments(text))
    want = reference_rows(model, text, rms, config.lr, config.decay, config.epsilon, config.seq, 3, EVAL_BURN_IN, 3 * row_chars)
    # 1202 targets. In one block: 3 rows of 400 in 20 segments of 3x20, then a tail of 2
    # continuing the last row. In blocks of 300: 3 rows of 100, each row after the first
    # reading the 100 characters before it, in 5 segments of 3x20 a block; then a block of 2,
    # too short for rows, going on from the last row.
    assert [positions.size for _, positions in got] == [tokens for _, tokens in want] == [60] * 20 + [2]
    np.testing.assert_allclose([nats for nats, _ in got], [nats for nats, _ in want], rtol=1e-5)
    assert sum(n for n, _ in want[-4:-1]) < 0.9 * sum(n for n, _ in want[:3])  # it learned


def test_in_several_rows_no_segment_is_scored_after_learning_from_its_own_text(one_thread):
    from charrnn.model.dynamic import Adapter, DynamicConfig, gradient_stats

    model = tiny_model()
    config = DynamicConfig(lr=5e-3, decay=0.01, seq=16, rows=3, stats_chars=1000, stats_batch=2)
    stats = gradient_stats(model, random_ids(1000, seed=5), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(3 * 320 + 1, seed=6)  # rows of 320 inputs: 20 segments of 3x16
    changed = text.copy()
    # Row 1's targets from its segment 5 on, short of the 128 characters row 2 reads first.
    changed[320 + 16 * 5 + 1 : 640 - 128] = (changed[320 + 16 * 5 + 1 : 640 - 128] + 1) % 11
    first = [nats for nats, _ in Adapter(model, stats, config, torch.device("cpu")).segments(text)]
    second = [nats for nats, _ in Adapter(model, stats, config, torch.device("cpu")).segments(changed)]
    assert first[:5] == second[:5]  # exactly: no update before segment 5 read row 1's change
    assert first[5] != second[5]


def test_a_stop_in_several_rows_compares_with_the_same_characters_unadapted(one_thread):
    from charrnn.model.dynamic import DynamicConfig, dynamic_evaluate, gradient_stats
    from charrnn.model.evaluation import token_nats

    model = tiny_model("gru")
    config = DynamicConfig(seq=10, rows=4, stats_chars=500, stats_batch=2)
    stats = gradient_stats(model, random_ids(500), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(4 * 200 + 1, seed=8)
    static = token_nats(model, text, torch.device("cpu"))
    asked = iter([False, False, True])
    score, _ = dynamic_evaluate(model, text, stats, config, torch.device("cpu"), should_stop=lambda: next(asked), static=static)
    assert score.stopped and score.tokens == 3 * 4 * 10 and score.segments == 3
    # What was scored: the first 30 targets of each row of 200, and the static figure is the
    # unchanged model's over exactly those, with no second pass.
    scored = np.concatenate([np.arange(r * 200, r * 200 + 30) for r in range(4)])
    assert score.static_mean == pytest.approx(static[scored].mean(), rel=1e-6)
    assert score.static_mean != pytest.approx(static[:120].mean(), rel=1e-3)  # not a prefix


def test_every_target_of_a_pass_is_scored_once_and_its_static_figure_is_evaluates(one_thread):
    from charrnn.model.dynamic import Adapter, DynamicConfig, dynamic_evaluate, gradient_stats
    from charrnn.model.evaluation import evaluate, token_nats

    model = tiny_model()
    config = DynamicConfig(seq=10, rows=3, row_chars=70, stats_chars=500, stats_batch=2)
    stats = gradient_stats(model, random_ids(500), config.seq, config.stats_batch, torch.device("cpu"))
    text = random_ids(1000, seed=4)  # blocks of 210, the last a short one
    static = token_nats(model, text, torch.device("cpu"), batch_size=8, seq_len=16)
    seen = np.zeros(len(text) - 1, int)
    for _, positions in Adapter(model, stats, config, torch.device("cpu")).segments(text):
        seen[positions.ravel()] += 1
    assert (seen == 1).all()
    score, _ = dynamic_evaluate(model, text, stats, config, torch.device("cpu"), static=static)
    assert not score.stopped and score.tokens == len(text) - 1
    assert score.static_mean == pytest.approx(evaluate(model, text, torch.device("cpu"), batch_size=8, seq_len=16), rel=1e-6)


@pytest.mark.parametrize("batch_size, seq_len", [(1, 1000), (1, 7), (5, 9), (64, 256)])
def test_token_nats_are_each_characters_cross_entropy_in_the_text_order(one_thread, batch_size, seq_len):
    from charrnn.model.evaluation import evaluate, token_nats

    model = tiny_model("lstm")
    text = random_ids(333, seed=12)
    got = token_nats(model, text, torch.device("cpu"), batch_size=batch_size, seq_len=seq_len)
    assert got.shape == (332,) and got.dtype == np.float32
    assert float(got.sum(dtype=np.float64)) / 332 == pytest.approx(evaluate(model, text, torch.device("cpu"), batch_size, seq_len), rel=1e-6)
    if batch_size == 1:
        # One row is one stream from the zero state: the plain forward's losses, in order.
        with torch.no_grad():
            logits, _, _ = model(torch.tensor(text[:-1])[None])
        want = F.cross_entropy(logits[0], torch.tensor(text[1:]), reduction="none").numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        # Several rows prime each row with the text before it: close to one stream, not equal.
        one = token_nats(model, text, torch.device("cpu"), batch_size=1, seq_len=seq_len)
        np.testing.assert_allclose(got[:10], one[:10], rtol=1e-5)  # row 0 is the stream itself
        assert abs(got.mean() - one.mean()) < 0.02


def test_the_default_step_grows_with_the_square_root_of_the_rows():
    from charrnn.model.dynamic import DynamicConfig
    from charrnn.options import DEFAULTS

    one = DEFAULTS["dynamic"]["lr"]
    assert DynamicConfig().lr == one and DynamicConfig(rows=16).lr == pytest.approx(4 * one)
    assert DynamicConfig(rows=16, lr=1e-4).lr == 1e-4


# ---------------------------------------------------------------------------- the command line


def figures(result) -> tuple[float, float, float, int]:
    assert result.exit_code == 0, result.stderr
    found = FIGURES.match(result.stdout.strip())
    assert found, result.stdout
    return float(found[1]), float(found[2]), float(found[3]), int(found[4].replace(",", ""))


def test_eval_dynamic_prints_the_static_figure_unchanged_and_a_lower_dynamic_one(trained_run, text_file):
    checkpoint = trained_run / "last.pt"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    plain = invoke("eval", trained_run, text_file, "--threads", 1)
    assert plain.exit_code == 0, plain.stderr
    static_alone = float(plain.stdout.split()[0])
    static, dynamic, gain, chars = figures(invoke("eval", trained_run, text_file, "--dynamic", "--threads", 1))
    assert static == static_alone
    assert chars == len(small_text()) - 1
    # The verse repeats: a model that goes on learning from it predicts it better.
    assert dynamic < static and gain == pytest.approx(dynamic - static, abs=2e-4)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest
    # The options reach the update: a rate of 0 and no decay leave the trained weights, so
    # the dynamic figure is the single stream's static one (eval's rows agree with it to 1e-3).
    _, frozen, _, _ = figures(invoke("eval", trained_run, text_file, "--dynamic", "--dynamic-lr", 0, "--dynamic-decay", 0, "--threads", 1))
    assert frozen == pytest.approx(static, abs=2e-3)


def test_eval_dynamic_reports_its_cost_and_statistics_on_stderr(trained_run, text_file):
    result = invoke("eval", trained_run, text_file, "--dynamic", "--dynamic-seq", 30, "--threads", 1)
    figures(result)
    assert re.search(r"^gradient statistics: [\d,]+ tokens of the training text \(\d+ windows of 16x30\) in [\d.]+ s$", result.stderr, re.M)
    assert re.search(r"^time: static [\d.]+ s, dynamic [\d.]+ s \([\d.]+x static\); CPU time: static [\d.]+ s, dynamic [\d.]+ s \([\d.]+x\); lr [\d.e-]+, decay [\d.e-]+, segments of 30$", result.stderr, re.M)


def test_eval_dynamic_in_several_rows_gains_and_says_how_it_read(trained_run, text_file):
    # This model has all but learned the verse by heart: its training gradients are tiny, and
    # the step the rows' default would take (twice one stream's) overshoots.
    step = ["--dynamic-lr", 2e-4]
    one_stream = figures(invoke("eval", trained_run, text_file, "--dynamic", *step, "--threads", 1))
    result = invoke("eval", trained_run, text_file, "--dynamic", "--dynamic-rows", 4, *step, "--threads", 1)
    static, dynamic, _, chars = figures(result)
    assert static == one_stream[0] and chars == one_stream[3]
    assert dynamic < static and dynamic != one_stream[1]
    assert re.search(r"lr 0\.0002, decay [\d.e-]+, segments of 50 in 4 rows$", result.stderr, re.M), result.stderr
    adapted = invoke("sample", trained_run, "--adapt", text_file, "--dynamic-rows", 4, *step, "--length", 20, "--threads", 1)
    assert adapted.exit_code == 0 and ADAPTED.search(adapted.stderr), adapted.stderr


def test_auto_times_a_dynamic_pass_of_16_rows_in_both_precisions_on_a_cpu_with_bf16(trained_run, text_file):
    from charrnn.device import cpu_bf16_flags

    few = invoke("eval", trained_run, text_file, "--dynamic", "--dynamic-rows", 8, "--dynamic-lr", 2e-4, "--threads", 1)
    figures(few)
    assert "dynamic pass" not in few.stderr and "dynamic in" not in few.stderr  # below 16 rows: fp32, no probe
    args = ["eval", trained_run, text_file, "--dynamic", "--dynamic-rows", 16, "--dynamic-lr", 1e-4, "--threads", 1]
    exact = invoke(*args, "--precision", "fp32")
    static, _, _, _ = figures(exact)
    assert "dynamic pass" not in exact.stderr and "dynamic in" not in exact.stderr
    auto = invoke(*args)
    assert figures(auto)[0] == static  # the static figure stays the exact fp32 one
    chosen = re.search(r"^dynamic pass: (fp32|bf16) \(auto: a segment's forward and backward took fp32 [\d.,]+ ms, bf16 [\d.,]+ ms\)$", auto.stderr, re.M)
    if not cpu_bf16_flags():
        assert chosen is None and "dynamic in" not in auto.stderr
        pytest.skip("this CPU has no bf16 instructions: auto is fp32 without a probe (checked)")
    assert chosen, auto.stderr
    assert (", dynamic in bf16" in auto.stderr) == (chosen[1] == "bf16")


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_eval_dynamic_works_on_every_cell(cell_runs, tmp_path, cell):
    text = tmp_path / "verse.txt"
    text.write_text(small_text(30), encoding="utf-8")
    static, dynamic, _, _ = figures(invoke("eval", cell_runs[cell], text, "--dynamic", "--threads", 1))
    assert dynamic < static


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe", "word"])
def test_eval_dynamic_works_on_byte_bpe_and_word_vocabularies(tmp_path, text_file, tokenizer):
    run = tmp_path / tokenizer
    extra = ["--vocab-size", 300] if tokenizer in ("bpe", "word") else []
    trained = invoke("train", text_file, "--out", run, "--tokenizer", tokenizer, *extra, "--max-steps", 60,
                     "--layers", 1, "--hidden", 32, "--embed", 16, "--batch-size", 8, "--seq-len", 32, "--threads", 1)
    assert trained.exit_code == 0, trained.stderr
    result = invoke("eval", run, text_file, "--dynamic", "--threads", 1)
    assert result.exit_code == 0, result.stderr
    found = re.match(r"^static (\d+\.\d+) bpc, dynamic (\d+\.\d+) bpc .* over ([\d,]+) characters \(([\d,]+) tokens\)", result.stdout)
    assert found, result.stdout
    assert float(found[2]) < float(found[1])
    assert int(found[3].replace(",", "")) == len(small_text())


CODE = "def scale(values, factor):\n    return [value * factor for value in values]\n\n" * 30


def test_sample_adapt_lowers_the_texts_bpc_and_changes_what_is_sampled(trained_run, tmp_path):
    code = tmp_path / "code.txt"
    code.write_text(CODE, encoding="utf-8")
    args = ["sample", trained_run, "--length", 120, "--seed", 7, "--prime", "def ", "--threads", 1, "--unknown", "skip"]
    adapted = invoke(*args, "--adapt", code)
    assert adapted.exit_code == 0, adapted.stderr
    found = ADAPTED.search(adapted.stderr)
    assert found, adapted.stderr
    before, during, after = map(float, found.groups())
    assert during < before - 0.3 and after < during
    assert adapted.stdout.startswith("def ")
    again = invoke(*args, "--adapt", code)
    assert again.stdout == adapted.stdout  # same seed, same adaptation, same text
    plain = invoke(*args)
    assert plain.exit_code == 0 and plain.stdout != adapted.stdout
    assert "adapted to" not in plain.stderr
    beam = invoke("sample", trained_run, "--adapt", code, "--beam", 2, "--length", 40, "--unknown", "skip", "--threads", 1)
    assert beam.exit_code == 0 and ADAPTED.search(beam.stderr), beam.stderr


# ---------------------------------------------------------------------------- refusals


def answered(result, fragment: str, code: int) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--dynamic-lr", "-1"], "--dynamic-lr must be at least 0", id="negative-lr"),
        pytest.param(["--dynamic-lr", "nan"], "--dynamic-lr must be a finite number, not nan", id="nan-lr"),
        pytest.param(["--dynamic-lr", "inf"], "--dynamic-lr must be a finite number, not inf", id="inf-lr"),
        pytest.param(["--dynamic-decay", "1.5"], "--dynamic-decay must be in [0, 1]", id="decay-above-1"),
        pytest.param(["--dynamic-decay", "nan"], "--dynamic-decay must be a finite number", id="nan-decay"),
        pytest.param(["--dynamic-seq", "0"], "--dynamic-seq must be at least 1", id="seq-0"),
        pytest.param(["--dynamic-rows", "0"], "--dynamic-rows must be at least 1", id="rows-0"),
        # The default step is computed from the rows: the range comes first.
        pytest.param(["--dynamic-rows", "-3"], "--dynamic-rows must be at least 1, not -3", id="rows-negative"),
    ],
)
def test_bad_dynamic_option_values_are_refused(trained_run, text_file, args, fragment):
    answered(invoke("eval", trained_run, text_file, "--dynamic", *args), fragment, 2)
    answered(invoke("sample", trained_run, "--adapt", text_file, *args), fragment, 2)


def interrupted_in_the_dynamic_pass(args: list) -> tuple[subprocess.Popen, str, str]:
    """``python -m charrnn ARGS --threads 1``, sent SIGINT half a second into the dynamic pass
    (after the gradient statistics line); the process, its stdout and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *map(str, args), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("static pass:"), line  # first, so that a stop needs no second pass
        line = proc.stderr.readline()
        if line.startswith("dynamic pass:"):  # auto's choice, on a CPU with bf16
            line = proc.stderr.readline()
        assert line.startswith("gradient statistics:"), line
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out, err


def test_ctrl_c_while_adapting_stops_at_once_with_the_figures_so_far_and_samples_nothing(trained_run, tmp_path):
    long_text = tmp_path / "long.txt"
    long_text.write_text(small_text(6000), encoding="utf-8")
    proc, out, err = interrupted_in_the_dynamic_pass(["sample", trained_run, "--adapt", long_text, "--dynamic-rows", 4])
    assert proc.returncode == 130, err
    assert out == ""  # no sample from a half-adapted copy
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"charrnn: interrupted while adapting, after ([\d,]+) of ([\d,]+) tokens: adapted to .* (\d+\.\d+) bpc before, (\d+\.\d+) while adapting \([-+]\d+\.\d+\)", last)
    assert match, last
    assert 0 < int(match[1].replace(",", "")) < int(match[2].replace(",", ""))
    assert "Traceback" not in err


def test_rows_past_memory_are_refused_before_the_work_naming_the_option(trained_run, text_file):
    fragment = "or fewer --dynamic-rows"
    answered(invoke("eval", trained_run, text_file, "--dynamic", "--dynamic-rows", 10**12), fragment, 1)
    answered(invoke("sample", trained_run, "--adapt", text_file, "--dynamic-rows", 10**12), fragment, 1)


def test_dynamic_options_without_their_mode_are_refused(trained_run, text_file):
    answered(invoke("eval", trained_run, text_file, "--dynamic-lr", 1e-4), "give --dynamic (eval) or --adapt FILE (sample) too", 2)
    answered(invoke("sample", trained_run, "--dynamic-seq", 20, "--dynamic-decay", 0.1), "--dynamic-decay, --dynamic-seq set the dynamic update", 2)


def test_adapt_text_that_is_missing_undecodable_or_too_short(trained_run, tmp_path):
    answered(invoke("sample", trained_run, "--adapt", tmp_path / "nope.txt"), "no such file, directory or corpus", 1)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"[ROMEO] caf\xe9\n")
    answered(invoke("sample", trained_run, "--adapt", bad), "bad.txt: not valid utf-8 at byte 11", 1)
    short = tmp_path / "short.txt"
    short.write_text("O", encoding="utf-8")
    answered(invoke("sample", trained_run, "--adapt", short), "the --adapt text needs at least 2 characters", 1)
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("Qqq ZZZ", encoding="utf-8")
    answered(invoke("sample", trained_run, "--adapt", unseen), "pass --unknown skip to leave them out", 1)
    answered(invoke("sample", trained_run, "--adapt", ""), "an empty path was given", 2)


def test_a_run_whose_training_text_is_gone_is_refused_in_one_line(tmp_path, text_file):
    corpus = tmp_path / "gone.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run = tmp_path / "run"
    trained = invoke("train", corpus, "--out", run, "--max-steps", 2, "--layers", 1, "--hidden", 16, "--embed", 8, "--batch-size", 4, "--seq-len", 16)
    assert trained.exit_code == 0, trained.stderr
    corpus.unlink()
    answered(invoke("eval", run, text_file, "--dynamic"), "dynamic evaluation takes its gradient statistics from the run's training text", 1)


def test_a_run_trained_on_items_is_refused_as_it_is_read_item_by_item(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"name{i % 37}x\n" for i in range(300)), encoding="utf-8")
    run = tmp_path / "items"
    trained = invoke("train", names, "--items", "--out", run, "--max-steps", 2, "--layers", 1, "--hidden", 16, "--embed", 8, "--batch-size", 4, "--seq-len", 16)
    assert trained.exit_code == 0, trained.stderr
    answered(invoke("eval", run, names, "--dynamic"), "a run trained with --items is scored item by item from the zero state: drop --dynamic", 2)
    answered(invoke("sample", run, "--adapt", names), "a run trained with --items reads item by item from the zero state: drop --adapt", 2)


def test_dynamic_memory_is_checked_before_it_is_taken(trained_run, text_file, monkeypatch):
    import charrnn.memory

    monkeypatch.setattr(charrnn.memory, "usable_memory", lambda device=None: 1000)
    answered(invoke("eval", trained_run, text_file, "--dynamic"), "dynamic evaluation would need about", 1)


@pytest.mark.parametrize("rows", [1, 8])
def test_ctrl_c_stops_dynamic_eval_with_the_figures_so_far(trained_run, tmp_path, rows):
    long_text = tmp_path / "long.txt"
    long_text.write_text(small_text(6000), encoding="utf-8")  # about a million characters
    proc, out, err = interrupted_in_the_dynamic_pass(["eval", trained_run, long_text, "--dynamic", "--dynamic-rows", rows])
    assert proc.returncode == 130, err
    assert FIGURES.match(out), out
    scored = int(FIGURES.match(out)[4].replace(",", ""))
    assert 0 < scored < len(small_text(6000)) - 1
    assert float(FIGURES.match(out)[1]) < 0.5  # the static figure over those characters: the verse all but known
    assert re.search(rf"charrnn: interrupted: the figures above are over the first {scored:,} of [\d,]+ tokens", err), err
    assert "Traceback" not in err
