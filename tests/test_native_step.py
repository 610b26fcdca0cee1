"""The compiled single-row bf16 step (charrnn.generation.native) against the numpy path it
replaces: the same bf16 products, gates and states, fed the same characters. It builds with
any C compiler (AVX512_BF16 where the CPU has it, plain C otherwise), so these tests need a
compiler, not a bf16 CPU; they skip, saying so, without one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from charrnn.c_compiler import find_compiler
from charrnn.generation.native import load_kernel
from charrnn.generation.stepper import FastState, FastStepper
from charrnn.model.network import CharRNN
from charrnn.options import ModelConfig

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (cc, gcc or clang) to build the native step")


def _model(cell: str, layers: int, hidden: int, vocab: int = 50) -> CharRNN:
    torch.manual_seed(5)
    model = CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=hidden, embed=16))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # far from zero: gates that saturate and states that grow, as trained ones do
    return model.eval()


@pytest.mark.parametrize(
    "cell, layers, hidden",
    [("lstm", 2, 64), ("lstm", 3, 48), ("gru", 2, 48), ("gru", 1, 70), ("rnn", 3, 40), ("rnn", 1, 32)],
)
def test_native_step_follows_the_numpy_step(cell, layers, hidden):
    """Teacher-forced, so that neither drifts from the other's inputs: the logits and states
    agree to the odd bf16 rounding that a sum in another order tips over (widths that are,
    and are not, multiples of the kernel's 32 columns)."""
    model = _model(cell, layers, hidden)
    native = FastStepper(model, torch.bfloat16)
    reference = FastStepper(model, torch.bfloat16, native=False)
    assert native.native is not None and reference.native is None
    a, b = native.initial_state(1), reference.initial_state(1)
    ids = np.random.default_rng(1).integers(0, 50, 200)
    worst = total = 0.0
    for token in ids:
        x = np.array([token])
        got, want = native.advance(x, a).copy(), reference.advance(x, b).copy()
        scale = max(1.0, float(np.abs(want).max()))
        worst = max(worst, float(np.abs(got - want).max()) / scale)
        total += float(np.abs(got - want).mean()) / scale
    assert worst < 2e-2, worst
    assert total / len(ids) < 1e-3, total / len(ids)
    assert np.abs(a.h - b.h).max() < 5e-2
    if cell == "lstm":
        assert np.abs(a.c - b.c).max() < 5e-2 * max(1.0, float(np.abs(b.c).max()))


def test_native_step_stays_near_fp32_and_repeats_itself():
    model = _model("lstm", 2, 64)
    native, fp32 = FastStepper(model, torch.bfloat16), FastStepper(model)
    runs = []
    for _ in range(2):
        state, exact = native.initial_state(1), fp32.initial_state(1)
        logits, drift = [], 0.0
        for token in range(0, 150):
            x = np.array([token % 50])
            logits.append(native.advance(x, state).copy())
            drift = max(drift, float(np.abs(logits[-1] - fp32.advance(x, exact)).max()))
        runs.append(np.stack(logits))
        # bf16 keeps 8 bits of mantissa: near fp32, but not equal to it.
        assert 1e-4 < drift < 0.5, drift
    np.testing.assert_array_equal(runs[0], runs[1])


def _kernel_in_child(env: dict) -> str:
    code = "from charrnn.generation.native import load_kernel; k = load_kernel(); print(k._name if k else None)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_kernel_is_built_once_into_the_cache_and_without_one(tmp_path):
    cache = tmp_path / "cache"
    first = _kernel_in_child({"CHARRNN_CACHE": str(cache)})
    assert first.startswith(str(cache / "native")), first
    built = os.stat(first).st_mtime_ns
    assert _kernel_in_child({"CHARRNN_CACHE": str(cache)}) == first
    assert os.stat(first).st_mtime_ns == built  # loaded, not built again
    # A cache that cannot be written (a file where its directory should be, which stops
    # root too): built for the process in a temporary directory.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    elsewhere = _kernel_in_child({"CHARRNN_CACHE": str(blocked)})
    assert elsewhere != "None" and not elsewhere.startswith(str(blocked)), elsewhere
    assert _kernel_in_child({"CHARRNN_CACHE": str(cache), "CHARRNN_NATIVE": "off"}) == "None"


def test_the_numpy_path_serves_where_the_kernel_cannot(monkeypatch):
    monkeypatch.setattr("charrnn.generation.stepper.load_kernel", lambda: None)
    stepper = FastStepper(_model("gru", 2, 48), torch.bfloat16)
    assert stepper.native is None
    assert np.isfinite(stepper.advance(np.array([3]), stepper.initial_state(1))).all()


def test_kernel_is_only_for_bf16():
    assert FastStepper(_model("lstm", 1, 32)).native is None
    assert load_kernel() is not None


# --------------------------------------------------------------------- several rows (AMX)


def _amx() -> bool:
    kernel = load_kernel()
    return kernel is not None and bool(kernel.charrnn_amx_ready())


needs_amx = pytest.mark.skipif(not _amx(), reason="this CPU or OS offers no AMX tiles (amx_bf16): several rows step in torch")


@needs_amx
@pytest.mark.parametrize(
    "cell, layers, hidden, rows",
    [("lstm", 2, 64, 2), ("lstm", 2, 64, 33), ("lstm", 3, 48, 17), ("gru", 2, 48, 17), ("gru", 1, 70, 33), ("rnn", 3, 40, 17), ("rnn", 1, 32, 2)],
)
def test_native_rows_follow_torchs_batched_step(cell, layers, hidden, rows):
    """Several rows through AMX against the numpy path's batched bf16 step (torch's product),
    teacher-forced: the same sums to the odd bf16 rounding that another order tips over, at
    row counts inside one tile, across tiles and past an odd tile."""
    model = _model(cell, layers, hidden)
    native = FastStepper(model, torch.bfloat16)
    reference = FastStepper(model, torch.bfloat16, native=False)
    assert native.native.batched
    a, b = native.initial_state(rows), reference.initial_state(rows)
    rng = np.random.default_rng(2)
    worst = total = 0.0
    for _ in range(60):
        x = rng.integers(0, 50, rows)
        got, want = native.advance(x, a).copy(), reference.advance(x, b).copy()
        scale = max(1.0, float(np.abs(want).max()))
        worst = max(worst, float(np.abs(got - want).max()) / scale)
        total += float(np.abs(got - want).mean()) / scale
    assert worst < 5e-2, worst
    assert total / 60 < 1e-3, total / 60
    assert np.median(np.abs(a.h - b.h)) < 1e-3


@needs_amx
def test_a_row_steps_alike_beside_any_other_rows():
    """A row's sums are its own, in one fixed order, whoever shares the step: a stream's logits
    and state are bit for bit the same in a batch of 2 as in a batch of 40 with other streams,
    so a served stream's text does not depend on who else is being served (at 2 rows or more)."""
    model = _model("lstm", 2, 64)
    stepper = FastStepper(model, torch.bfloat16)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 50, 80)
    pair, crowd = stepper.initial_state(2), stepper.initial_state(40)
    crowd.h[:] = rng.standard_normal(crowd.h.shape).astype(np.float32)
    crowd.c[:] = rng.standard_normal(crowd.c.shape).astype(np.float32)
    crowd.h[7], crowd.c[:, 7] = 0.0, 0.0  # row 7 of the crowd is the pair's row 0
    for token in ids:
        others = rng.integers(0, 50, 40)
        others[7] = token
        alone = stepper.advance(np.array([token, 1]), pair)[0].copy()
        beside = stepper.advance(others, crowd)[7]
        np.testing.assert_array_equal(alone, beside)
    np.testing.assert_array_equal(pair.h[0], crowd.h[7])
    np.testing.assert_array_equal(pair.c[:, 0], crowd.c[:, 7])


def test_rows_that_leave_are_put_back_in_the_order_the_kernel_takes():
    """Dropping rows (a stream that ends, a beam that is cut) indexes the middle axis of the
    LSTM's c (layers, N, hidden), which numpy hands back strided; the next step puts the
    state in C order, or every later step would silently leave the kernel."""
    stepper = FastStepper(_model("lstm", 2, 32), torch.bfloat16)
    reference = FastStepper(_model("lstm", 2, 32), torch.bfloat16, native=False)
    state = stepper.initial_state(6)
    stepper.advance(np.arange(6), state)
    kept = stepper.select(state, torch.tensor([0, 2, 5]))
    assert not kept.c.flags.c_contiguous  # numpy's layout for this indexing
    copy = FastState(kept.h.copy(), kept.c.copy())
    got = stepper.advance(np.array([1, 2, 3]), kept).copy()
    assert kept.c.flags.c_contiguous and kept.h.flags.c_contiguous
    want = reference.advance(np.array([1, 2, 3]), copy)
    assert np.abs(got - want).max() < 5e-2 * max(1.0, float(np.abs(want).max()))
