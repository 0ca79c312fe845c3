"""The loop's policies, without a broker or a store: a registry outage after the start is said once and
scoring goes on; a gate is a child process the loop never waits for, whose failure is news, and a stop ends
it with all it started; a version that cannot score is skipped, one that leaves the lineup is dropped;
live points go out one per minute, batched, thinned only past their budget, and every run ends with why.
Only the registry, the versions and the MLflow client are stand-ins (the policies are what is tested)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import numpy as np
import psutil
import pytest

from core.errors import RegistryUnavailable
from monitoring.monitor import Monitor
from monitoring.promotion import Gates
from monitoring.runs import END_TAG, MonitorRuns
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


def monitor(lines: list[str], gates: Gates | None = None) -> tuple[Monitor, StandIn]:
    session = Monitor(
        PipelineSettings(kafka_bootstrap="127.0.0.1:1"),
        TrainingSettings(tracking_uri="sqlite:////nonexistent/mlflow.db"),
        MonitorSettings(min_minutes=2, windows="60"),
        report=lines.append,
        gates=gates,
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


def until(condition: Callable[[], object], deadline_s: float = 30.0) -> None:
    """Wait for `condition` with a bounded deadline (never a bare sleep)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def python(code: str) -> Callable[[str], list[str]]:
    return lambda kind: [sys.executable, "-c", code, kind]


def test_a_failing_gate_is_a_child_the_loop_never_waits_for_and_its_failure_is_reported() -> None:
    lines: list[str] = []
    gates = Gates(TrainingSettings(), python("import sys; print('Spark did not start'); sys.exit(3)"))
    session, _ = monitor(lines, gates)
    for version, predicted in (("1", 9.0), ("2", 1.0)):
        log = RollingLog("regression", 60)
        log.add(
            np.arange(3), {"actual": np.ones(3), "predicted": np.full(3, predicted), "baseline": np.ones(3)}
        )
        session.logs[("btc-close", version)] = log
    session._judge()  # returns at once: the gate is a child process
    assert lines[0].startswith("btc-close v2 beats Production v1 live")
    assert lines[1].startswith("--promote: handing btc-close to the promotion gate (gate started (pid ")
    assert gates.running
    done: list[tuple[str, str]] = []
    until(lambda: (ended := gates.poll()) is not None and done.append(ended) is None)
    assert done == [("close", "did not run (exit 3): Spark did not start")]
    assert not gates.running


def test_a_gate_handed_another_model_while_one_runs_waits_its_turn() -> None:
    gates = Gates(TrainingSettings(), python("import sys; print('gate of', sys.argv[1])"))
    assert gates.hand("close").startswith("gate started")
    assert gates.hand("trend") == "queued behind the gate of close"
    assert gates.hand("trend") == "queued behind the gate of close"  # once
    said: list[tuple[str, str]] = []
    until(lambda: (ended := gates.poll()) is not None and said.append(ended) is None and len(said) == 2)
    assert said == [("close", "gate of close"), ("trend", "gate of trend")]


def test_stopping_a_gate_ends_its_whole_process_group_and_reaps_the_child() -> None:
    """The child starts a grandchild (as the gate starts Spark's JVM), then hangs, ignoring SIGTERM."""
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(p.pid, flush=True); time.sleep(600)"
    )
    gates = Gates(TrainingSettings(), python(code))
    gates.hand("close")
    assert gates.child is not None
    child = gates.child.process
    until(lambda: len(psutil.Process(child.pid).children()) == 1)
    grandchild = psutil.Process(child.pid).children()[0]
    gates.stop()
    assert child.returncode is not None  # reaped
    until(lambda: not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE, 5)
    assert not gates.running and gates.poll() is None


def test_the_gate_child_gets_the_monitors_own_training_settings(tmp_path) -> None:
    settings = TrainingSettings(
        tracking_uri="sqlite:////somewhere/mlflow.db", data_dir=tmp_path, spark_master="local[1]"
    )
    code = (
        "import os; from monitoring.promotion import SETTINGS_ENV; from training.settings import "
        "TrainingSettings as T; s = T.model_validate_json(os.environ[SETTINGS_ENV]); "
        "print(s.tracking_uri, s.data_dir, s.spark_master)"
    )
    gates = Gates(settings, python(code))
    gates.hand("close")
    said: list[tuple[str, str]] = []
    until(lambda: (ended := gates.poll()) is not None and said.append(ended) is None)
    assert said == [("close", f"sqlite:////somewhere/mlflow.db {tmp_path} local[1]")]


def test_a_version_that_left_the_lineup_is_dropped_and_its_run_ended() -> None:
    session, lineup = monitor([])
    client = FakeClient()
    session.runs = MonitorRuns(client, "0", 5.0)
    session._lineup_changed([])
    rows = np.array([[60.0 * i, 1.0, 2.0, 0.5, 1.5, 3.0] for i in range(5)])
    for member in lineup.members["close"]:
        member.evaluator = Constant()  # type: ignore[assignment]
    session._take(rows, [])
    assert set(session.logs) == {("btc-close", "1"), ("btc-close", "2")}
    lineup.members["close"] = lineup.members["close"][:1]  # v2 leaves the lineup
    session._lineup_changed(["stopped scoring btc-close v2"])
    assert set(session.logs) == {("btc-close", "1")}
    assert set(session.runs.run_ids) == {("btc-close", "1")}
    assert client.ended == {"run-btc-close-2": ("FINISHED", "left the lineup")}
    assert [r["role"] for r in session.table() if r["version"] == "2"] == ["no longer scored"]


class Constant:
    inputs = None

    def outputs(self, columns: dict) -> dict:
        return {"prediction": np.ones(len(next(iter(columns.values()))))}


class FakeClient:
    """What MonitorRuns asks of MlflowClient: runs by key, log_batch calls, how each run ended."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []
        self.ended: dict[str, tuple[str, str]] = {}
        self.tags: dict[str, dict[str, str]] = {}

    def search_runs(self, *args: object, **kwargs: object) -> list:
        return []

    def create_run(self, experiment_id: str, run_name: str, tags: dict) -> object:
        run_id = "run-" + "-".join(run_name.split("-")[1:]).replace("-v", "-")

        class Info:
            pass

        run = Info()
        run.info = Info()  # type: ignore[attr-defined]
        run.info.run_id = run_id  # type: ignore[attr-defined]
        return run

    def set_model_version_tag(self, *args: object) -> None:
        pass

    def log_batch(self, run_id: str, metrics: list) -> None:
        self.batches.append((run_id, metrics))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags.setdefault(run_id, {})[key] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.ended[run_id] = (status, self.tags[run_id][END_TAG])


def close_member(version: str = "1") -> Member:
    return Member("close", version, "r", PRODUCTION, Constant())  # type: ignore[arg-type]


def close_points(first: int, last: int) -> list:
    log = RollingLog("regression", 60, series=(60, 1440))
    minute = np.arange(first, last)
    log.add(minute, {"actual": minute * 1.0, "predicted": minute + 1.0, "baseline": minute * 1.0})
    return log.drain()


def test_live_points_are_one_per_minute_batched_by_1000_at_most_once_per_interval() -> None:
    now = [100.0]
    client = FakeClient()
    runs = MonitorRuns(client, "0", interval_s=5.0, clock=lambda: now[0], points_per_s=1000)
    member = close_member()
    assert not runs.due()
    runs.take(("btc-close", "1"), close_points(27_000_000, 27_000_400))  # 400 minutes x 6 figures
    now[0] += 5.0
    assert runs.due()
    runs.log([member])
    runs.close("KILLED", "SIGTERM received")
    assert all(len(metrics) <= 1000 for _, metrics in client.batches)
    sent = [m for _, metrics in client.batches for m in metrics]
    assert len(sent) == 400 * 6  # 2 windows x (rmse, baseline_rmse, minutes), each minute one point
    rmse = sorted((m.step, m.timestamp, m.value) for m in sent if m.key == "live_60m/rmse")
    assert [s for s, _, _ in rmse] == list(range(27_000_000, 27_000_400))
    assert all(t == s * 60_000 and v == 1.0 for s, t, v in rmse)  # the minute's own time on the time axis
    assert client.ended == {"run-btc-close-1": ("KILLED", "SIGTERM received")}
    assert not runs.due()


def test_a_replay_faster_than_the_budget_is_thinned_evenly_keeping_the_newest_minute() -> None:
    now = [0.0]
    client = FakeClient()
    runs = MonitorRuns(client, "0", interval_s=2.0, clock=lambda: now[0], points_per_s=50)
    runs.take(("btc-close", "1"), close_points(0, 700) + close_points(700, 1000))
    now[0] = 2.0
    runs.log([close_member()])
    runs.close()
    steps = sorted(m.step for _, ms in client.batches for m in ms if m.key == "live_1440m/minutes")
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999  # 50 a second for 2 s
    assert max(np.diff(steps)) - min(np.diff(steps)) <= 1  # evenly
    assert runs.dropped == 900


def test_a_store_that_fails_keeps_the_points_for_the_next_log_and_the_run_ends_anyway() -> None:
    now = [0.0]
    client = FakeClient()
    runs = MonitorRuns(client, "0", interval_s=1.0, clock=lambda: now[0])
    down = [True]
    create = client.create_run

    def flaky(*args: object, **kwargs: object) -> object:
        if down[0]:
            raise ConnectionError("store down")
        return create(*args, **kwargs)  # type: ignore[arg-type]

    client.create_run = flaky  # type: ignore[method-assign]
    runs.take(("btc-close", "1"), close_points(0, 10))
    now[0] = 1.0
    runs.log([close_member()])
    assert client.batches == [] and runs.pending
    down[0] = False
    now[0] = 2.0
    runs.log([close_member()])
    runs.close("FAILED", "BrokerUnavailable: gone")
    assert sorted(m.step for _, ms in client.batches for m in ms if m.key == "live_60m/rmse") == list(
        range(10)
    )
    assert client.ended == {"run-btc-close-1": ("FAILED", "BrokerUnavailable: gone")}


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
