"""The saved run: what a checkpoint holds, in and out of its payload dict, and checkpoints as
the code before ``SavedRun`` wrote them (charrnn 0.1.0, format 1) loading, sampling and
resuming as they did."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.errors import CheckpointError
from charrnn.options import ModelConfig, TrainConfig
from charrnn.saved import CorpusOptions, Metrics, SavedRun, SavedVocab, TextFingerprint
from charrnn.training.runs import RunRequest, prepare_run, train_run
from tests.conftest import TINY_MODEL, TINY_TRAIN

runner = CliRunner()


def same(a, b) -> bool:
    """Equal values, tensors included, and dicts with the same keys in the same order."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def payload_as_previous_code_wrote_it(run) -> dict:
    """``Run.payload()`` as it was before ``SavedRun``: every key written out here, not through
    the code under test, so a change of the on-disk shape shows."""
    m, t, c, p = run.model.config, run.trainer.config, run.corpus_options, run.trainer.progress
    vocab = run.vocab
    corpus = {
        "train_files": list(c.train_files),
        "val_files": list(c.val_files),
        "encoding": c.encoding,
        "val_frac": c.val_frac,
        "tokenizer": c.tokenizer,
        **({"vocab_size": len(vocab)} if c.tokenizer == "bpe" else {}),
        "fingerprint": {
            "train_ids": c.fingerprint.train_ids,
            "val_ids": c.fingerprint.val_ids,
            "val_sha256": c.fingerprint.val_sha256,
        },
    }
    return {
        "charrnn_version": "0.1.0",
        "model_config": {
            "vocab_size": m.vocab_size, "cell": m.cell, "layers": m.layers,
            "hidden": m.hidden, "embed": m.embed, "dropout": m.dropout,
        },  # fmt: skip
        "vocab": list(vocab.chars),
        **({"tokenizer": {"kind": vocab.kind, "json": vocab.tokenizer_json}} if vocab.kind != "chars" else {}),
        "train_config": {
            "batch_size": t.batch_size, "seq_len": t.seq_len, "lr": t.lr, "min_lr_frac": t.min_lr_frac,
            "warmup_steps": t.warmup_steps, "schedule": t.schedule, "weight_decay": t.weight_decay,
            "grad_clip": t.grad_clip, "max_steps": t.max_steps, "minutes": t.minutes,
            "eval_every": t.eval_every, "eval_chars": t.eval_chars, "checkpoint_every": t.checkpoint_every,
            "patience": t.patience, "seed": t.seed, "precision": t.precision, "deterministic": t.deterministic,
        },  # fmt: skip
        "corpus": corpus,
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "trainer": run.trainer.state_dict(),
        "metrics": {
            "step": p.step,
            "elapsed": p.elapsed,
            "best_val_loss": p.best_val_loss,
            "best_val_bpc": None if p.best_val_loss is None else p.best_val_loss * run.trainer.tokens_per_char / 0.6931471805599453,
        },
    }


def tiny_run(text_file, out, **request):
    run = prepare_run(
        RunRequest(
            sources=[str(text_file)], out=out, model=dict(TINY_MODEL),
            train={**TINY_TRAIN, "max_steps": 6, "eval_every": 3}, device="cpu", **request,
        )
    )  # fmt: skip
    train_run(run, sample_chars=0)
    return run


@pytest.mark.parametrize("tokenizer", ["chars", "bytes"])
def test_a_checkpoint_written_by_the_previous_code_loads_samples_and_resumes(text_file, tmp_path, tokenizer):
    run = tiny_run(text_file, tmp_path / "run", tokenizer=tokenizer)
    old = payload_as_previous_code_wrote_it(run)
    (tmp_path / "old").mkdir()
    checkpoint.save(old, tmp_path / "old" / checkpoint.LAST)

    saved = SavedRun.load(tmp_path / "old")
    assert same(saved.to_payload(), old)  # read and written back key for key
    assert saved.vocab.kind == tokenizer and saved.version == "0.1.0"
    assert saved.metrics.step == 6 and saved.corpus.fingerprint.train_ids == len(run.corpus.train)
    assert saved.train_config == run.trainer.config and saved.model_config == run.model.config

    info = runner.invoke(app, ["info", str(tmp_path / "old"), "--json"])
    assert info.exit_code == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["model"] == old["model_config"] and facts["train_config"] == old["train_config"]
    assert facts["corpus"] == old["corpus"] and facts["step"] == 6 and facts["charrnn_version"] == "0.1.0"

    # The same weights and vocabulary give the same characters for the same seed.
    texts = [
        runner.invoke(app, ["sample", str(where), "--length", "80", "--seed", "4"])
        for where in (tmp_path / "old", tmp_path / "run")
    ]
    assert all(t.exit_code == 0 for t in texts) and texts[0].stdout == texts[1].stdout

    resumed = prepare_run(RunRequest(resume=tmp_path / "old", extend_steps=2, device="cpu"))
    assert resumed.notices == [] and resumed.trainer.step == 6
    assert train_run(resumed, sample_chars=0).step == 8
    assert checkpoint.load(tmp_path / "old")["metrics"]["step"] == 8


def test_what_training_writes_is_the_saved_run_read_back(trained_run):
    payload = checkpoint.load(trained_run)
    saved = SavedRun.from_payload(payload)
    assert same(saved.to_payload(), payload)
    again = SavedRun.from_payload(saved.to_payload())
    assert again.model_config == saved.model_config and again.train_config == saved.train_config
    assert again.corpus == saved.corpus and again.metrics == saved.metrics and again.vocab == saved.vocab
    assert same(again.weights, saved.weights) and same(again.trainer_state, saved.trainer_state)


def test_a_saved_run_round_trips_field_for_field():
    weights = {"embedding.weight": torch.arange(6.0).reshape(3, 2)}
    full = SavedRun(
        model_config=ModelConfig(vocab_size=3, cell="gru", layers=1, hidden=4, embed=2),
        vocab=SavedVocab("bpe", ("a", "b", "ab"), '{"model": {"vocab": {}}}'),
        weights=weights,
        train_config=TrainConfig(batch_size=2, max_steps=9, eval_chars=100),
        corpus=CorpusOptions(["/t.txt"], ["/v.txt"], "latin-1", 0.0, "bpe", 3, TextFingerprint(10, 4, "ff")),
        trainer_state={"progress": {"step": 2}},
        metrics=Metrics(step=2, elapsed=1.5, best_val_loss=0.7, best_val_bpc=1.01),
        version="9.9",
    )
    payload = full.to_payload()
    assert list(payload) == [
        "charrnn_version", "model_config", "vocab", "tokenizer", "train_config", "corpus", "model", "trainer", "metrics",
    ]  # fmt: skip
    assert payload["tokenizer"] == {"kind": "bpe", "json": '{"model": {"vocab": {}}}'} and payload["vocab"] == ["a", "b", "ab"]
    back = SavedRun.from_payload(payload)
    assert back == full  # dataclass equality; the one tensor is the same object

    # A checkpoint of weights alone is still a model to sample: the optional parts stay absent.
    bare = SavedRun(ModelConfig(vocab_size=2), SavedVocab("chars", ("x", "y")), weights)
    assert list(bare.to_payload()) == ["charrnn_version", "model_config", "vocab", "model", "metrics"]
    assert SavedRun.from_payload(bare.to_payload()) == bare
    with pytest.raises(CheckpointError, match="can be sampled but not resumed"):
        bare.resumable("x.pt")


@pytest.mark.parametrize("missing", ["model_config", "vocab"])
def test_a_payload_without_a_model_is_refused_in_one_line(trained_run, tmp_path, missing):
    payload = checkpoint.load(trained_run)
    del payload[missing]
    checkpoint.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=rf"bad.pt: checkpoint content is inconsistent \('{missing}'\)"):
        SavedRun.load(tmp_path / "bad.pt")
    result = runner.invoke(app, ["info", str(tmp_path / "bad.pt")])
    assert result.exit_code == 1 and "checkpoint content is inconsistent" in result.stderr
    assert "Traceback" not in result.stderr
