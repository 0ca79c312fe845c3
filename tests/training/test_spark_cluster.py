"""`btcflow spark` and training on a real standalone cluster: the session cluster, one start/stop cycle,
one model trained on the cluster and the same batch trained locally, compared answer for answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from services.processes import alive, wait_gone
from services.spark.cluster import SparkCluster
from serving import sparkml
from serving.registry import Registry
from tests.spark_cluster import spark_cluster_on_free_ports, spark_env
from tests.training.conftest import minute_table, write_batches

REPO = Path(__file__).resolve().parents[2]


def btcflow(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btcflow.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pids(cluster: SparkCluster) -> dict[str, int | None]:
    return {d.name: d.pid for d in cluster.daemons(cluster.recorded_workers())}


# --- the command line ---------------------------------------------------------------------------


def test_status_lists_every_daemon_and_start_leaves_a_running_cluster_alone(spark_cluster) -> None:
    env = spark_env(spark_cluster)
    before = pids(spark_cluster)
    status = btcflow(["spark", "status"], env)
    assert status.returncode == 0, status.stderr
    assert "3 of 3 daemons running" in status.stdout
    for name, pid in before.items():
        assert f"pid {pid}" in next(line for line in status.stdout.splitlines() if name in line)
    assert spark_cluster.master_url in status.stdout and spark_cluster.history_url in status.stdout

    again = btcflow(["spark", "start"], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == spark_cluster.master_url
    assert spark_cluster.ui_url in again.stderr and spark_cluster.history_url in again.stderr
    assert pids(spark_cluster) == before


def test_start_refuses_bad_sizes_and_a_taken_port_in_one_line(spark_cluster, tmp_path: Path) -> None:
    cluster = spark_cluster_on_free_ports(tmp_path / "data")
    env = spark_env(cluster)
    for option, code in ((["--memory", "lots"], 2), (["--memory", "512m"], 2)):  # 512m < the 1g executor
        result = btcflow(["spark", "start", *option], env)
        assert result.returncode == code, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "memory" in result.stderr.lower()
    taken = {**env, "BTCFLOW_SPARK_PORT": str(spark_cluster.port)}
    result = btcflow(["spark", "start"], taken)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"btcflow: error: cannot start the Spark master: port {spark_cluster.port} on 127.0.0.1 is taken "
        "by another process"
    ]
    assert all(pid is None for pid in pids(cluster).values())


def test_start_restarts_a_dead_worker_and_stop_stops_everything(tmp_path: Path) -> None:
    """The one start/stop cycle of the file (three JVMs): idempotent start, a killed worker, stop."""
    cluster = spark_cluster_on_free_ports(tmp_path / "data")
    env = spark_env(cluster)
    try:
        assert not cluster.status().running
        started = btcflow(["spark", "start", "--workers", "1", "--cores", "1", "--memory", "1g"], env)
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == cluster.master_url
        worker = cluster.master_json()["workers"][0]
        assert (worker["state"], worker["cores"], worker["memory"]) == ("ALIVE", 1, 1024)
        first = pids(cluster)
        assert all(first.values())

        os.kill(first["worker-1"], signal.SIGKILL)  # type: ignore[arg-type]
        wait_gone(first["worker-1"])  # type: ignore[arg-type]
        status = btcflow(["spark", "status"], env)
        assert status.returncode == 3
        assert "not running" in next(line for line in status.stdout.splitlines() if "worker-1" in line)

        restarted = btcflow(["spark", "start", "--cores", "1", "--memory", "1g"], env)
        assert restarted.returncode == 0, restarted.stderr
        second = pids(cluster)
        assert second["master"] == first["master"] and second["history"] == first["history"]
        assert second["worker-1"] not in (None, first["worker-1"])

        # nothing lands in the pyspark install: logs, pids and work dirs are under the data dir
        assert {p.name for p in (cluster.home / "logs").iterdir()} == {
            "master.log",
            "worker-1.log",
            "history.log",
        }
        stopped = btcflow(["spark", "stop"], env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not any(alive(pid) for pid in second.values() if pid)
        assert not any(d.pid for d in cluster.status().daemons)
    finally:
        cluster.stop()


# --- training on the cluster --------------------------------------------------------------------


def train_env(root: Path, master: str, cluster: SparkCluster) -> dict[str, str]:
    return {
        **os.environ,
        "BTCFLOW_SPARK_MASTER": master,
        "BTCFLOW_DATA_DIR": str(root / "data"),
        "BTCFLOW_SPARK_EVENT_DIR": cluster.event_uri,
        "BTCFLOW_SPARK_PARTITIONS": "2",
        "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/{'cluster' if master.startswith('spark') else 'local'}.db",
    }


@pytest.fixture(scope="module")
def trained(spark_cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`close` on one batch, trained on the cluster and in local mode at the same time (two stores)."""
    root = tmp_path_factory.mktemp("train-on-cluster")
    write_batches(root / "data" / "batch", minute_table(400, seed=3), [400])
    envs = {
        "cluster": train_env(root, spark_cluster.master_url, spark_cluster),
        "local": train_env(root, "local[2]", spark_cluster),
    }
    command = [sys.executable, "-m", "btcflow.cli", "train", "--model", "close", "--batches", "1"]
    procs = {
        where: subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for where, env in envs.items()
    }
    runs: dict[str, dict[str, Any]] = {}
    for where, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{where}: {err}"
        from mlflow import MlflowClient

        uri = envs[where]["MLFLOW_TRACKING_URI"]
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version("btc-close", "1")
        runs[where] = {"uri": uri, "tags": client.get_run(version.run_id).data.tags}
    return runs


def test_runs_carry_their_spark_application(trained, spark_cluster) -> None:
    cluster_tags, local_tags = trained["cluster"]["tags"], trained["local"]["tags"]
    assert cluster_tags["btcflow.spark_app_id"].startswith("app-")  # a standalone application
    assert cluster_tags["btcflow.spark_master"] == spark_cluster.master_url
    assert local_tags["btcflow.spark_app_id"].startswith("local-")
    assert local_tags["btcflow.spark_master"] == "local[2]"


def test_event_logs_of_both_runs_reach_the_history_server(trained, spark_cluster) -> None:
    apps = {where: run["tags"]["btcflow.spark_app_id"] for where, run in trained.items()}
    for app in apps.values():  # local mode logs its events too
        events = Path(urlsplit(spark_cluster.event_uri).path)
        assert list(events.glob(f"*{app}*")), sorted(events.iterdir())
    # the history server looks at its folder every 2 s; an application it listed while its run was still
    # writing shows as completed only after its next look
    deadline = time.monotonic() + 30
    while True:
        listed = httpx.get(f"{spark_cluster.history_url}/api/v1/applications", timeout=5).json()
        found = {a["id"]: a for a in listed}
        done = all(found[app]["attempts"][0]["completed"] for app in apps.values() if app in found)
        if (set(apps.values()) <= found.keys() and done) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(apps.values()) <= found.keys(), list(found)
    assert found[apps["cluster"]]["name"] == "btcflow-train"
    assert found[apps["cluster"]]["attempts"][0]["completed"] is True


def test_the_cluster_version_answers_like_the_local_one(trained, tmp_path: Path) -> None:
    """Same batch, same answers, through the gateway's numpy engine (its parity with Spark's own
    transform is tests/serving/test_sparkml.py's job: no third JVM here)."""
    ts = 1325412060.0 + 60.0 * np.arange(0, 2000, 7, dtype=np.float64)
    answers, model_dirs = {}, {}
    for where, run in trained.items():
        model_dirs[where] = Registry(run["uri"]).download("btc-close", "1", tmp_path / where)
        answers[where] = sparkml.load(model_dirs[where]).transform({"Timestamp": ts})["prediction"]
    np.testing.assert_allclose(answers["cluster"], answers["local"], rtol=1e-9, atol=0)
