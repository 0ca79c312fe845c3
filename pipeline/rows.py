"""One CSV line of the Bitcoin minute file → six numbers, or the reason it is not a good row.

Pure functions over bytes: the producer reads the file in binary (no decode per line, `float()` takes
bytes), and tests call the same code without a broker. Bad rows are data: they get a reason string
that the dead-letter topic keeps beside the line number and the raw text.

The real Kaggle file is accepted as downloaded: the current header `Timestamp,Open,High,Low,Close,Volume`
and the older eight-column one (`...,Volume_(BTC),Volume_(Currency),Weighted_Price`, whose BTC volume
is taken as Volume), CRLF line ends, a byte-order mark, integer timestamps (`1325317920`) and rows of
`NaN` (rejected with their reason).
"""

from __future__ import annotations

import math

from core.errors import BadInput

FIELDS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")
VOLUME_ALIASES = ("volume", "volume_(btc)")

Row = tuple[float, float, float, float, float, float]


def header_columns(line: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(field count, index of each of FIELDS) when `line` is a header; None when it is a data row.

    A first line that is neither a header naming our columns nor a row of numbers is bad input.
    """
    names = [n.strip().strip('"').lower() for n in line.decode("utf-8-sig", "replace").strip().split(",")]
    try:
        float(names[0])
        return None  # no header: the file starts with data in the Kaggle column order
    except ValueError:
        pass
    index: list[int] = []
    for field in FIELDS:
        wanted = VOLUME_ALIASES if field == "Volume" else (field.lower(),)
        found = [i for i, name in enumerate(names) if name in wanted]
        if not found:
            raise BadInput(f"the header has no {field} column: {line[:200]!r}")
        index.append(found[0])
    return len(names), tuple(index)


class RowChecker:
    """Validates lines in file order; it remembers the last good Timestamp, which the next must pass."""

    def __init__(self, width: int = 6, columns: tuple[int, ...] = (0, 1, 2, 3, 4, 5)) -> None:
        self.width = width
        self.columns = columns
        self.standard = columns == (0, 1, 2, 3, 4, 5) and width == 6
        self.last_ts: float | None = None

    def check(self, line: bytes) -> tuple[bytes, Row] | str:
        """(Timestamp text, row) for a good line, else the reason it is rejected.

        The fast path parses six floats at once and looks closer only when something is off, so a
        good row costs a split and six `float()` calls.
        """
        fields = line.rstrip(b"\r\n").split(b",")
        if len(fields) != self.width:
            return f"wrong field count: {len(fields)} (expected {self.width})"
        if not self.standard:
            fields = [fields[i] for i in self.columns]
        try:
            row: Row = tuple(map(float, fields))  # type: ignore[assignment]
        except ValueError:
            return _field_problem(fields)
        ts, open_, high, low, close, volume = row
        if not math.isfinite(ts + open_ + high + low + close + volume):
            problem = _not_finite(row)
            if problem:
                return problem
        if min(open_, high, low, close, volume) < 0:
            name = next(n for n, v in zip(FIELDS[1:], row[1:], strict=True) if v < 0)
            return f"negative {name}: {row[FIELDS.index(name)]!r}"
        if high < low:
            return f"High below Low: {high!r} < {low!r}"
        if self.last_ts is not None and ts <= self.last_ts:
            return f"Timestamp not after the previous row's: {ts!r} <= {self.last_ts!r}"
        self.last_ts = ts
        return fields[0].strip(), row


def _field_problem(fields: list[bytes]) -> str:
    for name, text in zip(FIELDS, fields, strict=True):
        if not text.strip():
            return f"empty field: {name}"
        try:
            float(text)
        except ValueError:
            shown = text.decode("utf-8", "replace")[:40]
            return f"non-numeric field: {name}={shown!r}"
    return "unparseable row"  # not reached: float() failed on some field above


def _not_finite(row: Row) -> str | None:
    for name, value in zip(FIELDS, row, strict=True):
        if math.isnan(value):
            return f"NaN field: {name}"
        if math.isinf(value):
            return f"infinite field: {name}"
    return None  # finite values whose sum overflowed: still a good row


def raw_text(line: bytes) -> str:
    """The line as the dead-letter topic keeps it: text without its line end, undecodable bytes replaced."""
    return line.rstrip(b"\r\n").decode("utf-8", "replace")
