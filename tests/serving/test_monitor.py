"""`btcflow monitor` on real parts: the session broker, a fresh topic, the producer, and the template's Spark
models in this test's copy of the MLflow store (scored by the numpy engine, as the gateway scores them).

Minutes from the stretch close v2 was fitted on (400 days after v1's) are streamed with v1 in Production:
v2 must be said to beat it live, and the figures must be in MLflow and on /metrics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench import spark_models as sm
from monitoring.monitor import Monitor
from monitoring.promotion import promotion_gate
from monitoring.scoring import Lineup
from monitoring.settings import MonitorSettings
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
    # --promote's gate, training's own: the template's versions name no training window, so it changes
    # nothing (and starts no Spark); that the hand-off happens once, for close, is what is checked
    session = Monitor(pipeline, training, settings, report=lines.append, gate=promotion_gate(training))
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
        if metric(page, "btcflow_monitor_rows_scored_total") == ROWS and any(" beats " in ln for ln in lines):
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
    handed = [i for i, line in enumerate(lines) if line.startswith("--promote: handing")]
    assert [lines[i] for i in handed] == ["--promote: handing btc-close to the promotion gate"]
    assert "nothing changed" in lines[handed[0] + 1], lines[handed[0] + 1]
    assert "scoring btc-close v3" not in said  # the broken version is not in the lineup
    assert summary.minutes == ROWS and summary.bad == 1  # type: ignore[attr-defined]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
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
    history = client.get_metric_history(run.info.run_id, "live_60m/rmse")
    last_minute = int(rows["Timestamp"].iloc[-1] // 60)
    assert history and max(m.step for m in history) == last_minute
    assert history[-1].value == pytest.approx(live_v2)
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
    assert "monitored 50 minutes (50 rows read, 0 bad messages)" in done.stdout
    assert re.search(r"btc-close\s+│\s+2\s+│\s+challenger\s+│\s+60m\s+│\s+49\s+│\s+rmse", done.stdout), (
        done.stdout
    )

    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens there: exit 3 in one line
    down = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 3
    assert down.stderr.startswith("btcflow: error: MLflow tracking store http://127.0.0.1:9 unreachable")
    assert len(down.stderr.strip().splitlines()) == 1
