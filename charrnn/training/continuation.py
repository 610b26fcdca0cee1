"""Whether a resume continues its run exactly: the fingerprint of the text a run trains and is
scored on, and what a resume must restart (the carried hidden state, the best so far) when
the text or the window layout is no longer the run's."""

from __future__ import annotations

import hashlib

import numpy as np

from charrnn.data.batches import StreamLayout, plan_layout
from charrnn.precision import DTYPE_NAMES, DTYPES, resolve_precision
from charrnn.errors import CorpusError, DeviceError
from charrnn.options import TrainConfig
from charrnn.saved import TextFingerprint
from charrnn.training.trainer import Trainer

FINGERPRINT_CHUNK = 1 << 20  # ids hashed at a time: 4 MB as uint32


def text_fingerprint(train: np.ndarray, val: np.ndarray | None) -> TextFingerprint:
    """The training length, and the length and sha256 of the ids each evaluation scores."""
    digest = hashlib.sha256()
    if val is not None:
        for start in range(0, len(val), FINGERPRINT_CHUNK):
            # A fixed width: the same text hashes alike whatever id dtype the vocabulary takes.
            digest.update(np.asarray(val[start : start + FINGERPRINT_CHUNK], dtype="<u4").tobytes())
    return TextFingerprint(
        train_ids=int(len(train)),
        val_ids=0 if val is None else int(len(val)),
        val_sha256=None if val is None else digest.hexdigest(),
    )


def check_continuation(
    trainer: Trainer,
    stored: TrainConfig,
    stored_print: TextFingerprint | None,
    fingerprint: TextFingerprint,
    kind: str,
    trained_in: str | None = None,
) -> list[str]:
    """What keeps a resume from continuing the run exactly, one line each. Another window
    layout or another training text restarts the carried hidden state; another validation
    text restarts the best so far, so that best.pt is never chosen across two validation sets.
    ``trained_in``: the precision the run's steps ran in, where its checkpoint records it."""
    notices = _layout_changes(trainer, stored, fingerprint) + _precision_change(trainer, stored, trained_in)
    if stored_print is not None:  # None: a checkpoint from before fingerprints, nothing to compare
        notices += _text_changes(trainer, stored_print, fingerprint, "characters" if kind == "chars" else "tokens")
    return notices


def _precision_change(trainer: Trainer, stored: TrainConfig, trained_in: str | None) -> list[str]:
    """Another precision rounds every step otherwise: the run goes on, not bit-for-bit."""
    try:
        before = DTYPES[trained_in] if trained_in in DTYPES else resolve_precision(stored.precision, trainer.device)
    except DeviceError:
        before = None  # a precision this machine lacks
    if before == trainer.amp_dtype:
        return []
    now = DTYPE_NAMES[trainer.amp_dtype]
    was = f"in {trained_in} (--precision {stored.precision})" if trained_in else f"with --precision {stored.precision}"
    return [
        f"this run trained {was} and goes on in {now}: a resume is "
        "exact within one precision, so this one is not bit-for-bit"
    ]


def _layout_changes(trainer: Trainer, stored: TrainConfig, fingerprint: TextFingerprint) -> list[str]:
    config = trainer.config
    changed = [
        f"--{name.replace('_', '-')} {getattr(config, name)} (the run's is {getattr(stored, name)})"
        for name in ("batch_size", "seq_len")
        if getattr(config, name) != getattr(stored, name)
    ]
    if not changed or _layout_or_none(fingerprint.train_ids, stored, trainer.world_size) == trainer.batches.layout:
        return []
    trainer.hidden = None
    return [
        f"{' and '.join(changed)}: the windows no longer continue the run's, so this resume "
        "is not exact (the carried hidden state restarts from zero)"
    ]


def _text_changes(trainer: Trainer, stored: TextFingerprint, fingerprint: TextFingerprint, unit: str) -> list[str]:
    train_differs = stored.train_ids != fingerprint.train_ids
    val_differs = (stored.val_ids, stored.val_sha256) != (fingerprint.val_ids, fingerprint.val_sha256)
    sizes = f"{stored.train_ids:,} -> {fingerprint.train_ids:,} training"
    if train_differs:
        trainer.hidden = None
    if val_differs:
        trainer.progress.best_val_loss = None
        trainer.progress.evals_without_improvement = 0
        sizes = (f"{sizes}, " if train_differs else "") + f"{stored.val_ids:,} -> {fingerprint.val_ids:,} validation"
        return [
            f"the {'text' if train_differs else 'validation text'} differs from this run's "
            f"({sizes} {unit}): the best so far starts over, so best.pt will hold the best on "
            "the new validation text" + ("; the carried hidden state restarts from zero" if train_differs else "")
        ]
    if train_differs:
        return [
            f"the training text differs from this run's ({sizes} {unit}), so this resume is not "
            "exact (the carried hidden state restarts from zero)"
        ]
    return []


def _layout_or_none(train_ids: int, stored: TrainConfig, world_size: int) -> StreamLayout | None:
    """The layout the run's own options give on this text (None if they no longer fit it)."""
    try:
        return plan_layout(train_ids, stored.batch_size, stored.seq_len, world_size)
    except CorpusError:
        return None
