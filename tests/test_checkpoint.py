import io
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint, outputs
from charrnn.errors import CheckpointError


class RunsACommand:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    body = io.BytesIO()
    torch.save({"model": RunsACommand(marker)}, body)
    # Give it a perfectly valid charrnn header and checksum: only the safe loader stands between.
    import hashlib

    raw = body.getvalue()
    header = struct.pack("<8sI32s", checkpoint.MAGIC, checkpoint.FORMAT_VERSION, hashlib.sha256(raw).digest())
    path = tmp_path / "evil.pt"
    path.write_bytes(header + raw)
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoint.load(path)
    assert not marker.exists()
    # A plain pickle (not even our format) is refused before it is unpickled.
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(RunsACommand(marker)))
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        checkpoint.load(plain)
    assert not marker.exists()


def test_round_trip(tmp_path):
    payload = {"model": {"w": torch.arange(5.0)}, "step": 3, "name": "x", "t": (1, 2)}
    checkpoint.save(payload, tmp_path / "c.pt")
    loaded = checkpoint.load(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"]) and loaded["t"] == (1, 2)


def test_truncated_tampered_foreign_and_versioned_files(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"model": {"w": torch.ones(100)}}, path)
    data = path.read_bytes()

    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        checkpoint.load(tmp_path / "trunc.pt")

    tampered = bytearray(data)
    tampered[-40] ^= 0xFF
    (tmp_path / "tampered.pt").write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(tmp_path / "tampered.pt")

    (tmp_path / "foreign.pt").write_bytes(b"just some text, not a model\n")
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        checkpoint.load(tmp_path / "foreign.pt")

    newer = bytearray(data)
    newer[8:12] = struct.pack("<I", checkpoint.FORMAT_VERSION + 1)
    (tmp_path / "newer.pt").write_bytes(bytes(newer))
    with pytest.raises(CheckpointError, match="newer than this charrnn reads"):
        checkpoint.load(tmp_path / "newer.pt")

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"model": {"w": torch.zeros(3)}}, path)
    before = path.read_bytes()
    if os.geteuid() == 0:
        # root ignores directory permissions: make the write itself fail for real with a file
        # size limit (EFBIG; Python ignores SIGXFSZ), as a quota or a full disk would.
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
        try:
            with pytest.raises(CheckpointError, match="File too large; the previous checkpoint is intact"):
                checkpoint.save({"model": {"w": torch.ones(3)}}, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    else:
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(CheckpointError):
                checkpoint.save({"model": {"w": torch.ones(3)}}, path)
        finally:
            tmp_path.chmod(0o700)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(checkpoint.TMP_PREFIX + "*"))


def test_stale_temporaries_are_cleaned(tmp_path):
    (tmp_path / (checkpoint.TMP_PREFIX + "abc")).write_bytes(b"half")
    assert checkpoint.remove_stale_temporaries(tmp_path) == 1
    assert not list(tmp_path.iterdir())


def test_an_interrupt_as_the_temporary_file_is_created_leaves_no_debris(tmp_path, monkeypatch):
    # A second Ctrl-C may land in the instant between the file's creation and the code that
    # would remember it: the name must be known before the file exists.
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.zeros(3)}}, path)
    before = path.read_bytes()
    real_open = os.open

    def open_then_interrupt(*args, **kwargs):
        real_open(*args, **kwargs)  # the file now exists on disk, its descriptor is lost
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"model": {"w": torch.ones(3)}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_temporary_name_already_taken_is_refused_and_left_alone(tmp_path, monkeypatch):
    taken = tmp_path / (checkpoint.TMP_PREFIX + "taken")
    taken.write_bytes(b"someone else's")
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda nbytes: "taken")
    with pytest.raises(CheckpointError, match="cannot write a checkpoint in"):
        checkpoint.save({"model": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    assert taken.read_bytes() == b"someone else's"
    assert not (tmp_path / "last.pt").exists()


def test_a_saved_checkpoint_has_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        checkpoint.save({"model": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o640


def test_a_checkpoint_being_written_is_never_one_of_the_runs_pt_files(tmp_path, monkeypatch):
    # A kill -9 mid-write leaves the temporary file until the next run removes it: a reader
    # that takes a run's "*.pt" (a user's glob, a tool) must not find half a checkpoint there.
    seen = []
    real_replace = os.replace

    def look_then_replace(source, target):
        seen.append((Path(source).name, sorted(p.name for p in tmp_path.glob("*.pt"))))
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", look_then_replace)
    checkpoint.save({"model": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    (temporary, pt_files), = seen
    assert temporary.startswith(checkpoint.TMP_PREFIX)
    assert pt_files == []  # the temporary file, there at that moment, is not among them
