"""core.progress: the one progress display (the producer's bar, the consumer's line, training's line)."""

from __future__ import annotations

import io
import logging
import time

import pytest
from rich.console import Console

from core.progress import RowProgress, StageLine


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


def test_the_stage_line_redraws_in_place_on_a_terminal() -> None:
    """rich redraws it from its own thread: the seconds run on while a stage blocks (a Spark fit)."""
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=100)
    with StageLine(True, "close-segment-b1", console=terminal) as line:
        line.stage("split")
        line.stage("fit", 12_345)
        time.sleep(0.35)  # a few redraws with no call in between
        line.stage("score")
    text = out.getvalue()
    fit_draws = [d for d in text.split("\r") if "close-segment-b1 fit" in d]
    assert len(fit_draws) >= 2 and all("12,345 rows" in d for d in fit_draws), text
    assert "close-segment-b1 done" in text.rsplit("\r", 1)[-1], text  # the line kept, ended


def test_the_stage_line_says_a_failed_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError), StageLine(True, "trend-segment-b2") as line:
        line.stage("fit", 10)
        raise ValueError("the fit failed")
    assert "trend-segment-b2 fit failed" in capsys.readouterr().err


def test_the_stage_line_off_a_terminal_is_one_info_record_a_stage(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    training = logging.getLogger("training")
    with caplog.at_level(logging.INFO, logger="training"), StageLine(False, "close-b1", log=training) as line:
        line.stage("fit", 1_600)
        line.stage("score")
    assert [r.getMessage() for r in caplog.records] == ["close-b1: fit (1,600 rows)", "close-b1: score"]
    assert capsys.readouterr().err == ""
