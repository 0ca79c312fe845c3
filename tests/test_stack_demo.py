"""`btcflow demo --stack` (what `make demo-cluster` runs) with authentication on every service that has it:
Kafka logins and ACLs on a 3-node cluster, MLflow's basic-auth, the gateway's API keys; then, on the stack it
leaves running, that an anonymous caller gets nothing from any of them.

The one test that starts the whole stack (HDFS, three Kafka JVMs, Spark's master, workers and history
server, PostgreSQL and MLflow), on free ports and in a folder of its own; it stops it, also on failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.kafka.launcher import free_port_block
from services.processes import free_port
from tests.environment import without_settings
from tests.tracking_server import service_dir

CLI = [sys.executable, "-m", "btcflow.cli"]
KEY = re.compile(r"btcflow_[0-9a-f]{12}_")  # an API key's visible prefix (serving.keys)


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    """The environment of a stack of its own: its folder (0755, for PostgreSQL's user) and free ports;
    no btcflow or MLflow setting (nor the session's tracking login) from outside. `stack down` at the end."""
    home = service_dir("btcflow-stack-")
    env = without_settings("BTCFLOW_", "MLFLOW_")
    env |= {
        "BTCFLOW_STACK_DIR": str(home / "stack"),
        "BTCFLOW_STACK_BROKER_PORT": str(free_port_block(6)),
        "BTCFLOW_HDFS_PORT": str(free_port()),
        "BTCFLOW_HDFS_HTTP_PORT": str(free_port()),
        "BTCFLOW_SPARK_PORT": str(free_port()),
        "BTCFLOW_SPARK_UI_PORT": str(free_port()),
        "BTCFLOW_SPARK_WORKER_UI_PORT": str(free_port_block(2)),
        "BTCFLOW_SPARK_HISTORY_PORT": str(free_port()),
        "BTCFLOW_TRACKING_PORT": str(free_port()),
        "BTCFLOW_POSTGRES_PORT": str(free_port()),
        # three Kafka nodes (logins between brokers too); one DataNode and one Spark worker spare the
        # suite's two cores two JVMs that this test's claims do not need
        "BTCFLOW_STACK_DATANODES": "1",
        "BTCFLOW_STACK_SPARK_WORKERS": "1",
        "COLUMNS": "200",  # rich wraps at 80 columns off a terminal
    }
    try:
        yield env
    finally:
        subprocess.run([*CLI, "stack", "down"], env=env, cwd=home, capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def test_the_stack_demo_passes_with_authentication_on_every_service(stack_env: dict[str, str]) -> None:
    stack = Path(stack_env["BTCFLOW_STACK_DIR"])
    demo = _run(["demo", "--stack", "--rows", "6000"], stack_env, timeout=1200)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "sent 6,000 rows, rejected 0" in out and "consumed 6,000 rows into 4 batches" in out
    assert out.count('-H "Authorization: Bearer $BTCFLOW_API_KEY"') == 3
    assert out.count("→ 200 ") == 3, out
    assert re.search(r"monitored [\d,]+ minutes", out)
    assert not KEY.search(out + demo.stderr)  # the demo's key went to its gateway, never to the terminal
    assert f"{stack}/kafka/credentials/" in out and f"{stack}/tracking/credentials/" in out

    status = _run(["stack", "status"], stack_env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Kafka    SASL/SCRAM-SHA-512 logins and ACLs" in status.stdout
    assert "MLflow   basic-auth" in status.stdout
    assert "(1 active;" in status.stdout  # the key named demo

    # strangers: MLflow answers 401, the cluster refuses a wrong login in one line, exit 3
    tracking = f"http://127.0.0.1:{stack_env['BTCFLOW_TRACKING_PORT']}"
    assert httpx.get(f"{tracking}/api/2.0/mlflow/registered-models/search", timeout=30).status_code == 401
    stranger = stack_env | {
        "BTCFLOW_DATA_DIR": str(stack),
        "BTCFLOW_BROKER_NODES": "3",
        "BTCFLOW_BROKER_PORT": stack_env["BTCFLOW_STACK_BROKER_PORT"],
        "BTCFLOW_KAFKA_USERNAME": "producer",
        "BTCFLOW_KAFKA_PASSWORD": "not-the-password",
    }
    minutes = next(stack.glob("synth_*.csv"))
    produce = _run(["produce", "--input", str(minutes), "--no-progress"], stranger, timeout=120)
    assert produce.returncode == 3, produce.stdout + produce.stderr
    assert len(produce.stderr.strip().splitlines()) == 1, produce.stderr


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cwd = Path(env["BTCFLOW_STACK_DIR"]).parent
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
