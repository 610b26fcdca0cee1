"""Lists of items: `train --items` (each item from the zero state after the delimiter, in an
order shuffled each epoch from the seed, resumed exactly) and `sample --items N` (whole new
items, one a line, none copied from the list, none twice), through the real CLI."""

from __future__ import annotations

import itertools
import random
import signal

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app
from tests.test_resume_exact import assert_bit_identical, run_training, start_training, wait_for_step

runner = CliRunner()
TINY = ["--layers", "1", "--hidden", "48", "--embed", "16", "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "5", "--seed", "3", "--threads", "1"]


def names() -> list[str]:
    """Made-up names of a fixed shape (consonant, vowel, consonant, vowel, 'n'): a tiny model
    learns the shape in a few hundred steps; the list holds 60% of them, so new well-formed
    names exist."""
    every = ["".join(p) + "n" for p in itertools.product("bdkmrt", "aeiou", "lnsv", "aio")]
    random.Random(0).shuffle(every)
    return every[: len(every) * 6 // 10]


def well_formed(item: str) -> bool:
    return len(item) == 5 and item[0] in "bdkmrt" and item[1] in "aeiou" and item[2] in "lnsv" and item[3] in "aio" and item[4] == "n"


@pytest.fixture(scope="module")
def items_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("items")
    listing = root / "names.txt"
    listing.write_text("\n".join(names()) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["train", str(listing), "--items", "--out", str(root / "run"), "--max-steps", "300", "--eval-every", "100", *TINY])
    assert result.exit_code == 0, result.stderr
    assert "batch 8 of 195 items" in result.stderr
    return root / "run"


def test_item_batches_start_each_item_after_the_delimiter_and_shuffle_each_epoch():
    from charrnn.data.items import IGNORED, ItemBatches

    ids = np.array([9, 1, 2, 9, 3, 9, 4, 5, 6, 9, 7, 9, 9, 8, 9], dtype=np.int64)  # 9 = delimiter
    batches = ItemBatches(ids, 9, batch_size=2, seed=5)
    assert len(batches) == 2 and batches.layout.items == 5
    x, y, first = batches.next_window()
    assert first and (x[:, 0] == 9).all()
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        length = row_y.index(9)
        assert row_x[1 : length + 1] == row_y[:length]  # inputs: delimiter then the item
        assert all(t == IGNORED for t in row_y[length + 1 :])  # padding is not trained on
    orders = [ItemBatches(ids, 9, 2, seed=5).order(epoch).tolist() for epoch in range(4)]
    assert orders[0] == batches.order(0).tolist() and len({tuple(o) for o in orders}) > 1
    assert ItemBatches(ids, 9, 2, seed=6).order(0).tolist() != orders[0] or ItemBatches(ids, 9, 2, seed=6).order(1).tolist() != orders[1]


def test_sample_items_are_whole_new_and_distinct(items_run):
    result = runner.invoke(app, ["sample", str(items_run), "--items", "20", "--seed", "1", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    items = result.stdout.splitlines()
    assert len(items) == 20 and len(set(items)) == 20
    assert not set(items) & set(names())  # --novel is the default for an items run
    assert sum(map(well_formed, items)) >= 14, items  # the shape was learned: most are names
    report = result.stderr.splitlines()[-1]
    assert report.startswith("20 of 20 items: ") and " copied from the list" in report
    drawn = int(report.split(": ")[1].split(" drawn")[0])
    copied = int(report.split(" drawn, ")[1].split(" copied")[0])
    assert drawn >= 20 + copied
    again = runner.invoke(app, ["sample", str(items_run), "--items", "20", "--seed", "1", "--threads", "1"])
    assert again.stdout == result.stdout  # the same seed, the same items


def test_no_novel_keeps_copies_and_prime_starts_every_item(items_run):
    copies = runner.invoke(app, ["sample", str(items_run), "--items", "30", "--no-novel", "--seed", "2", "--threads", "1"])
    assert copies.exit_code == 0 and " 0 copied from the list" in copies.stderr
    assert set(copies.stdout.splitlines()) & set(names()), "a model of 300 steps reproduces some of its list"
    primed = runner.invoke(app, ["sample", str(items_run), "--items", "10", "--prime", "ka", "--seed", "2", "--threads", "1"])
    assert primed.exit_code == 0, primed.stderr
    assert all(item.startswith("ka") for item in primed.stdout.splitlines())


@pytest.mark.parametrize(
    "args, answer",
    [
        (["--items", "5", "--beam", "2"], "--items cannot be combined with --beam"),
        (["--items", "5", "--num-samples", "2"], "--items does not use --num-samples"),
        (["--novel"], "--novel and --no-novel apply to --items"),
    ],
)
def test_items_options_that_do_not_fit_are_one_line(items_run, args, answer):
    result = runner.invoke(app, ["sample", str(items_run), *args])
    assert result.exit_code == 2 and answer in result.stderr and "Traceback" not in result.stderr


def test_items_of_a_stream_run_are_refused(trained_run):
    result = runner.invoke(app, ["sample", str(trained_run), "--items", "3"])
    assert result.exit_code == 2 and "this run read its text as one stream" in result.stderr


@pytest.mark.parametrize(
    "args, answer",
    [
        (["--items-delimiter", "ab"], "--items-delimiter must be one character"),
        (["--items-delimiter", "|"], "--items-delimiter '|' is not in the text"),
        (["--items", "--tokenizer", "bytes"], "--items reads a list of characters: it needs --tokenizer chars"),
        (["--items", "--epochs", "2"], "with --items give --max-steps or --minutes"),
        (["--items", "--lr", "auto"], "--lr auto tests rates on windows of a stream"),
    ],
)
def test_bad_items_training_is_one_line(tmp_path, args, answer):
    listing = tmp_path / "names.txt"
    listing.write_text("\n".join(names()), encoding="utf-8")
    result = runner.invoke(app, ["train", str(listing), "--max-steps", "2", *TINY, *args])
    assert result.exit_code != 0 and answer in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_items_run_resumes_bit_identically(tmp_path, monkeypatch):
    import tests.test_resume_exact as exact

    monkeypatch.setattr(exact, "STEPS", 40)
    listing = tmp_path / "names.txt"
    listing.write_text("\n".join(names()) + "\n", encoding="utf-8")
    args = [listing, "--items", "--max-steps", "40", "--eval-every", "10", "--checkpoint-every", "5", "--dropout", "0.1", "--layers", "2", *TINY[2:]]
    reference = run_training(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    proc = start_training(*args, "--out", tmp_path / "run")
    wait_for_step(proc, tmp_path / "run", 17)  # past one epoch (24 windows of 8 items: 195 // 8)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    final = run_training("--resume", tmp_path / "run")
    assert final.returncode == 0, final.stderr
    assert_bit_identical(tmp_path / "run", tmp_path / "reference")


def test_eval_scores_a_list_as_training_validated_it(items_run):
    """`charrnn eval` of an items run reads the items each from the zero state: on the run's
    own held-out items it gives the validation figure training logged."""
    import json

    from charrnn.data.corpus import hold_out

    records = [json.loads(line) for line in (items_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    listing = items_run.parent / "names.txt"
    _, held = hold_out(listing.read_text(encoding="utf-8"), 0.1)
    (items_run.parent / "held.txt").write_text(held, encoding="utf-8")
    result = runner.invoke(app, ["eval", str(items_run), str(items_run.parent / "held.txt")])
    assert result.exit_code == 0, result.stderr
    assert float(result.stdout.split()[0]) == pytest.approx(records[-1]["val_bpc"], abs=0.02)
