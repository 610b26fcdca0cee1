"""A saved run: everything a checkpoint holds, as one typed record.

``SavedRun`` is what training writes and what every reader (sampling, ``info``, ``eval``,
``export``, ``vocab``, a resume, the copying check) gets back; ``to_payload`` and
``from_payload`` are the only code that knows the payload dict's keys. The file around the
payload (magic, version, checksum, atomic write, safe unpickling) is ``charrnn.checkpoint``'s.

The payload, as written since format 1 (readers take the optional parts as absent)::

    charrnn_version   str
    model_config      ModelConfig as a dict
    vocab             the characters (chars), or each token's readable form (bytes, bpe)
    tokenizer         bytes and bpe only: {"kind": "bytes" | "bpe", "json": tokenizer.json}
    train_config      TrainConfig as a dict
    corpus            CorpusOptions as a dict (files, encoding, split, tokenizer, fingerprint)
    model             the weights: parameter name -> tensor
    trainer           the trainer's own state (Trainer.state_dict: optimizer, streams, RNG, ...)
    metrics           step, elapsed, best_val_loss, best_val_bpc

Core: nothing here imports torch, the model or the data layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from charrnn import __version__
from charrnn.errors import CheckpointError
from charrnn.options import DEFAULTS, ModelConfig, TrainConfig


@dataclass(frozen=True)
class SavedVocab:
    """A vocabulary as stored: its kind, and what rebuilds it (``charrnn.data.vocab_kinds``
    turns it into a working vocabulary and back)."""

    kind: str  # "chars", "bytes" or "bpe"
    # chars: the characters, in id order; bytes and bpe: each token's readable form.
    chars: tuple[str, ...]
    tokenizer_json: str | None = None  # bytes and bpe: the Hugging Face tokenizer.json

    def __len__(self) -> int:
        return len(self.chars)


@dataclass(frozen=True)
class TextFingerprint:
    """Enough to tell whether a resume reads the text the run was trained and scored on."""

    train_ids: int
    val_ids: int
    val_sha256: str | None

    def to_dict(self) -> dict:
        return {"train_ids": self.train_ids, "val_ids": self.val_ids, "val_sha256": self.val_sha256}

    @classmethod
    def from_dict(cls, data: dict) -> "TextFingerprint":
        return cls(data["train_ids"], data["val_ids"], data["val_sha256"])


@dataclass
class CorpusOptions:
    """The text a run reads and how: files, encoding, validation split, tokenizer."""

    train_files: list[str]
    val_files: list[str] = field(default_factory=list)
    encoding: str = DEFAULTS["corpus"]["encoding"]
    val_frac: float = DEFAULTS["corpus"]["val_frac"]
    tokenizer: str = DEFAULTS["corpus"]["tokenizer"]
    vocab_size: int | None = None  # bpe only: the size the tokenizer reached
    fingerprint: TextFingerprint | None = None  # None before the trainer has seen the text
    # `train --items`: the character between the items of the list; None: the text is a stream.
    items_delimiter: str | None = None

    def to_dict(self) -> dict:
        data = {
            "train_files": list(self.train_files),
            "val_files": list(self.val_files),
            "encoding": self.encoding,
            "val_frac": self.val_frac,
            "tokenizer": self.tokenizer,
        }
        if self.vocab_size is not None:
            data["vocab_size"] = self.vocab_size
        if self.fingerprint is not None:
            data["fingerprint"] = self.fingerprint.to_dict()
        if self.items_delimiter is not None:
            data["items_delimiter"] = self.items_delimiter
        return data

    @classmethod
    def from_dict(cls, data: dict, kind: str = DEFAULTS["corpus"]["tokenizer"]) -> "CorpusOptions":
        """``kind``: the vocabulary's, for checkpoints whose corpus options predate the key."""
        fingerprint = data.get("fingerprint")
        return cls(
            train_files=list(data.get("train_files", [])),
            val_files=list(data.get("val_files", [])),
            encoding=data.get("encoding", DEFAULTS["corpus"]["encoding"]),
            val_frac=data.get("val_frac", DEFAULTS["corpus"]["val_frac"]),
            tokenizer=data.get("tokenizer", kind),
            vocab_size=data.get("vocab_size"),
            fingerprint=None if fingerprint is None else TextFingerprint.from_dict(fingerprint),
            items_delimiter=data.get("items_delimiter"),
        )


@dataclass(frozen=True)
class Metrics:
    step: int = 0
    elapsed: float = 0.0  # training seconds, across resumes
    best_val_loss: float | None = None  # nats per token
    best_val_bpc: float | None = None  # bits per character

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "best_val_bpc": self.best_val_bpc,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Metrics":
        return cls(
            step=data.get("step", 0),
            elapsed=data.get("elapsed", 0.0),
            best_val_loss=data.get("best_val_loss"),
            best_val_bpc=data.get("best_val_bpc"),
        )


@dataclass
class SavedRun:
    """Everything a checkpoint holds: enough to sample alone, or to continue exactly.

    ``train_config``, ``corpus`` and ``trainer_state`` are None only for a checkpoint that
    lacks them, which can be sampled but not resumed."""

    model_config: ModelConfig
    vocab: SavedVocab
    weights: dict  # parameter name -> tensor, on the CPU
    train_config: TrainConfig | None = None
    corpus: CorpusOptions | None = None
    trainer_state: dict | None = None  # Trainer.state_dict(): the trainer's own schema
    metrics: Metrics = field(default_factory=Metrics)
    version: str | None = __version__  # the charrnn that wrote it

    def to_payload(self) -> dict:
        """The dict ``charrnn.checkpoint`` writes (keys as in the module docstring)."""
        payload: dict = {
            "charrnn_version": self.version,
            "model_config": self.model_config.to_dict(),
            "vocab": list(self.vocab.chars),
        }
        if self.vocab.tokenizer_json is not None:
            payload["tokenizer"] = {"kind": self.vocab.kind, "json": self.vocab.tokenizer_json}
        if self.train_config is not None:
            payload["train_config"] = self.train_config.to_dict()
        if self.corpus is not None:
            payload["corpus"] = self.corpus.to_dict()
        payload["model"] = self.weights
        if self.trainer_state is not None:
            payload["trainer"] = self.trainer_state
        payload["metrics"] = self.metrics.to_dict()
        return payload

    @classmethod
    def from_payload(cls, payload: dict, source: str | Path = "checkpoint") -> "SavedRun":
        """The run a checkpoint's payload holds; ``source`` names it in the error of a payload
        that is not one (a ``CheckpointError``)."""
        try:
            vocab = _vocab_from_payload(payload)
            train_config = payload.get("train_config")
            corpus = payload.get("corpus")
            return cls(
                model_config=ModelConfig.from_dict(payload["model_config"]),
                vocab=vocab,
                weights=payload["model"],
                train_config=None if train_config is None else TrainConfig.from_dict(train_config),
                corpus=None if corpus is None else CorpusOptions.from_dict(corpus, vocab.kind),
                trainer_state=payload.get("trainer"),
                metrics=Metrics.from_dict(payload.get("metrics") or {}),
                version=payload.get("charrnn_version"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{source}: checkpoint content is inconsistent ({exc})") from None

    @classmethod
    def load(cls, path: Path, which: str = "last") -> "SavedRun":
        """The run saved in a checkpoint file, or in a run directory's ``last`` (or ``best``)."""
        from charrnn import checkpoint

        return cls.from_payload(checkpoint.load(path, which), path)

    def save(self, path: Path) -> None:
        from charrnn import checkpoint

        checkpoint.save(self.to_payload(), path)

    def resumable(self, source: str | Path) -> "SavedRun":
        """This run, checked to hold what a resume continues from."""
        missing = [
            key
            for key, value in (("train_config", self.train_config), ("corpus", self.corpus), ("trainer", self.trainer_state))
            if value is None
        ]
        if missing:
            raise CheckpointError(
                f"{source}: the checkpoint holds no {', '.join(missing)}, so it can be sampled "
                "but not resumed; start a new run with --out DIR"
            )
        return self


def _vocab_from_payload(payload: dict) -> SavedVocab:
    tokenizer = payload.get("tokenizer")
    chars = tuple(payload["vocab"])
    if not tokenizer:
        return SavedVocab("chars", chars)
    return SavedVocab(tokenizer["kind"], chars, tokenizer["json"])
