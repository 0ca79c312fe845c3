"""`btcflow monitor` on real parts: the session broker, a fresh topic, the producer, and the template's Spark
models in this test's copy of the MLflow store (scored by the numpy engine, as the gateway scores them).

Minutes from the stretch close v2 was fitted on (400 days after v1's) are streamed with v1 in Production:
v2 must be said to beat it live, and the figures must be in MLflow (one point per minute) and on /metrics.
`btcflow monitor --promote` is run as users run it to check that the gate is a child it never waits for:
SIGTERM is answered within 5 s while the gate's Spark runs, and no JVM is left once the gate has run. A
monitor that cannot start (Kafka down, its port taken) leaves no monitoring run RUNNING; two members of one
group never commit each other's partitions.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import spark_models as sm
from core.errors import BadInput, BrokerUnavailable
from monitoring.monitor import Monitor, monitor
from monitoring.promotion import Gates
from monitoring.scoring import Lineup
from monitoring.settings import MonitorSettings
from monitoring.stream import Stream
from pipeline.broker import ensure_topic
from pipeline.producer import Pacing, produce
from pipeline.settings import PipelineSettings
from tests.serving.conftest import Store
from training.settings import TrainingSettings

ROWS = 240


def v2_stretch(path: Path, rows: int = ROWS) -> pd.DataFrame:
    """Minutes from inside the frame close v2 was fitted on (conftest's seed 7, 400 days on)."""
    frame = sm.synthetic_minutes(3000, seed=7)
    frame["Timestamp"] += 86400.0 * 400
    part = frame.iloc[2000 : 2000 + rows]
    part.to_csv(path, index=False)
    return part


def metric(page: str, name: str, **labels: str) -> float | None:
    """A sample's value on a Prometheus page (these labels among its own; none if none given), else None."""
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and (
                labels.items() <= sample.labels.items() if labels else not sample.labels
            ):
                return sample.value
    return None


def test_lineup_follows_production_and_skips_a_version_it_cannot_evaluate(store: Store) -> None:
    lineup = Lineup(store.uri, challengers=2)
    lineup.refresh()
    close = {m.version: m.role for m in lineup.members["close"]}
    # v3 (close_broken) has a stage the numpy engine does not know: refused once, v2 is the challenger
    assert close == {
        store.template.versions["close"]: "Production",
        store.template.versions["close_v2"]: "challenger",
    }
    store.promote("close_v2")
    changes = lineup.refresh()
    v1, v2 = store.template.versions["close"], store.template.versions["close_v2"]
    assert f"btc-close: Production is now v{v2} (was v{v1})" in changes
    assert f"stopped scoring btc-close v{v1}" in changes
    assert {m.version: m.role for m in lineup.members["close"]} == {v2: "Production"}


def test_monitor_scores_the_stream_and_says_when_a_challenger_beats_production(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path
) -> None:
    csv = tmp_path / "minutes.csv"
    rows = v2_stretch(csv)
    pipeline = PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic, data_dir=tmp_path / "data")
    training = TrainingSettings(tracking_uri=store.uri, data_dir=tmp_path / "data")
    settings = MonitorSettings(
        group=f"monitor-{uuid.uuid4().hex[:8]}", port=0, min_minutes=30, log_interval_s=0.5, refresh_s=3600
    )
    lines: list[str] = []
    # --promote's gate, training's own, in its child: the template's versions name no training window, so
    # it changes nothing (and starts no Spark); that the hand-off happens once, for close, is what is checked
    session = Monitor(pipeline, training, settings, report=lines.append, gates=Gates(training))
    session.start()
    assert session.exporter.url is not None
    ensure_topic(kafka_broker, topic)
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    producer.send(topic, key=b"junk", value=b"not json at all")  # counted with its reason, never a crash
    producer.flush()
    producer.close()

    stop = threading.Event()
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(session.run(idle_timeout_s=60, from_beginning=True, stop=stop)),
        daemon=True,
    )
    worker.start()
    produce(pipeline, csv, pacing=Pacing(rate=1000.0), progress=False)

    page = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = httpx.get(session.exporter.url, timeout=5).text
        if metric(page, "btcflow_monitor_rows_scored_total") == ROWS and any(
            ln.startswith("promotion gate for") for ln in lines
        ):
            break
        time.sleep(0.3)
    v1, v2 = store.template.versions["close"], store.template.versions["close_v2"]
    assert metric(page, "btcflow_monitor_rows_read_total") == ROWS
    assert metric(page, "btcflow_monitor_bad_messages_total", reason="not_json") == 1
    assert metric(page, "btcflow_monitor_consumer_lag", partition="0") == 0
    live_v1 = metric(page, "btcflow_monitor_rmse", model="btc-close", version=v1, window="60m")
    live_v2 = metric(page, "btcflow_monitor_rmse", model="btc-close", version=v2, window="60m")
    assert live_v1 is not None and live_v2 is not None and live_v2 < live_v1
    assert metric(page, "btcflow_monitor_minutes", model="btc-close", version=v2, window="1440m") == ROWS - 1
    assert metric(page, "btcflow_monitor_roc_auc", model="btc-trend", version="1", window="60m") is not None
    assert metric(page, "btcflow_monitor_baseline_rmse_high", model="btc-high-low", version="1", window="60m")
    stop.set()
    worker.join(timeout=60)
    summary = outcome[0]

    said = "\n".join(lines)
    assert f"btc-close v{v2} beats Production v{v1} live: rmse" in said
    assert f"btc-close Production v{v1} is below its baseline live" in said
    handed = [line for line in lines if line.startswith("--promote: handing")]
    assert len(handed) == 1 and handed[0].startswith("--promote: handing btc-close to the promotion gate (")
    (result,) = [line for line in lines if line.startswith("promotion gate for")]
    assert result.startswith("promotion gate for btc-close: ") and "nothing changed" in result, result
    assert "scoring btc-close v3" not in said  # the broken version is not in the lineup
    assert summary.minutes == ROWS and summary.bad == 1  # type: ignore[attr-defined]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("btcflow").experiment_id], "tags.`btcflow.monitor` = 'true'"
    )
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {
        f"monitor-btc-close-v{v1}",
        f"monitor-btc-close-v{v2}",
        "monitor-btc-high-low-v1",
        "monitor-btc-trend-v1",
    }
    run = by_name[f"monitor-btc-close-v{v2}"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["btcflow.registered_model"] == "btc-close"
    assert run.data.tags["btcflow.model_version"] == v2
    assert run.data.tags["btcflow.monitor_end"] == "stopped by its caller"
    history = client.get_metric_history(run.info.run_id, "live_60m/rmse")
    first_minute, last_minute = (int(ts // 60) for ts in rows["Timestamp"].iloc[[1, -1]])
    steps = sorted(m.step for m in history)  # one point per minute; 240 minutes in 0.24 s: thinned to
    assert len(set(steps)) == len(steps) >= 30  # the budget, 60 points a second (0.5 s per log: 30 a log)
    assert first_minute <= steps[0] and steps[-1] == last_minute
    newest = max(history, key=lambda m: m.step)
    assert newest.value == pytest.approx(live_v2) and newest.timestamp == last_minute * 60_000
    assert set(run.data.metrics) >= {"live_60m/baseline_rmse", "live_1440m/rmse", "live_1440m/minutes"}
    assert client.get_model_version("btc-close", v2).tags["btcflow.monitor_run_id"] == run.info.run_id


def test_cli_scores_a_bounded_number_of_minutes_and_stops(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path
) -> None:
    """The command itself (pyspark made unimportable, as without --promote), --from-beginning,
    --max-minutes, its table; exit 3 in one line when the tracking store does not answer."""
    csv = tmp_path / "minutes.csv"
    v2_stretch(csv, rows=80)
    produce(PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic), csv, progress=False)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.uri,
        "BTCFLOW_KAFKA_BOOTSTRAP": kafka_broker,
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    command = [sys.executable, "-m", "btcflow.cli", "monitor", "--topic", topic, "--group", f"g-{topic}"]
    command += ["--from-beginning", "--max-minutes", "50", "--idle-timeout", "30", "--metrics-port", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("monitored")]
    assert "monitored 50 minutes (50 rows read, 0 bad messages)" in done.stdout, (summary, done.stdout[:2000])
    assert re.search(r"btc-close\s+│\s+2\s+│\s+challenger\s+│\s+60m\s+│\s+49\s+│\s+rmse", done.stdout), (
        done.stdout
    )

    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens there: exit 3 in one line
    down = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 3
    assert down.stderr.startswith("btcflow: error: MLflow tracking store http://127.0.0.1:9 unreachable")
    assert len(down.stderr.strip().splitlines()) == 1


def monitoring_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("btcflow")
    return (
        client.search_runs([experiment.experiment_id], "tags.`btcflow.monitor` = 'true'")
        if experiment
        else []
    )


def until(condition: Callable[[], object], deadline_s: float, what: str) -> None:
    """Wait for `condition` with a bounded deadline (never a bare sleep)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in {deadline_s:g} s"
        time.sleep(0.1)


def test_a_2000_minute_replay_charts_every_live_metric_with_at_least_100_points(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path
) -> None:
    """At 400 rows/s the replay takes 5 s, about one log interval: before, 1 to 3 points per chart."""
    csv = tmp_path / "minutes.csv"
    minutes = 2000
    frame = sm.synthetic_minutes(minutes, seed=3)
    frame.to_csv(csv, index=False)
    pipeline = PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic, data_dir=tmp_path / "data")
    training = TrainingSettings(tracking_uri=store.uri, data_dir=tmp_path / "data")
    settings = MonitorSettings(group=f"monitor-{uuid.uuid4().hex[:8]}", port=0, refresh_s=3600)
    ensure_topic(kafka_broker, topic)
    session = Monitor(pipeline, training, settings, report=lambda line: None)
    session.start()
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            session.run(max_minutes=minutes, idle_timeout_s=60, from_beginning=True)
        ),
        daemon=True,
    )
    worker.start()
    produce(pipeline, csv, pacing=Pacing(rate=400.0), progress=False)
    worker.join(timeout=120)
    assert outcome and outcome[0].minutes == minutes  # type: ignore[attr-defined]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
    counts = {}
    for run in monitoring_runs(store.uri):
        assert run.info.status == "FINISHED"
        for key in run.data.metrics:
            counts[(run.info.run_name, key)] = len(client.get_metric_history(run.info.run_id, key))
    assert len(counts) == 2 * 3 + 2 * 7 + 2 * 5 + 2 * 3  # close v1 and v2, high-low, trend: every figure
    thin = {k: n for k, n in counts.items() if n < 100}
    assert not thin, thin
    print(f"points per live metric: min {min(counts.values())}, max {max(counts.values())}")


def test_a_monitor_that_cannot_start_leaves_no_running_run(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path
) -> None:
    training = TrainingSettings(tracking_uri=store.uri, data_dir=tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pipeline = PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic)
        with pytest.raises(BadInput, match="cannot serve /metrics"):
            monitor(pipeline, training, MonitorSettings(port=port), report=lambda line: None)
    runs = monitoring_runs(store.uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FAILED"}
    assert all(r.data.tags["btcflow.monitor_end"].startswith("BadInput: cannot serve") for r in runs)

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing = f"127.0.0.1:{closed.getsockname()[1]}"
    pipeline = PipelineSettings(kafka_bootstrap=nothing, topic=topic)
    with pytest.raises(BrokerUnavailable):
        monitor(pipeline, training, MonitorSettings(port=0), report=lambda line: None)
    runs = monitoring_runs(store.uri)  # the same runs, continued, then ended again
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FAILED"}
    assert all(r.data.tags["btcflow.monitor_end"].startswith("BrokerUnavailable") for r in runs)


def test_a_member_never_commits_a_partition_revoked_from_it(kafka_broker: str, topic: str) -> None:
    """Member A scores both partitions; B joins and takes one of them and reads on; A's next commit must
    not put that partition back where A left it."""
    pipeline = PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic, partitions=2)
    ensure_topic(kafka_broker, topic, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    row = b'{"Timestamp": 0, "Open": 1, "High": 1, "Low": 1, "Close": 1, "Volume": 1}'
    for p in (0, 1):
        for _ in range(10):
            producer.send(topic, value=row, partition=p)
    producer.flush()
    group = f"g-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    seen: dict[str, int] = {"b": 0}
    with Stream(pipeline, group, from_beginning=True) as a:
        until(lambda: a.scored(a.poll(200, 100)) or len(a.position) == 2, 60, "A reads both partitions")
        a.commit()

        def member_b() -> None:
            with Stream(pipeline, group, from_beginning=True) as b:
                while not stop.is_set():
                    polled = b.poll(200, 100)
                    b.scored(polled)
                    seen["b"] += polled.messages
                    b.commit()

        worker = threading.Thread(target=member_b, daemon=True)
        worker.start()
        try:
            until(lambda: a.poll(200, 100) is not None and len(a.consumer.assignment()) == 1, 60, "rebalance")
            (kept,) = a.consumer.assignment()
            moved = TopicPartition(topic, 1 - kept.partition)
            assert set(a.position) == {kept}  # the revoked partition is forgotten
            for _ in range(5):
                producer.send(topic, value=row, partition=moved.partition)
            producer.flush()
            until(lambda: seen["b"] >= 5, 60, "B reads the moved partition")
            a.commit()
            check = KafkaConsumer(bootstrap_servers=kafka_broker, group_id=group, enable_auto_commit=False)
            until(lambda: check.committed(moved) == 15, 30, "B's commit stands")
            a.commit()
            assert check.committed(moved) == 15  # A did not rewind it to 10
            check.close()
        finally:
            stop.set()
            worker.join(timeout=30)
            producer.close()


GATE_ENV = {
    "BTCFLOW_SPARK_MASTER": "local[1]",
    "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
    "BTCFLOW_SPARK_PARTITIONS": "2",
}


def gate_ready(store: Store, data_dir: Path) -> None:
    """close v2 as the gate sees a version of ours (the newest minute it trained on, before the batch
    files), and batch files to compare v1 and v2 on: the real gate starts Spark."""
    from mlflow import MlflowClient

    from tests.training.conftest import minute_table, write_batches

    MlflowClient(tracking_uri=store.uri, registry_uri=store.uri).set_model_version_tag(
        "btc-close", store.template.versions["close_v2"], "btcflow.train_max_ts", "0"
    )
    write_batches(data_dir / "batch", minute_table(600), [600])


class Cli:
    """`btcflow monitor --promote` as users run it; its stdout lines collected by a thread."""

    def __init__(self, store: Store, kafka_broker: str, topic: str, tmp_path: Path) -> None:
        env = {
            **os.environ,
            **GATE_ENV,
            "MLFLOW_TRACKING_URI": store.uri,
            "BTCFLOW_KAFKA_BOOTSTRAP": kafka_broker,
            "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        }
        command = [sys.executable, "-m", "btcflow.cli", "monitor", "--topic", topic, "--group", f"g-{topic}"]
        command += ["--from-beginning", "--metrics-port", "0", "--promote", "--min-minutes", "30"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def said(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def gate_pid(self) -> int:
        line = self.said("to the promotion gate (gate started (pid ")
        assert line is not None
        return int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]

    def sigterm(self) -> float:
        """SIGTERM; the seconds it took to exit (TimeoutExpired past 5 s)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=5)
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def in_session(sid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def is_java(proc: psutil.Process) -> bool:
    try:
        return "java" in proc.name()
    except psutil.Error:
        return False


@pytest.fixture
def streamed(kafka_broker: str, topic: str, tmp_path: Path) -> Callable[[], None]:
    def send() -> None:
        csv = tmp_path / "minutes.csv"
        v2_stretch(csv)
        produce(PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic), csv, progress=False)

    return send


def test_sigterm_ends_the_monitor_within_5_s_while_its_gate_runs_spark_and_ends_the_gate_too(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path, streamed: Callable[[], None]
) -> None:
    gate_ready(store, tmp_path / "data")
    cli = Cli(store, kafka_broker, topic, tmp_path)
    try:
        until(lambda: cli.said("metrics at "), 120, f"the monitor starts: {cli.lines}")
        streamed()
        until(lambda: cli.said("to the promotion gate (gate started"), 60, f"a hand-off: {cli.lines}")
        gate = cli.gate_pid()
        until(lambda: any(is_java(p) for p in in_session(gate)), 120, f"the gate's JVM starts: {cli.lines}")
        took = cli.sigterm()
    finally:
        cli.kill()
    print(f"SIGTERM answered in {took:.2f} s with the gate's Spark running")
    until(lambda: not in_session(gate), 5, "the gate's process group ends")
    runs = monitoring_runs(store.uri)
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    assert {r.data.tags["btcflow.monitor_end"] for r in runs} == {"SIGTERM received"}


def test_a_monitor_keeps_scoring_while_its_gate_runs_and_holds_no_jvm_once_it_has_run(
    store: Store, kafka_broker: str, topic: str, tmp_path: Path, streamed: Callable[[], None]
) -> None:
    gate_ready(store, tmp_path / "data")
    cli = Cli(store, kafka_broker, topic, tmp_path)
    try:
        until(lambda: cli.said("metrics at "), 120, f"the monitor starts: {cli.lines}")
        url = cli.said("metrics at ").split("metrics at ")[1]  # type: ignore[union-attr]
        streamed()
        until(lambda: cli.said("to the promotion gate (gate started"), 60, f"a hand-off: {cli.lines}")
        gate = cli.gate_pid()
        until(lambda: any(is_java(p) for p in in_session(gate)), 120, f"the gate's JVM starts: {cli.lines}")
        # meanwhile the loop answers /metrics and committed every row (the lag is 0)
        assert metric(httpx.get(url, timeout=5).text, "btcflow_monitor_consumer_lag", partition="0") == 0
        until(lambda: cli.said("promotion gate for btc-close: "), 300, f"the gate ends: {cli.lines}")
        result = cli.said("promotion gate for btc-close: ")
        assert "did not run" not in result, result  # type: ignore[operator]
        monitor_process = psutil.Process(cli.process.pid)
        assert not [p for p in monitor_process.children(recursive=True) if is_java(p)]
        until(lambda: not in_session(gate), 5, "nothing of the gate is left")
        took = cli.sigterm()
    finally:
        cli.kill()
    print(f"gate said: {result}; SIGTERM answered in {took:.2f} s")
