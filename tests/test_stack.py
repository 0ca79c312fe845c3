"""`btcflow stack`: where it points btcflow's commands, and its status with nothing running.

Starting the whole stack (HDFS, three Kafka JVMs, three Spark daemons, PostgreSQL and MLflow) is what
`make demo-cluster` does; the suite covers each part with its own session fixture instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from btcflow.cli.stack import point_at_stack
from core import jvm


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No btcflow setting from outside; what point_at_stack() exports is undone afterwards (later tests
    would otherwise read the stack's HDFS dataset)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("BTCFLOW_", "MLFLOW_TRACKING_URI", "MLFLOW_DFS_TMP")) and name != jvm.ENV:
            monkeypatch.delenv(name)
    saved = dict(os.environ)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def test_the_stack_points_every_command_at_its_own_data_dir_and_ports(clean_env: Path) -> None:
    env = point_at_stack()
    assert env == {
        "BTCFLOW_DATA_DIR": "data/stack",
        "BTCFLOW_BROKER_NODES": "3",
        "BTCFLOW_BROKER_PORT": "9192",
        "BTCFLOW_BATCH_URI": "hdfs://127.0.0.1:9820/btcflow/batch",
        "BTCFLOW_SPARK_EVENT_DIR": "hdfs://127.0.0.1:9820/btcflow/spark-events",
        "MLFLOW_DFS_TMP": "hdfs://127.0.0.1:9820/btcflow/mlflow-tmp",
        "BTCFLOW_SPARK_MASTER": "spark://127.0.0.1:7077",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "BTCFLOW_API_KEYS_FILE": "data/stack/gateway/api-keys.json",
    }
    assert all(os.environ[name] == value for name, value in env.items())


def test_an_external_kafka_setting_does_not_leak_into_the_stack(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTCFLOW_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("BTCFLOW_SPARK_PORT", "7177")
    env = point_at_stack(nodes=1)
    assert "BTCFLOW_KAFKA_BOOTSTRAP" not in os.environ
    assert env["BTCFLOW_BROKER_NODES"] == "1"
    assert env["BTCFLOW_SPARK_MASTER"] == "spark://127.0.0.1:7177"


def test_status_with_nothing_running_lists_every_part_and_exits_3(clean_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "btcflow.cli", "stack", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items()},
    )
    assert done.returncode == 3, done.stderr
    out = done.stdout
    assert "HDFS" in out and "hdfs://127.0.0.1:9820" in out
    assert "3-node Kafka cluster" in out and "127.0.0.1:9192" in out
    assert "Spark standalone cluster" in out and "spark://127.0.0.1:7077" in out
    assert "MLflow tracking server" in out and "http://127.0.0.1:5000" in out
    assert str(clean_env / "data" / "stack") in out
    assert "Kafka    SASL/SCRAM-SHA-512 logins and ACLs, from its first `btcflow stack up`" in out
    assert "HDFS     none" in out and "Spark    none" in out  # said, not hidden
