"""Row parsing and validation: pure functions, no broker."""

from __future__ import annotations

import math

import pytest

from core.errors import BadInput
from pipeline.rows import RowChecker, header_columns, raw_text


def check(*lines: bytes) -> list[object]:
    checker = RowChecker()
    return [checker.check(line) for line in lines]


def test_good_row_keeps_the_timestamp_text_and_six_floats() -> None:
    assert check(b"1325412060.0,4.58,4.59,4.57,4.58,1.5\n") == [
        (b"1325412060.0", (1325412060.0, 4.58, 4.59, 4.57, 4.58, 1.5))
    ]


def test_integer_timestamps_and_crlf_line_ends_are_accepted() -> None:
    key, row = check(b"1325317920,4.39,4.39,4.39,4.39,0.45558087\r\n")[0]  # type: ignore[misc]
    assert key == b"1325317920"
    assert row[0] == 1325317920.0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"1325412060.0,4.58,4.58,4.58,4.58\n", "wrong field count: 5 (expected 6)"),
        (b"1325412060.0,4.58,4.58,4.58,4.58,1,7\n", "wrong field count: 7 (expected 6)"),
        (b"1325412060.0,,4.58,4.58,4.58,1\n", "empty field: Open"),
        (b"1325412060.0,4.58,abc,4.58,4.58,1\n", "non-numeric field: High='abc'"),
        (b"1325412060.0,NaN,NaN,NaN,NaN,NaN\n", "NaN field: Open"),
        (b"1325412060.0,4.58,4.58,4.58,4.58,inf\n", "infinite field: Volume"),
        (b"1325412060.0,4.58,4.58,4.58,-4.58,1\n", "negative Close: -4.58"),
        (b"1325412060.0,4.58,4.58,4.58,4.58,-1\n", "negative Volume: -1.0"),
        (b"1325412060.0,4.58,4.50,4.60,4.58,1\n", "High below Low: 4.5 < 4.6"),
    ],
)
def test_each_kind_of_bad_row_has_its_reason(line: bytes, reason: str) -> None:
    assert check(line) == [reason]


def test_timestamp_must_pass_the_previous_good_row() -> None:
    results = check(
        b"1325412120.0,1,1,1,1,1\n",
        b"1325412120.0,1,1,1,1,1\n",  # duplicate
        b"1325412060.0,1,1,1,1,1\n",  # goes back
        b"1325412180.0,1,1,1,1,1\n",
    )
    assert isinstance(results[0], tuple) and isinstance(results[3], tuple)
    assert results[1] == "Timestamp not after the previous row's: 1325412120.0 <= 1325412120.0"
    assert results[2] == "Timestamp not after the previous row's: 1325412060.0 <= 1325412120.0"


def test_a_rejected_row_does_not_move_the_timestamp_watermark() -> None:
    results = check(b"100,1,1,1,1,1\n", b"900,1,1,2,1,1\n", b"200,1,1,1,1,1\n")
    assert results[1] == "High below Low: 1.0 < 2.0"
    assert isinstance(results[2], tuple)


def test_headers_current_old_and_missing() -> None:
    assert header_columns(b"\xef\xbb\xbfTimestamp,Open,High,Low,Close,Volume\r\n") == (6, (0, 1, 2, 3, 4, 5))
    old = b"Timestamp,Open,High,Low,Close,Volume_(BTC),Volume_(Currency),Weighted_Price\n"
    assert header_columns(old) == (8, (0, 1, 2, 3, 4, 5))
    assert header_columns(b"1325412060.0,4.58,4.58,4.58,4.58,0.0\n") is None
    with pytest.raises(BadInput):
        header_columns(b"time,price\n")


def test_old_eight_column_rows_take_the_btc_volume() -> None:
    checker = RowChecker(8, (0, 1, 2, 3, 4, 5))
    key, row = checker.check(b"1325317920,4.39,4.39,4.39,4.39,0.45558087,2.0000000193,4.39\n")  # type: ignore[misc]
    assert key == b"1325317920" and row[5] == 0.45558087
    assert checker.check(b"1325317980,NaN,NaN,NaN,NaN,NaN,NaN,NaN\n") == "NaN field: Open"


def test_huge_finite_values_are_not_called_infinite() -> None:
    key, row = check(b"1,1e308,1e308,1e308,1e308,1e308\n")[0]  # type: ignore[misc]
    assert all(math.isfinite(v) for v in row)


def test_raw_text_survives_bad_bytes() -> None:
    assert raw_text(b"1,\xff,2\r\n") == "1,\ufffd,2"
    assert check(b"1,\xff,1,1,1,1\n") == ["non-numeric field: Open='\ufffd'"]
