"""The CUDA path: cuDNN's fused layers, mixed precision, large-batch defaults. Skipped without CUDA."""

import pytest
import torch

from charrnn.device import bf16_rnn_supported, resolve_precision
from charrnn.model import CharRNN, ModelConfig
from charrnn.runs import RunRequest, load_model, prepare_run, train_run
from charrnn.sample import SampleConfig, stream
from charrnn.stepper import EagerStepper, make_stepper
from charrnn.train import GPU_BATCH_SIZE

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
