"""The batch policy and the open batch, kept apart from Kafka so the rule "when does a batch close?"
is tested without a broker and without sleeping (the clock is injected).

Rows are held as float64 columns in fixed-size numpy chunks, never as one Python object per row:
a 2,330,000-row batch costs its 112 MB of numbers and nothing more, and becomes an Arrow table
without copying.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from core.errors import BadInput
from pipeline.store import CHUNK_ROWS, COLUMNS, SCHEMA  # 12 MB per chunk, one parquet row group


class BatchPolicy:
    """Closes a batch at `batch_rows` rows or `window_s` seconds after its first row (exactly one is set)."""

    def __init__(self, batch_rows: int | None = None, window_s: float | None = None) -> None:
        # BadInput (exit 2): these come straight from the user's options; the CLI checks nothing itself
        if (batch_rows is None) == (window_s is None):
            raise BadInput("give exactly one of --batch-rows N and --window SECONDS")
        if batch_rows is not None and batch_rows < 1:
            raise BadInput(f"--batch-rows must be at least 1, not {batch_rows}")
        if window_s is not None and not window_s > 0:
            raise BadInput(f"--window must be positive (seconds), not {window_s}")
        self.batch_rows = batch_rows
        self.window_s = window_s


class OpenBatch:
    """The rows read since the last closed batch, and the Kafka offsets they (and any rejected
    messages among them) came from, so that the manifest can say exactly where to resume."""

    def __init__(
        self,
        policy: BatchPolicy,
        clock: Callable[[], float] = time.monotonic,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.chunk_rows = chunk_rows
        self.clear()

    def clear(self) -> None:
        """Forget everything held: after a close, or when a rebalance makes the rows someone else's."""
        self._chunks: list[np.ndarray] = []  # each (len(COLUMNS), chunk_rows), filled left to right
        self._fill = 0  # rows used in the last chunk
        self.rows = 0
        self.offsets: dict[int, tuple[int, int]] = {}
        self.started_at: float | None = None

    @property
    def empty(self) -> bool:
        """No row and no offset: nothing to write, nothing to resume from."""
        return not self.offsets

    def room(self) -> int | None:
        """Rows that still fit under the count policy (None: no count limit)."""
        if self.policy.batch_rows is None:
            return None
        return max(self.policy.batch_rows - self.rows, 0)

    def seconds_left(self) -> float | None:
        """Seconds until the window closes the batch (None: no window, or no row yet)."""
        if self.policy.window_s is None or self.started_at is None:
            return None
        return max(self.started_at + self.policy.window_s - self.clock(), 0.0)

    def is_due(self) -> bool:
        """The batch holds rows and the policy says close it now."""
        if self.rows == 0:
            return False
        if self.policy.batch_rows is not None:
            return self.rows >= self.policy.batch_rows
        left = self.seconds_left()
        return left is not None and left <= 0

    def add(self, partition: int, first_offset: int, last_offset: int, values: np.ndarray) -> None:
        """Take the rows of one contiguous run of messages from `partition`.

        `values` is (n, 6) in COLUMNS order and may hold fewer rows than the offsets span: rejected
        messages are not rows, but their offsets belong to this batch so that no restart reads them again.
        """
        if last_offset < first_offset:
            raise ValueError("last_offset before first_offset")
        first, last = self.offsets.get(partition, (first_offset, last_offset))
        self.offsets[partition] = (min(first, first_offset), max(last, last_offset))
        n = len(values)
        if n == 0:
            return
        if values.shape[1] != len(COLUMNS):
            raise ValueError(f"rows must have {len(COLUMNS)} columns")
        if self.started_at is None:
            self.started_at = self.clock()
        columns = values.T
        done = 0
        while done < n:
            if not self._chunks or self._fill == self.chunk_rows:
                self._chunks.append(np.empty((len(COLUMNS), self.chunk_rows), dtype=np.float64))
                self._fill = 0
            take = min(n - done, self.chunk_rows - self._fill)
            self._chunks[-1][:, self._fill : self._fill + take] = columns[:, done : done + take]
            self._fill += take
            done += take
        self.rows += n

    def table(self) -> pa.Table:
        """The rows as an Arrow table of float64 columns, sharing the chunks' memory (no copy)."""
        pieces = [chunk for chunk in self._chunks[:-1]]
        if self._chunks:
            pieces.append(self._chunks[-1][:, : self._fill])
        # pa.array wraps a contiguous float64 row without copying; pa.chunked_array on numpy would copy
        arrays = [
            pa.chunked_array([pa.array(p[i]) for p in pieces], type=pa.float64()) for i in range(len(COLUMNS))
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
