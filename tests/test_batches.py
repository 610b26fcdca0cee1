import numpy as np
import pytest
import torch

from charrnn.data.batches import StreamBatches, eval_streams, plan_layout
from charrnn.errors import CorpusError


def test_row_of_next_window_continues_row_of_previous_window():
    ids = np.arange(1000, dtype=np.int64)
    batches = StreamBatches(ids, batch_size=4, seq_len=10)
    previous_x, previous_y, starts = batches.next_window()
    assert starts
    for _ in range(len(batches) - 1):
        x, y, starts = batches.next_window()
        assert not starts
        # Each row picks up exactly where it left off.
        assert torch.equal(x[:, 0], previous_x[:, -1] + 1)
        assert torch.equal(y, x + 1)  # targets are the next character
        previous_x = x
    # After the last window a new epoch starts from the top again.
    x, _, starts = batches.next_window()
    assert starts and batches.epoch == 1
    assert x[0, 0].item() == 0


def test_rows_are_disjoint_contiguous_streams():
    ids = np.arange(401, dtype=np.int64)
    batches = StreamBatches(ids, batch_size=4, seq_len=10)
    windows = [batches.next_window()[0] for _ in range(len(batches))]
    rows = torch.cat(windows, dim=1)
    assert batches.layout.row_length == 100
    for r in range(4):
        assert rows[r].tolist() == list(range(100 * r, 100 * r + 100))


def test_short_text_shrinks_the_batch():
    layout = plan_layout(num_ids=50, batch_size=64, seq_len=16)
    assert layout.batch_size == 3  # 49 usable characters hold three rows of 16
    assert layout.windows >= 1


def test_text_shorter_than_one_window_is_a_clear_error():
    with pytest.raises(CorpusError, match="too few for one window"):
        plan_layout(num_ids=10, batch_size=4, seq_len=16)


def test_ranks_take_disjoint_rows_and_equal_steps():
    ids = np.arange(10_001, dtype=np.int64)
    first = StreamBatches(ids, batch_size=2, seq_len=8, rank=0, world_size=2)
    second = StreamBatches(ids, batch_size=2, seq_len=8, rank=1, world_size=2)
    assert len(first) == len(second)
    x0, _, _ = first.next_window()
    x1, _, _ = second.next_window()
    assert set(x0.flatten().tolist()).isdisjoint(x1.flatten().tolist())
    assert x1[0, 0].item() == 2 * first.layout.row_length


def test_cursor_round_trips():
    ids = np.arange(2000, dtype=np.int64)
    a = StreamBatches(ids, batch_size=4, seq_len=10)
    for _ in range(7):
        a.next_window()
    b = StreamBatches(ids, batch_size=4, seq_len=10)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next_window()[0], b.next_window()[0])


def test_eval_streams_score_every_character_once_and_prime_each_row_with_the_text_before_it():
    ids = np.arange(103, dtype=np.int64)
    streams = eval_streams(ids, rows=4, min_row=8, burn_in=5)
    windows = list(streams.windows(8))
    seen = torch.cat([y for _, y, _ in windows], dim=1)
    tail_inputs, tail_targets = streams.tail()
    # Where each target stands among the text's targets (the text counts up: target p is p + 1).
    for _, y, positions in windows:
        assert (y.numpy() == positions + 1).all()
    assert (tail_targets.numpy() == streams.tail_positions(slice(None)) + 1).all()
    assert (streams.tail_positions(slice(1, 5)) == [[101]]).all()
    assert seen.shape == (4, 25) and tail_targets.tolist() == [[101, 102]]
    assert sorted(seen.flatten().tolist() + tail_targets.flatten().tolist()) == list(range(1, 103))
    # Row r's first input follows the five characters it read first; row 0 has none to read.
    primer = streams.primer()
    assert primer.tolist() == [list(range(start - 5, start)) for start in (25, 50, 75)]
    assert windows[0][0][:, 0].tolist() == [0, 25, 50, 75]
    assert tail_inputs.tolist() == [[100, 101]]


def test_eval_streams_shrink_rows_for_short_texts():
    streams = eval_streams(np.arange(20, dtype=np.int64), rows=16, min_row=8)
    assert streams.inputs.shape == (2, 9) and streams.primer().tolist() == [list(range(9))]
    single = eval_streams(np.arange(5, dtype=np.int64), rows=16, min_row=8)
    assert single.inputs.shape == (1, 4) and single.primer() is None and single.tail() is None


def test_ranks_together_read_what_one_process_with_their_rows_reads_in_every_epoch():
    ids = np.arange(2_001, dtype=np.int64)
    single = StreamBatches(ids, batch_size=4, seq_len=10)
    ranks = [StreamBatches(ids, batch_size=2, seq_len=10, rank=r, world_size=2) for r in range(2)]
    for _ in range(3 * len(single)):  # three epochs
        x, y, _ = single.next_window()
        parts = [batches.next_window() for batches in ranks]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
    assert single.epoch == 3
