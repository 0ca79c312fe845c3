"""core.progress: the one progress display (the producer's bar, the consumer's line)."""

from __future__ import annotations

import pytest

from core.progress import RowProgress


def test_the_open_ended_line_keeps_rows_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with RowProgress(True, "consuming", counts=("batches", "rejected")) as bar:
        bar.update(12_345, batches=3, rejected=7)
    line = capsys.readouterr().err  # not a terminal: rich prints the last state once, on stop
    assert "consuming" in line and "12,345 rows" in line
    assert "3 batches" in line and "7 rejected" in line and "rows/s" in line


def test_the_bar_counts_its_own_position_and_says_its_label(capsys: pytest.CaptureFixture[str]) -> None:
    with RowProgress(True, "producing", total=1000) as bar:
        bar.update(40, done=500, label="skipping")  # rows read 40, bar half way (bytes)
    err = capsys.readouterr().err
    assert "skipping" in err and "40 rows" in err and "ETA" in err


def test_disabled_it_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with RowProgress(False, "producing", total=10) as bar:
        bar.update(5, done=5, label="skipping")
    assert capsys.readouterr().err == ""
