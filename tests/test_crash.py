"""When saving goes wrong: a full disk, a run directory that stops being writable, a second
Ctrl-C, a loss that blows up. Each time the user gets one clear line, a non-zero exit, and the
last good checkpoint is still on disk and loads."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from tests.conftest import small_text
from tests.test_resume_exact import _env, assert_every_checkpoint_loads, wait_for_step

TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("charrnn:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def train_good_run(corpus: Path, run_dir: Path, steps: int = 10) -> bytes:
    result = invoke("train", corpus, "--out", run_dir, "--max-steps", steps, "--eval-every", 10, *TINY)
    assert result.exit_code == 0, result.stderr
    return (run_dir / "last.pt").read_bytes()


def assert_good_checkpoint_untouched(run_dir: Path, before: bytes, step: int) -> None:
    assert (run_dir / "last.pt").read_bytes() == before
    assert checkpoint.load(run_dir)["metrics"]["step"] == step
    assert not list(run_dir.glob(checkpoint.TMP_PREFIX + "*"))


def test_file_size_limit_while_saving_keeps_the_previous_checkpoint(text_file, tmp_path):
    """RLIMIT_FSIZE below a checkpoint's size: every checkpoint write fails with EFBIG (Python
    ignores SIGXFSZ), as a quota or a full disk would make it fail."""
    run_dir = tmp_path / "run"
    before = train_good_run(text_file, run_dir)
    limit = len(before) // 2  # metrics.jsonl and config.json stay far below it

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", "--resume", str(run_dir), "--max-steps", "20"],
        capture_output=True, text=True, env=_env(), preexec_fn=limit_file_size, timeout=240,
    )
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "could not save checkpoint" in line and "File too large" in line
    assert "the previous checkpoint is intact" in line
    assert_good_checkpoint_untouched(run_dir, before, 10)


@pytest.fixture
def small_tmpfs(tmp_path):
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(text_file, small_tmpfs):
    """A real ENOSPC: a 4 MB tmpfs filled up after the first good checkpoint."""
    run_dir = small_tmpfs / "run"
    before = train_good_run(text_file, run_dir)
    stat = os.statvfs(small_tmpfs)
    free = stat.f_bavail * stat.f_frsize
    with open(small_tmpfs / "ballast", "wb") as ballast:
        ballast.write(b"\0" * (free - 16 * 1024))  # room for the small files, not a checkpoint
    result = invoke("train", "--resume", run_dir, "--max-steps", 20)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert "could not save checkpoint" in line and "No space left on device" in line, line
    assert_good_checkpoint_untouched(run_dir, before, 10)
    # Space back: the same command continues the run from the intact checkpoint.
    (small_tmpfs / "ballast").unlink()
    result = invoke("train", "--resume", run_dir, "--max-steps", 20)
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(run_dir)["metrics"]["step"] == 20


def without_permission_override():
    """We run as root, for whom file permissions do not apply. Dropping CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set before exec gives the child root's identity
    without its power to ignore permissions, so a read-only directory really is read-only."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_permission_override() -> bool:
    if os.geteuid() != 0:
        return True  # an ordinary user is subject to permissions already
    probe = subprocess.run(["true"], preexec_fn=without_permission_override, capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_run_directory_unwritable_while_training(tmp_path):
    if os.geteuid() == 0:
        try:
            if not can_drop_permission_override():
                pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
        except (OSError, subprocess.SubprocessError):
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(run_dir),
         "--max-steps", "100000", "--checkpoint-every", "1", "--eval-every", "1000", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        preexec_fn=without_permission_override if os.geteuid() == 0 else None,
    )
    try:
        wait_for_step(proc, run_dir, 5)
        run_dir.chmod(0o555)
        _, err = proc.communicate(timeout=120)
    finally:
        run_dir.chmod(0o755)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    line = one_line(err)
    # The directory turns read-only either before the next temporary file is created or between
    # its creation and the rename; both are refused with the OS's reason and keep the old file.
    assert "Permission denied" in line, line
    assert ("cannot write a checkpoint in" in line
            or ("could not save checkpoint" in line and "previous checkpoint is intact" in line)), line
    assert checkpoint.load(run_dir)["metrics"]["step"] >= 4
    # In the second case the temporary cannot be unlinked from a read-only directory; the next
    # run in it clears such leftovers.
    checkpoint.remove_stale_temporaries(run_dir)
    assert not list(run_dir.glob(checkpoint.TMP_PREFIX + "*"))


@pytest.mark.slow
def test_second_ctrl_c_quits_at_once_without_corrupting_anything(tmp_path):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run_dir = tmp_path / "run"
    # Steps of a few tenths of a second, so both signals land within one step.
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(run_dir),
         "--layers", "2", "--hidden", "256", "--batch-size", "32", "--seq-len", "128",
         "--max-steps", "1000", "--checkpoint-every", "1", "--eval-every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        wait_for_step(proc, run_dir, 2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping after this step" in err  # the first Ctrl-C said what it would do
    assert one_line(err) == "charrnn: interrupted"
    assert "stopped at step" not in err  # the second one did not wait for the checkpoint
    # The second Ctrl-C may cut the step-2 checkpoint short: then step 1's is the one kept.
    assert checkpoint.load(run_dir)["metrics"]["step"] >= 1
    assert_every_checkpoint_loads(run_dir)
    assert not list(run_dir.glob(checkpoint.TMP_PREFIX + "*"))


def test_diverging_loss_stops_without_writing_over_the_good_checkpoint(text_file, tmp_path):
    """A learning rate that blows the model up between two checkpoints: the run stops with one
    line naming the step, and last.pt still holds the good step-10 state."""
    run_dir = tmp_path / "run"
    before = train_good_run(text_file, run_dir)
    result = invoke(
        "train", "--resume", run_dir, "--max-steps", 30, "--lr", "1e30", "--warmup-steps", 0, "--checkpoint-every", 5
    )
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert line.startswith("charrnn: training diverged:") and "no checkpoint was written" in line, line
    assert_good_checkpoint_untouched(run_dir, before, 10)


def test_non_finite_weights_are_never_checkpointed(text_file, tmp_path):
    """The last guard: whatever made the weights infinite, the checkpoint due at that step is
    refused, so a good checkpoint is never replaced by a NaN/inf one."""
    import torch

    from charrnn.errors import TrainingDiverged
    from charrnn.training.runs import RunRequest, prepare_run, train_run
    from charrnn.training.trainer import Callback
    from tests.conftest import TINY_MODEL, TINY_TRAIN

    class OverflowAt(Callback):
        """Stands in for an update that overflows float32 (the step itself stays finite)."""

        def on_step(self, trainer, stats):
            if stats.step == 15:  # after the step, before the checkpoint due at 15
                with torch.no_grad():
                    trainer.model.decoder.bias[0] = float("inf")

    run_dir = tmp_path / "run"
    request = dict(out=run_dir, model=dict(TINY_MODEL), device="cpu")
    train_run(prepare_run(RunRequest(sources=[str(text_file)], train={**TINY_TRAIN, "max_steps": 10}, **request)))
    before = (run_dir / "last.pt").read_bytes()
    resumed = prepare_run(RunRequest(resume=run_dir, train={"max_steps": 30, "checkpoint_every": 5}, device="cpu"))
    with pytest.raises(TrainingDiverged, match=r"weights \(decoder.bias\) became NaN or infinite by step 15"):
        train_run(resumed, [OverflowAt()])
    assert_good_checkpoint_untouched(run_dir, before, 10)
