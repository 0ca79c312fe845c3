"""When the truth is known: each poll's rows, joined with their neighbour minutes, as scorable minutes.

close and high_low learn their truth from the row itself (its Close, its High and Low); trend from the
NEXT minute (up = next Close > this Close), so a minute's trend is scored one row later. Both naive
baselines look one minute back (the previous Close; the previous minute's direction). A `Truth` carries
the last two rows from poll to poll so minutes at a poll's edges are neither lost nor scored twice.

Neighbours are found by Timestamp (exactly 60 s apart), never by position: a minute missing from the
stream leaves its neighbours without a baseline or a trend label, and they are left out rather than
compared with the wrong minute. Rows are sorted by Timestamp within a poll; a row older than the last
one seen (another partition, a replay) finds no neighbour in the carried rows and is scored where it can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.dataset import COLUMNS

TS, OPEN, HIGH, LOW, CLOSE, VOLUME = (
    COLUMNS.index(c) for c in ("Timestamp", "Open", "High", "Low", "Close", "Volume")
)
MINUTE_S = 60.0


@dataclass(frozen=True)
class Ready:
    """What one poll makes scorable: rows of Kaggle columns, (n, 6) float64 each."""

    rows: np.ndarray  # the poll's rows that have a previous minute: close and high_low score these
    previous_close: np.ndarray  # (n,) that previous minute's Close (close's baseline)
    trend_rows: np.ndarray  # rows whose previous and next minutes are both known now
    trend_label: np.ndarray  # (m,) 1.0 when the next Close is above this Close
    trend_baseline: np.ndarray  # (m,) 1.0 when this Close is above the previous one (persistence)
    new: int  # the poll's rows, scorable or not (what --max-minutes counts)


def minutes(rows: np.ndarray) -> np.ndarray:
    """The minute index of each row: int(Timestamp // 60), the step of the monitoring runs."""
    return (rows[:, TS] // MINUTE_S).astype(np.int64)


class Truth:
    """Joins each poll with the rows carried from the poll before."""

    def __init__(self) -> None:
        self.tail = np.empty((0, len(COLUMNS)), dtype=np.float64)  # the last two rows seen

    def take(self, rows: np.ndarray) -> Ready:
        new = rows[np.argsort(rows[:, TS], kind="stable")] if len(rows) else rows
        both = np.concatenate([self.tail, new])
        carried = len(self.tail)
        ts = both[:, TS]
        has_prev = np.zeros(len(both), dtype=bool)
        has_prev[1:] = ts[1:] - ts[:-1] == MINUTE_S
        has_next = np.zeros(len(both), dtype=bool)
        has_next[:-1] = has_prev[1:]
        prev_close = np.full(len(both), np.nan)
        prev_close[1:] = both[:-1, CLOSE]
        next_close = np.full(len(both), np.nan)
        next_close[:-1] = both[1:, CLOSE]

        own = np.zeros(len(both), dtype=bool)
        own[carried:] = True
        scored = own & has_prev
        # the carried rows' trend was not scored yet only for the last of them (its next minute is new)
        trend = has_prev & has_next
        trend[: max(carried - 1, 0)] = False
        if len(both):
            self.tail = both[-2:].copy()
        return Ready(
            rows=both[scored],
            previous_close=prev_close[scored],
            trend_rows=both[trend],
            trend_label=(next_close[trend] > both[trend, CLOSE]).astype(np.float64),
            trend_baseline=(both[trend, CLOSE] > prev_close[trend]).astype(np.float64),
            new=len(new),
        )
