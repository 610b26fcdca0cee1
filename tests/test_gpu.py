"""The CUDA path: cuDNN's fused layers, mixed precision, large-batch defaults. Skipped without CUDA."""

import os
import subprocess
import sys

import pytest
import torch

from charrnn import checkpoint

from charrnn.device import bf16_rnn_supported
from charrnn.precision import resolve_precision
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.loading import load_model
from charrnn.training.runs import RunRequest, prepare_run, train_run
from charrnn.generation.sample import SampleConfig, stream
from charrnn.generation.stepper import EagerStepper, make_stepper
from charrnn.options import GPU_DEFAULT_OVERRIDES, GPU_DEFAULT_PRESET, PRESETS
from charrnn.training.trainer import GPU_BATCH_SIZE

from tests.conftest import TINY_MODEL, small_text

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_training_on_gpu_uses_fp16_autocast_a_scaler_and_a_large_batch(tmp_path):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(400), encoding="utf-8")
    run = prepare_run(
        RunRequest(sources=[str(corpus)], out=tmp_path / "run", model=dict(TINY_MODEL),
                   train={"max_steps": 30, "seq_len": 16, "eval_every": 30}, device="cuda")  # fmt: skip
    )
    assert run.trainer.amp_dtype == torch.float16 and run.trainer.scaler.is_enabled()
    assert run.trainer.config.batch_size == GPU_BATCH_SIZE
    result = train_run(run)
    assert result.best_val_loss is not None and result.best_val_loss < 4.0


def test_gpu_checkpoint_samples_on_gpu_through_cudnn_and_matches_cpu(tmp_path):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    run = prepare_run(
        RunRequest(sources=[str(corpus)], out=tmp_path / "run", model=dict(TINY_MODEL),
                   train={"max_steps": 20, "batch_size": 8, "seq_len": 16}, device="cuda", )  # fmt: skip
    )
    train_run(run)
    model, vocab, _ = load_model(tmp_path / "run", device="cuda")
    assert isinstance(make_stepper(model, "auto"), EagerStepper)
    text = "".join(stream(model, vocab, SampleConfig(length=80, temperature=1.0, seed=3), "cuda"))
    assert len(text) == 80
    # cuDNN may use TF32: compare the next-character distributions, not exact characters.
    cpu_model, _, _ = load_model(tmp_path / "run", device="cpu")
    prompt = torch.tensor([vocab.encode("[ROMEO] O, she").tolist()])
    on_gpu, _ = make_stepper(model).prime(prompt.cuda())
    on_cpu, _ = make_stepper(cpu_model).prime(prompt)
    torch.testing.assert_close(on_gpu.float().cpu().softmax(-1), on_cpu.softmax(-1), atol=2e-2, rtol=0)


def test_bf16_is_probed_not_assumed():
    device = torch.device("cuda")
    if bf16_rnn_supported():
        assert resolve_precision("bf16", device) == torch.bfloat16
    else:
        from charrnn.errors import DeviceError

        with pytest.raises(DeviceError):
            resolve_precision("bf16", device)


def test_cudnn_weights_are_one_flat_buffer_after_load(tmp_path):
    model = CharRNN(ModelConfig(vocab_size=20, layers=2, hidden=32, embed=8)).cuda()
    model.rnn.flatten_parameters()
    x = torch.randint(0, 20, (4, 10), device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        logits, loss, _ = model(x, targets=x)
    assert logits.dtype == torch.float16 and loss.dtype == torch.float32


def test_default_run_on_gpu_builds_the_gpu_preset(tmp_path):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(40), encoding="utf-8")
    run = prepare_run(RunRequest(sources=[str(corpus)], out=tmp_path / "run", train={"max_steps": 1}, device="cuda"))
    expected = {**PRESETS[GPU_DEFAULT_PRESET], **GPU_DEFAULT_OVERRIDES}
    assert {key: getattr(run.model.config, key) for key in expected} == expected


@pytest.mark.parametrize("shape", [["--layers", "2", "--dropout", "0"], ["--layers", "1", "--dropout", "0.2"]], ids=["2-layers-no-dropout", "1-layer-dropout"])
def test_deterministic_gpu_run_resumes_bit_identically(tmp_path, shape):
    """--deterministic on CUDA: 12 steps straight equal 6 steps, a new process, 6 more.
    (Dropout between cuDNN's layers cannot be replayed, and is refused: test_bad_inputs.py.)"""
    corpus = tmp_path / "verse.txt"
    corpus.write_text(small_text(), encoding="utf-8")
    # A constant rate, so that a 6-step run plans the same schedule as a 12-step one.
    options = [*shape, "--hidden", "64", "--embed", "16", "--batch-size", "8", "--seq-len", "32",
               "--schedule", "constant", "--eval-every", "3", "--eval-sample-chars", "0",
               "--device", "cuda", "--deterministic", "--seed", "5"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"} | {"NO_COLOR": "1"}

    def train(*args):
        proc = subprocess.run([sys.executable, "-m", "charrnn", "train", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    train(corpus, "--out", tmp_path / "straight", "--max-steps", 12, *options)
    train(corpus, "--out", tmp_path / "stopped", "--max-steps", 6, *options)
    train("--resume", tmp_path / "stopped", "--max-steps", 12, "--device", "cuda")
    straight = checkpoint.load(tmp_path / "straight" / "last.pt")["model"]
    resumed = checkpoint.load(tmp_path / "stopped" / "last.pt")["model"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
