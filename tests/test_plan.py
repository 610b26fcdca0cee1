"""The options resolver and the defaults table: what a request comes to on a CPU or a GPU, in
one process or several, new or resumed, without reading a file or touching a device."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from charrnn.cli.app import app
from charrnn.errors import ConfigError
from charrnn.generation.sample import SampleConfig
from charrnn.options import DEFAULTS, PRESET_TRAINING, PRESETS, ModelConfig, TrainConfig
from charrnn.saved import CorpusOptions, SavedRun, SavedVocab
from charrnn.training.plan import RunRequest, check_request, resolve_plan


def windows_by_hand(num_ids: int, batch: int, seq_len: int, world: int) -> int:
    """Steps per pass, from the batch layout's definition: B rows on each of ``world``
    processes, each row cut into windows of ``seq_len`` (the last partial one unused)."""
    usable = num_ids - 1
    rows = min(batch, usable // (seq_len * world))
    return usable // (rows * world) // seq_len


def saved_run(**train) -> SavedRun:
    return SavedRun(
        model_config=ModelConfig(vocab_size=40, cell="gru", layers=1, hidden=48, embed=12, dropout=0.1),
        vocab=SavedVocab("chars", tuple(chr(32 + i) for i in range(40))),
        weights={},
        train_config=TrainConfig(**{"batch_size": 8, "seq_len": 32, "max_steps": 100, **train}),
        corpus=CorpusOptions(["/data/a.txt"], [], "latin-1", 0.2, "chars"),
        trainer_state={},
    )


def test_a_new_run_takes_the_table_and_the_device_s_defaults():
    cpu = resolve_plan(RunRequest(sources=["a.txt"]), None, "cpu")
    assert cpu.preset == DEFAULTS["model"]["preset"]
    assert cpu.model == {**PRESETS[cpu.preset], "cell": DEFAULTS["model"]["cell"]}
    assert cpu.train == {
        **DEFAULTS["train"], **PRESET_TRAINING[cpu.preset], "minutes": DEFAULTS["budget"]["minutes"]
    }  # fmt: skip
    assert dataclasses.asdict(cpu.corpus) == {
        "train_specs": ["a.txt"], "val_specs": [], "extend_vocab": False, "vocab_size": None, **DEFAULTS["corpus"],
        "items_delimiter": None,
    }  # fmt: skip

    # A GPU plan needs no GPU: the device is only its type.
    gpu = resolve_plan(RunRequest(sources=["a.txt"]), None, "cuda")
    assert gpu.preset == DEFAULTS["gpu"]["preset"] != cpu.preset
    assert gpu.model["dropout"] == DEFAULTS["gpu"]["dropout"] and gpu.model["hidden"] == PRESETS[gpu.preset]["hidden"]
    assert gpu.train["batch_size"] == DEFAULTS["gpu"]["batch_size"] != cpu.train["batch_size"]
    assert gpu.train["lr"] == PRESET_TRAINING[gpu.preset]["lr"]


def test_what_is_given_wins_and_a_given_budget_replaces_the_default_one():
    plan = resolve_plan(
        RunRequest(sources=["a.txt"], preset="tiny", model={"hidden": 40, "cell": None}, train={"lr": 0.02, "max_steps": 7}),
        None,
        "cuda",
    )
    assert plan.model == {**PRESETS["tiny"], "cell": "lstm", "hidden": 40}
    assert plan.train["lr"] == 0.02 and plan.train["weight_decay"] == PRESET_TRAINING["tiny"]["weight_decay"]
    assert plan.train["max_steps"] == 7 and plan.train["minutes"] is None


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epochs_become_steps_with_the_world_size(world):
    plan = resolve_plan(RunRequest(sources=["a.txt"], epochs=1.5, train={"batch_size": 4, "seq_len": 16}), None, "cpu", world)
    assert plan.train["max_steps"] is None and plan.train["minutes"] is None
    config = plan.train_config(10_001)
    assert config.max_steps == -(-3 * windows_by_hand(10_001, 4, 16, world) // 2)  # ceil(1.5 x windows)
    assert windows_by_hand(10_001, 4, 16, 2) * 2 <= windows_by_hand(10_001, 4, 16, 1)  # N processes: 1/N the steps


def test_a_resume_keeps_the_run_s_options_and_turns_totals_and_extensions_into_steps():
    saved = saved_run()
    plan = resolve_plan(RunRequest(resume="r", train={"max_steps": 150, "lr": 0.001}), saved, "cuda", 2)
    assert plan.model == {"cell": "gru", "layers": 1, "hidden": 48, "embed": 12, "dropout": 0.1}
    assert plan.train == {**saved.train_config.to_dict(), "lr": 0.001}  # the stored budget, not the total
    assert dataclasses.asdict(plan.corpus) == {
        "train_specs": ["/data/a.txt"], "val_specs": [], "encoding": "latin-1", "val_frac": 0.2,
        "tokenizer": "chars", "vocab_size": None, "extend_vocab": False, "items_delimiter": None,
    }  # fmt: skip
    config = plan.train_config(5_000)
    assert plan.budget_extension(config, 5_000) == (50, 0.0)

    epochs = resolve_plan(RunRequest(resume="r", extend_epochs=2, extend_steps=3), saved, "cpu", 2)
    assert epochs.budget_extension(config, 5_000) == (3 + 2 * windows_by_hand(5_000, 8, 32, 2), 0.0)
    total = resolve_plan(RunRequest(resume="r", epochs=30), saved, "cpu", 1)
    assert total.budget_extension(config, 5_000) == (30 * windows_by_hand(5_000, 8, 32, 1) - 100, 0.0)

    lower = resolve_plan(RunRequest(resume="r", train={"max_steps": 50}), saved, "cpu")
    with pytest.raises(ConfigError, match="below this run's budget of 100 steps"):
        lower.budget_extension(config, 5_000)
    with pytest.raises(ConfigError, match="adds a time budget to a run planned in steps"):
        resolve_plan(RunRequest(resume="r", train={"minutes": 5.0}), saved, "cpu").budget_extension(config, 5_000)


@pytest.mark.parametrize(
    "request_, saved, message",
    [
        (RunRequest(resume="r", model={"hidden": 64}), saved_run(), "--hidden 64 differs from the checkpoint's 48"),
        (RunRequest(resume="r", tokenizer="bpe"), saved_run(), "--tokenizer bpe differs from the checkpoint's chars"),
        (RunRequest(sources=["a"], vocab_size=300), None, "--vocab-size applies to --tokenizer bpe only"),
        (RunRequest(sources=["a"], val_frac=1.0), None, r"--val-frac must be in \[0, 1\)"),
        (RunRequest(sources=["a"], epochs=0.0), None, "--epochs must be positive"),
        (RunRequest(sources=["a"], train={"lr": -1.0}), None, "--lr must be positive"),
    ],
)
def test_contradictions_are_refused_before_any_text_is_read(request_, saved, message):
    check_request(request_)
    with pytest.raises(ConfigError, match=message):
        resolve_plan(request_, saved, "cpu")


def test_the_configs_and_the_command_line_take_their_defaults_from_the_table():
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert train == DEFAULTS["train"]
    model = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"}
    assert model == {k: v for k, v in DEFAULTS["model"].items() if k != "preset"}
    sample_fields = {f.name: f.default for f in dataclasses.fields(SampleConfig)}
    sample_options = {p.name: p.default for p in typer.main.get_command(app).commands["sample"].params}
    for name, value in DEFAULTS["sample"].items():
        assert sample_options[name] == value, name
        if name in sample_fields:
            assert sample_fields[name] == value, name
    assert DEFAULTS["sample"]["temperature"] == 0.8  # what `charrnn sample` has always used

    helps = {p.name: p.help for p in typer.main.get_command(app).commands["train"].params}
    for section, name in [
        ("train", "seq_len"), ("train", "warmup_steps"), ("train", "min_lr_frac"), ("train", "grad_clip"),
        ("train", "eval_every"), ("train", "patience"), ("train", "seed"), ("train", "schedule"),
        ("corpus", "val_frac"), ("corpus", "encoding"), ("corpus", "tokenizer"), ("model", "cell"),
    ]:  # fmt: skip
        assert f"[default: {DEFAULTS[section][name]}]" in helps[name], name
    assert f"[default: {DEFAULTS['train']['batch_size']}; {DEFAULTS['gpu']['batch_size']} on a GPU]" in helps["batch_size"]
    assert f"[default: {DEFAULTS['budget']['minutes']:g} if no other budget]" in helps["minutes"]
