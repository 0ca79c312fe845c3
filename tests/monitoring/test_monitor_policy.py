"""The loop's policies on failures, without a broker or a store: a registry outage after the start is said
once and scoring goes on; a gate that fails is news, not the end; a version that cannot score is skipped.
Only the registry and the versions are stand-ins (the policies are what is tested)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from core.errors import RegistryUnavailable
from monitoring.monitor import Monitor
from monitoring.scoring import CHALLENGER, PRODUCTION, Member
from monitoring.settings import MonitorSettings
from monitoring.windows import RollingLog
from pipeline.settings import PipelineSettings
from training.settings import TrainingSettings


class Broken:
    inputs = None

    def outputs(self, columns: dict) -> dict:
        raise ZeroDivisionError("no")


class StandIn:
    """A lineup with btc-close v1 in Production and v2 as challenger; refresh fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.members = {
            "close": [
                Member("close", "1", "r", PRODUCTION, Broken()),
                Member("close", "2", "r", CHALLENGER, Broken()),
            ]
        }
        self.champions = {"close": "1"}

    def refresh(self) -> list[str]:
        if self.down:
            raise RegistryUnavailable("MLflow registry at http://x: connection refused")
        return []

    def all(self) -> list[Member]:
        return self.members["close"]


def monitor(lines: list[str], gate=None) -> tuple[Monitor, StandIn]:
    session = Monitor(
        PipelineSettings(kafka_bootstrap="127.0.0.1:1"),
        TrainingSettings(tracking_uri="sqlite:////nonexistent/mlflow.db"),
        MonitorSettings(min_minutes=2, windows="60"),
        report=lines.append,
        gate=gate,
    )
    stand_in = StandIn()
    session.lineup = stand_in  # type: ignore[assignment]
    return session, stand_in


def test_a_registry_outage_is_said_once_counted_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    session, lineup = monitor([])
    lineup.down = True
    with caplog.at_level(logging.WARNING, logger="monitoring"):
        session._refresh()
        session._refresh()
        lineup.down = False
        session._refresh()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "MLflow registry at http://x: connection refused; scoring the versions loaded until it answers",
        "the MLflow registry answers again",
    ]
    assert "btcflow_monitor_registry_errors_total 2.0" in session.exporter.text()
    assert len(session.lineup.all()) == 2  # what was loaded is still scored


def test_a_failing_gate_is_reported_and_the_loop_goes_on() -> None:
    lines: list[str] = []

    def gate(kind: str) -> str:
        raise RuntimeError("Spark did not start")

    session, _ = monitor(lines, gate)
    for version, predicted in (("1", 9.0), ("2", 1.0)):
        log = RollingLog("regression", 60)
        log.add(
            np.arange(3), {"actual": np.ones(3), "predicted": np.full(3, predicted), "baseline": np.ones(3)}
        )
        session.logs[("btc-close", version)] = log
    session._judge()
    assert lines[0].startswith("btc-close v2 beats Production v1 live")
    assert lines[1] == "--promote: handing btc-close to the promotion gate"
    assert lines[2] == "promotion gate for btc-close did not run: Spark did not start"


def test_a_version_that_fails_to_score_is_counted_and_the_poll_still_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, _ = monitor([])
    rows = np.array([[60.0 * i, 1.0, 2.0, 0.5, 1.5, 3.0] for i in range(5)])
    with caplog.at_level(logging.WARNING, logger="monitoring"):
        session._take(rows, ["not JSON: x"])
        session._take(rows + [300.0, 0, 0, 0, 0, 0], [])
    assert session.scored == 10 and session.bad == 1
    assert len([r for r in caplog.records if "failed to score" in r.getMessage()]) == 2  # once per version
    page = session.exporter.text()
    assert 'btcflow_monitor_scoring_errors_total{model="btc-close",version="1"} 2.0' in page
    assert "btcflow_monitor_rows_scored_total 10.0" in page
