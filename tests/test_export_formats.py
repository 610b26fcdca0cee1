"""charrnn export --format pt2 / onnx (and int8), read back OUTSIDE charrnn: a Python started
with -I -S (no site, so the editable install of charrnn is not on its path; only the
site-packages directory with torch and onnxruntime is) in an empty directory, which first
checks that ``import charrnn`` fails there. Its next-character probabilities are compared with
the checkpoint's, the vocabulary with the one it carries; and the bad inputs of export."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.model.loading import load_model
from tests.conftest import REPO, TINY_TRAIN, small_text

runner = CliRunner()
PRIME = "[JULIET] Good night, good "
# The bound for int8 weights: at most 0.01 bits per character on a text.
INT8_BPC_BOUND = 0.01

# Runs as a user of the exported files would: torch and onnxruntime, charrnn not importable.
OUTSIDE = r"""
import json, sys
sys.path.append(sys.argv[1])
import importlib.util
assert importlib.util.find_spec("charrnn") is None, "charrnn is importable here"
jobs = json.loads(sys.argv[2])
import numpy as np

def pt2(path):
    import torch
    extra = {"charrnn.json": "", "tokenizer.json": ""}
    module = torch.export.load(path, extra_files=extra).module()
    def step(ids, state):
        with torch.no_grad():
            logits, state = module(torch.from_numpy(ids), torch.from_numpy(state))
        return logits.numpy(), state.numpy()
    return step, extra["charrnn.json"], extra["tokenizer.json"]

def onnx(path):
    import onnxruntime
    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    def step(ids, state):
        return tuple(sess.run(["logits", "next_state"], {"ids": ids, "state": state}))
    return step, props["charrnn.json"], props["tokenizer.json"]

results = []
for job in jobs:
    step, meta, tokenizer = {"pt2": pt2, "onnx": onnx}[job["format"]](job["path"])
    meta, tokenizer = json.loads(meta), json.loads(tokenizer)
    config = meta["model_config"]
    if meta["vocab_kind"] == "chars":
        index = {c: i for i, c in enumerate(meta["vocab"])}
        ids = [index[c] for c in job["text"]]
    else:
        ids = job["ids"]  # a tokenizer.json tokenizer is the tokenizers library's to run
    state = np.zeros((2 if config["cell"] == "lstm" else 1, config["layers"], 1, config["hidden"]), np.float32)
    probs = []
    for token in ids:
        logits, state = step(np.array([[token]], dtype=np.int64), state)
        e = np.exp(logits[0].astype(np.float64) - logits[0].max())
        probs.append((e / e.sum()).tolist())
    # Two samples at once: the batch is a dynamic dimension.
    batch = np.zeros(state.shape[:2] + (2,) + state.shape[3:], np.float32)
    two, _ = step(np.array([[ids[0]], [ids[1]]], dtype=np.int64), batch)
    results.append({"ids": ids, "probs": probs, "config": config, "vocab": meta["vocab"],
                    "tokenizer_size": len(tokenizer["model"]["vocab"]), "batch_rows": len(two)})
print(json.dumps(results))
"""


def run_outside(jobs: list[dict], cwd) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", OUTSIDE, sysconfig.get_paths()["purelib"], json.dumps(jobs)],
        capture_output=True, text=True, cwd=cwd, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def reference_probs(run, ids: list[int]) -> np.ndarray:
    model, _, _ = load_model(run, device="cpu")
    with torch.no_grad():
        logits, _, _ = model(torch.tensor([ids]))
    return torch.softmax(logits[0].double(), dim=-1).numpy()


def export(run, *options) -> tuple[str, str]:
    result = runner.invoke(app, ["export", str(run), *map(str, options)])
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    from charrnn.training.runs import RunRequest, prepare_run, train_run

    root = tmp_path_factory.mktemp("bpe")
    corpus = root / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run = prepare_run(RunRequest(
        sources=[str(corpus)], out=root / "run", device="cpu", tokenizer="bpe", vocab_size=300,
        model={"cell": "lstm", "layers": 1, "hidden": 24, "embed": 8, "dropout": 0.0},
        train={**TINY_TRAIN, "max_steps": 20},
    ))
    train_run(run, sample_chars=0)
    return root / "run"


@pytest.mark.slow
def test_pt2_and_onnx_of_every_cell_give_the_checkpoints_probabilities_outside_charrnn(cell_runs, tmp_path):
    jobs = []
    for cell, run in cell_runs.items():
        for file_format in ("pt2", "onnx"):
            path = tmp_path / f"{cell}.{file_format}"
            _, said = export(run, "--format", file_format, "--out", path)
            # What was written, its size, and the check run on it: two lines.
            assert said.count("\n") == 2 and f"wrote {path} (" in said and " kB;" in said, said
            check = float(said.split("max |Δp| ")[1].split()[0])
            assert check < 1e-5, said
            jobs.append({"format": file_format, "path": str(path), "text": PRIME, "cell": cell})
    results = run_outside(jobs, tmp_path)
    for job, got in zip(jobs, results):
        model, vocab, _ = load_model(cell_runs[job["cell"]], device="cpu")
        assert got["ids"] == vocab.encode(PRIME).tolist(), job
        assert got["vocab"] == list(vocab.chars) and got["tokenizer_size"] == len(vocab) + 1  # and [UNK]
        assert got["config"] == model.config.to_dict()
        assert got["batch_rows"] == 2
        difference = np.abs(np.array(got["probs"]) - reference_probs(cell_runs[job["cell"]], got["ids"])).max()
        assert difference < 1e-5, (job, difference)


def _bits(probs: np.ndarray, ids: list[int]) -> float:
    return float(-np.log(probs[np.arange(len(ids) - 1), ids[1:]]).mean() / math.log(2))


@pytest.mark.slow
def test_onnx_int8_is_smaller_and_within_the_bpc_bound_outside_charrnn(trained_run, tmp_path):
    path = tmp_path / "int8.onnx"
    _, said = export(trained_run, "--format", "onnx", "--quantize", "int8", "--out", path)
    assert "int8 weights: LSTM layers and decoder" in said and "bits per token" in said
    model, _, _ = load_model(trained_run, device="cpu")
    # Against the float32 weights alone: a 2x32 model's file is much graph and vocabulary;
    # the preset sizes' ratio to the float file (about 0.25) is what `bench --export` shows.
    assert path.stat().st_size < 0.6 * 4 * model.num_parameters()
    text = small_text(3)[:400]  # text the model was trained on: what it predicts well
    got = run_outside([{"format": "onnx", "path": str(path), "text": text}], tmp_path)[0]
    expected = reference_probs(trained_run, got["ids"])
    change = _bits(np.array(got["probs"]), got["ids"]) - _bits(expected, got["ids"])
    assert abs(change) <= INT8_BPC_BOUND, change
    # Quantized weights do move the probabilities: the check is not comparing float with float.
    assert np.abs(np.array(got["probs"]) - expected).max() > 1e-5


@pytest.mark.slow
def test_gru_int8_says_what_stays_float_in_two_lines_and_no_warnings(cell_runs, tmp_path):
    """The exporter's progress, its notes on operator sets it skips and every warning stay
    off the user's terminal, even with all warnings shown: the real command line prints what
    it wrote and the check, and for int8 of a GRU, that the GRU layers stay float32."""
    out = tmp_path / "g.onnx"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-m", "charrnn", "export", str(cell_runs["gru"]), "--format", "onnx", "--quantize", "int8", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert done.stdout == "" and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"wrote {out} (") and lines[1].startswith("check: ")
    assert "the GRU layers stay float32" in lines[1] and "bits per token" in lines[1]


@pytest.mark.slow
def test_bpe_model_exports_to_pt2_and_onnx_with_its_tokenizer(bpe_run, tmp_path):
    from tokenizers import Tokenizer

    path = tmp_path / "bpe.pt2"
    _, vocab, _ = load_model(bpe_run, device="cpu")
    ids = vocab.encode(PRIME).tolist()
    jobs = []
    for file_format in ("pt2", "onnx"):
        out = tmp_path / f"bpe.{file_format}"
        export(bpe_run, "--format", file_format, "--out", out)
        jobs.append({"format": file_format, "path": str(out), "ids": ids})
    for got in run_outside(jobs, tmp_path):
        assert got["vocab"] is None and got["tokenizer_size"] == len(vocab)
        assert np.abs(np.array(got["probs"]) - reference_probs(bpe_run, ids)).max() < 1e-5
    # The tokenizer.json it carries encodes as the model's own vocabulary does.
    extra = {"tokenizer.json": ""}
    torch.export.load(str(path), extra_files=extra)
    assert Tokenizer.from_str(extra["tokenizer.json"]).encode(PRIME).ids == ids


def test_default_format_is_pt2_beside_the_run(trained_run):
    _, said = export(trained_run)
    assert (trained_run / "model.pt2").is_file() and "torch.export program" in said


@pytest.mark.parametrize(
    "options, message",
    [
        (["--format", "pt2", "--quantize", "int8"], "--format pt2 has no quantized form, not int8; quantized exports: onnx (int8), c (int8 or float16)"),
        (["--format", "onnx", "--quantize", "float16"], "--format onnx takes --quantize int8, not float16"),
    ],
    ids=["pt2-int8", "onnx-float16"],
)
def test_quantize_with_a_format_that_lacks_it_is_one_line(options, message, trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), *options, "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()


RETIRED_TORCHSCRIPT = (
    "charrnn: invalid options: --format torchscript is retired: torch deprecates TorchScript; "
    "use --format pt2 (torch.export, loads with torch alone) or --format c"
)


@pytest.mark.parametrize(
    "options",
    [[], ["--best"], ["--out", "m.pt"], ["--quantize", "float16", "--out", "m.pt"]],
    ids=["default-out", "best", "out", "quantize"],
)
def test_torchscript_is_retired_one_line_exit_2_and_nothing_written(options, trained_run, tmp_path):
    """--format torchscript is still a choice, refused before any work: whatever comes with it,
    the one line saying it is retired and what to use, exit 2, and no file anywhere."""
    before = sorted(p.name for p in trained_run.iterdir())
    options = [str(tmp_path / o) if o == "m.pt" else o for o in options]
    result = runner.invoke(app, ["export", str(trained_run), "--format", "torchscript", *options])
    assert result.exit_code == 2, result.stderr
    assert result.stderr == RETIRED_TORCHSCRIPT + "\n" and result.stdout == ""
    assert not list(tmp_path.iterdir()) and sorted(p.name for p in trained_run.iterdir()) == before


def test_missing_checkpoint_is_one_line(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "missing")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "no such checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_pt2_needs_a_pt2_file_name(trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(tmp_path / "model.pt")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"--format pt2 writes a .pt2 file (torch.export.load reads no other name): --out {tmp_path / 'model.pt2'}" in result.stderr
    assert not list(tmp_path.iterdir())


def test_unwritable_output_is_one_line(trained_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = {
        blocker / "model.pt2": f"{blocker} is not a directory",
        blocker / "deeper" / "model.onnx": f"{blocker} is not a directory",
    }
    for out, answer in cases.items():
        result = runner.invoke(app, ["export", str(trained_run), "--format", out.suffix[1:], "--out", str(out)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"charrnn: invalid options: --out {out}: {answer}"), result.stderr


def test_a_missing_directory_for_the_file_is_created(trained_run, tmp_path):
    """As the C export creates its directory, pt2 and ONNX create the file's."""
    out = tmp_path / "edge" / "deeper" / "model.pt2"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and f"wrote {out} (" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt2"]


# Blocks one module, as an install without it would, then runs the real command line.
WITHOUT = "import sys; sys.modules[{module!r}] = None; sys.argv = ['charrnn', *sys.argv[1:]]; from charrnn.cli.app import main; main()"


@pytest.mark.parametrize(
    "module, file_format, message",
    [
        ("onnxruntime", "onnx", "charrnn: export: --format onnx needs onnxruntime, not installed here: pip install 'charrnn[export]'"),
        ("onnxscript", "onnx", "charrnn: export: --format onnx needs onnxscript, not installed here: pip install 'charrnn[export]'"),
        ("charrnn.export.c_model", "c", "charrnn: export: --format c is not part of this charrnn build"),
    ],
    ids=["onnxruntime", "onnxscript", "c-model"],
)
def test_missing_package_is_one_line(module, file_format, message, trained_run, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT.format(module=module), "export", str(trained_run), "--format", file_format, "--out", str(tmp_path / "m")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_bench_export_measures_every_format_on_the_validation_text(trained_run, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--export", str(trained_run), "--export-chars", "300", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "exports at batch 1 over 300 validation characters" in result.stdout
    figures = json.loads(out.read_text())["runs"][0]
    rows = {row["name"]: row for row in figures["rows"]}
    assert list(rows)[:4] == ["FastStepper (reference)", "pt2", "onnx", "onnx int8"]
    # The reference's bpc, against the model's own forward over the held-out tail (the last
    # tenth of the training file, as training split it), computed here independently.
    text = (trained_run.parent / "verse.txt").read_text(encoding="utf-8")
    held_out = text[int(len(text) * 0.9):][:300]
    _, vocab, _ = load_model(trained_run, device="cpu")
    ids = vocab.encode(held_out).tolist()
    assert rows["FastStepper (reference)"]["bpc"] == pytest.approx(_bits(reference_probs(trained_run, ids), ids), abs=1e-4)
    for name in ("pt2", "onnx"):
        assert abs(rows[name]["bpc_change"]) < 1e-4, name
        assert rows[name]["size_bytes"] > 0 and rows[name]["chars_per_s"] > 0
    assert abs(rows["onnx int8"]["bpc_change"]) <= INT8_BPC_BOUND
    assert rows["onnx int8"]["size_bytes"] < rows["onnx"]["size_bytes"]
    # The C rows come from charrnn.export.c_model.measure; without it, a note says so.
    assert "c" in rows or any(note.startswith("c: left out") for note in figures["notes"])


@pytest.mark.slow
def test_format_c_goes_through_the_c_writer(trained_run, tmp_path):
    """--format c hands the model to charrnn.export.c_model and says what it wrote and checked."""
    pytest.importorskip("charrnn.export.c_model", reason="this build has no C model")
    out = tmp_path / "model.c"
    _, said = export(trained_run, "--format", "c", "--quantize", "int8", "--out", out)
    lines = said.splitlines()
    assert out.is_file() and len(lines) == 2 and lines[0].startswith(f"wrote {out} (") and "int8 weights" in lines[0]
    assert lines[1].startswith("check: ")
