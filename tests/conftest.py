"""Shared fixtures: small real corpora and one small real trained run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = Path(os.environ.get("CHARRNN_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))

# A small text with structure a tiny model learns in seconds, plus brackets (rich markup
# characters) and non-ASCII, so that raw output and Unicode are exercised everywhere.
VERSE = (
    "[ROMEO] O, she doth teach the torches to burn bright!\n"
    "[JULIET] Good night, good night! parting is such sweet sorrow.\n"
    "[MERCUTIO] A plague o' both your houses! — café, naïve, 東京.\n"
)


def small_text(repeats: int = 120) -> str:
    return "".join(f"{i % 7} " + VERSE for i in range(repeats))


@pytest.fixture(autouse=True)
def _isolated_corpora(tmp_path, monkeypatch):
    """Named corpora resolve from ../shared/corpora; relative outputs land in tmp_path."""
    if SHARED_CORPORA.is_dir():
        monkeypatch.setenv("CHARRNN_CORPORA", str(SHARED_CORPORA))
    else:
        monkeypatch.delenv("CHARRNN_CORPORA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))  # encoded corpora, per test
    monkeypatch.delenv("DEBUG", raising=False)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "verse.txt"
    path.write_text(small_text(), encoding="utf-8")
    return path


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_CORPORA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path


TINY_MODEL = {"layers": 2, "hidden": 32, "embed": 16, "dropout": 0.0}
# Every option that a preset or a tuned default could change is pinned, so that what the tests
# train (and the thresholds they assert on it) does not move when the defaults are retuned.
TINY_TRAIN = {"batch_size": 8, "seq_len": 32, "lr": 5e-3, "weight_decay": 0.01, "warmup_steps": 5, "eval_every": 20}


def train_small_run(root: Path, model: dict, train: dict, sample_chars: int | None = None) -> Path:
    """A real training run on ``small_text()`` in ``root``; returns its run directory."""
    from charrnn.training.runs import RunRequest, prepare_run, train_run

    corpus = root / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run = prepare_run(
        RunRequest(sources=[str(corpus)], out=root / "run", model=model, train=train, device="cpu")
    )
    train_run(run) if sample_chars is None else train_run(run, sample_chars=sample_chars)
    return root / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One real training run (tiny model, a few seconds) shared by the sampling/CLI tests."""
    root = tmp_path_factory.mktemp("trained")
    os.environ.setdefault("CHARRNN_CACHE", str(root / "cache"))  # never the user's cache
    return train_small_run(
        root, dict(TINY_MODEL), {**TINY_TRAIN, "max_steps": 400, "lr": 1e-2, "eval_every": 100}
    )


@pytest.fixture(scope="session")
def model_and_vocab(trained_run):
    from charrnn.model.loading import load_model

    model, vocab, _ = load_model(trained_run, device="cpu")
    return model, vocab


def sample_text(model_and_vocab, **options) -> str:
    from charrnn.generation.sample import SampleConfig, stream

    model, vocab = model_and_vocab
    return "".join(stream(model, vocab, SampleConfig(**options)))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: step-by-step work (thousands of tiny operations) runs
    50x slower on two threads when the other core is busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cell_runs(trained_run, tmp_path_factory) -> dict[str, Path]:
    """A trained run of each cell, for the exports: the shared LSTM, and a short GRU and plain
    RNN. Their embeddings are as wide as the layers, so that the C model stores their first
    layer's input product per character (its folded input) while the LSTM keeps both."""
    runs = {"lstm": trained_run}
    for cell in ("gru", "rnn"):
        runs[cell] = train_small_run(
            tmp_path_factory.mktemp(cell),
            {"cell": cell, "layers": 2, "hidden": 32, "embed": 48, "dropout": 0.0},
            {**TINY_TRAIN, "max_steps": 60, "lr": 1e-2},
            sample_chars=0,
        )
    return runs
