"""charrnn train --config FILE.toml: options from a file, the command line winning, clear
errors, and a run repeated exactly from the config.toml it leaves in its directory."""

import sys

import pytest
import torch
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli.app import app
from charrnn.config_file import to_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()


def write_config(path, text_file, **extra):
    options = {
        "paths": [str(text_file)],
        "layers": 1,
        "hidden": 24,
        "embed": 8,
        "dropout": 0.2,
        "batch-size": 4,
        "seq_len": 24,
        "max-steps": 40,
        "eval-every": 10,
        "eval-chars": 500,
        "eval-sample-chars": 0,
        **extra,
    }
    path.write_text(to_toml(options), encoding="utf-8")
    return path


def test_options_come_from_the_file_and_the_command_line_wins(text_file, tmp_path):
    config = write_config(tmp_path / "c.toml", text_file, out=str(tmp_path / "run"), cell="gru")
    result = runner.invoke(app, ["train", "--config", str(config), "--max-steps", "12"])
    assert result.exit_code == 0, result.stderr
    payload = checkpoint.load(tmp_path / "run")
    assert payload["model_config"]["cell"] == "gru" and payload["model_config"]["hidden"] == 24
    assert payload["train_config"]["seq_len"] == 24 and payload["metrics"]["step"] == 12
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text(encoding="utf-8"))
    assert saved["max-steps"] == 12 and saved["cell"] == "gru" and saved["paths"] == [str(text_file.resolve())]


def test_a_run_repeats_exactly_from_its_config_toml(text_file, tmp_path):
    first = tmp_path / "first"
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path / "c.toml", text_file)), "--out", str(first)])
    assert result.exit_code == 0, result.stderr
    again = tmp_path / "again"
    result = runner.invoke(app, ["train", "--config", str(first / "config.toml"), "--out", str(again)])
    assert result.exit_code == 0, result.stderr
    a, b = checkpoint.load(first)["model"], checkpoint.load(again)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "metrics.jsonl").read_text().count('"eval"') == 4


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("hiden = 3\n", "unknown key 'hiden'; did you mean 'hidden'?"),
        ("layers = [\n", "not valid TOML"),
        ("layers = [1, 2]\n", "'layers' takes one value, not a list"),
        ("[model]\nlayers = 2\n", "[model] is a table; write the options at the top level"),
        ('seq-len = 8\nseq_len = 9\n', "'seq_len' is given twice"),
        ("layers = true\n", "'layers' must be an integer, not true"),
        ("hidden = 32.0\n", "'hidden' must be an integer, not 32.0"),
        ('lr = "0.1"\n', "'lr' must be a number or \"auto\", not \"0.1\""),
        ("lr = false\n", "'lr' must be a number or \"auto\", not false"),
        ("deterministic = 1\n", "'deterministic' must be true or false, not 1"),
        ("cell = 3\n", "'cell' must be a string (in quotes), not 3"),
        ("paths = [1]\n", "'paths' must be a list of strings (in quotes)"),
    ],
)
def test_bad_config_files_are_one_clear_line(tmp_path, content, fragment):
    bad = tmp_path / "bad.toml"
    bad.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_values_get_the_options_own_checks(text_file, tmp_path):
    for content in ('layers = "two"\n', "layers = 0\n", 'cell = "transformer"\n'):
        bad = write_config(tmp_path / "bad.toml", text_file)
        bad.write_text(bad.read_text().replace("layers = 1\n", content), encoding="utf-8")
        result = runner.invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "never")])
        assert result.exit_code == 2, content
        assert "layers" in result.stderr or "cell" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "never").exists()
    missing = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_toml_writer_round_trips_awkward_strings():
    options = {"paths": ['a "quoted"\\path', "東京\n"], "lr": 1e-05, "deterministic": False, "seed": 7}
    assert tomllib.loads(to_toml(options, "a header\nof two lines")) == options


def test_config_values_of_the_right_type_are_taken(text_file, tmp_path):
    """An integer where a number is wanted is fine; true/false only for flags, and kept."""
    config = write_config(tmp_path / "c.toml", text_file, lr=1, deterministic=True, out=str(tmp_path / "run"))
    config.write_text(config.read_text().replace("lr = 1\n", "lr = 1\nweight-decay = 0\n"), encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(config), "--max-steps", "2"])
    assert result.exit_code == 0, result.stderr
    train = checkpoint.load(tmp_path / "run")["train_config"]
    assert train["lr"] == 1.0 and train["weight_decay"] == 0.0 and train["deterministic"] is True
    assert checkpoint.load(tmp_path / "run")["model_config"]["layers"] == 1
