"""The batch policy and the open batch, without a broker and without sleeping (a fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import BadInput
from pipeline.batching import BatchPolicy, OpenBatch
from pipeline.store import COLUMNS


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rows(start: int, n: int) -> np.ndarray:
    ts = 1325412060.0 + 60.0 * np.arange(start, start + n)
    return np.column_stack([ts, ts / 1e9, ts / 1e9 + 1, ts / 1e9 - 1, ts / 1e9, np.arange(n, dtype=float)])


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({}, "exactly one of --batch-rows"),
        ({"batch_rows": 5, "window_s": 1.0}, "exactly one of --batch-rows"),
        ({"batch_rows": 0}, "--batch-rows must be at least 1"),
        ({"window_s": 0.0}, "--window must be positive"),
        ({"window_s": float("nan")}, "--window must be positive"),
    ],
)
def test_policy_wants_exactly_one_rule_and_says_so_as_bad_input(bad: dict, said: str) -> None:
    with pytest.raises(BadInput, match=said) as caught:  # exit 2, not an unexpected ValueError (exit 1)
        BatchPolicy(**bad)
    assert caught.value.exit_code == 2


def test_count_policy_closes_at_n_rows_and_says_how_many_fit() -> None:
    batch = OpenBatch(BatchPolicy(batch_rows=10), clock=FakeClock())
    assert batch.room() == 10 and not batch.is_due()
    batch.add(0, 0, 6, rows(0, 7))
    assert batch.room() == 3 and not batch.is_due()
    batch.add(0, 7, 9, rows(7, 3))
    assert batch.room() == 0 and batch.is_due()
    assert batch.seconds_left() is None  # no window under the count policy


def test_window_policy_counts_from_the_first_row_not_from_creation() -> None:
    clock = FakeClock()
    batch = OpenBatch(BatchPolicy(window_s=5.0), clock=clock)
    clock.now += 100  # an idle consumer: no row, no window running
    assert batch.seconds_left() is None and not batch.is_due()
    batch.add(0, 0, 0, rows(0, 1))
    clock.now += 4.9
    batch.add(0, 1, 1, rows(1, 1))
    assert batch.seconds_left() == pytest.approx(0.1) and not batch.is_due()
    clock.now += 0.1
    assert batch.is_due() and batch.room() is None
    batch.clear()
    assert not batch.is_due() and batch.seconds_left() is None and batch.rows == 0


def test_window_never_closes_a_batch_without_rows() -> None:
    clock = FakeClock()
    batch = OpenBatch(BatchPolicy(window_s=1.0), clock=clock)
    batch.add(0, 5, 7, np.empty((0, len(COLUMNS))))  # three rejected messages
    clock.now += 10
    assert not batch.is_due() and batch.offsets == {0: (5, 7)} and not batch.empty


def test_offsets_track_first_and_last_per_partition_rejected_messages_included() -> None:
    batch = OpenBatch(BatchPolicy(batch_rows=100), clock=FakeClock())
    batch.add(0, 10, 14, rows(0, 5))
    batch.add(1, 3, 5, rows(5, 2))  # one of offsets 3..5 was rejected: 2 rows
    batch.add(0, 15, 19, rows(7, 5))
    assert batch.offsets == {0: (10, 19), 1: (3, 5)}
    assert batch.rows == 12
    with pytest.raises(ValueError):
        batch.add(0, 30, 29, rows(0, 0))


def test_rows_span_chunks_and_come_back_as_float64_columns_in_order() -> None:
    batch = OpenBatch(BatchPolicy(batch_rows=1000), clock=FakeClock(), chunk_rows=4)
    expected = rows(0, 11)
    batch.add(0, 0, 2, expected[:3])
    batch.add(0, 3, 10, expected[3:])
    assert len(batch._chunks) == 3  # 4 + 4 + 3: memory grows by fixed chunks, not per row
    table = batch.table()
    assert table.column_names == list(COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)
    got = np.column_stack([table.column(c).to_numpy() for c in COLUMNS])
    np.testing.assert_array_equal(got, expected)


def test_an_empty_batch_gives_an_empty_table() -> None:
    batch = OpenBatch(BatchPolicy(batch_rows=3), clock=FakeClock())
    assert batch.table().num_rows == 0 and batch.empty
