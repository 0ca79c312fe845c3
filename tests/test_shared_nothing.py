"""Hosts that share nothing: every role of btcflow on a host of its own, and the whole job still runs.

Each role runs in its own mount namespace with its own loopback address (tests/hosts.py): Kafka nodes,
the HDFS NameNode and DataNodes, the producer, the consumer group, the Spark master, a Spark worker (its
executors on its host), MLflow's server with its PostgreSQL, the trainer (Spark's driver) and the
gateway. A private tmpfs covers every other host's folder, so what one role writes locally, no other
role can read: the dataset travels through HDFS, models through MLflow's server, rows through Kafka.

produce → consume into hdfs:// → train on spark:// → promote → serve, with each row in the dataset exactly
once; and a role that reads another's local folder fails. The README's "Hosts that share nothing" lists
these very commands. Skipped, saying why, where the machine cannot make a mount namespace (not root).
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from mlflow import MlflowClient

from tests.hosts import Host, Network, btcflow, network, output, unavailable
from tests.waiting import wait_until
from training.specs import SPECS

reason = unavailable()
pytestmark = [pytest.mark.skipif(reason is not None, reason=reason or "")]

ROWS = 3000  # two batches of 1,500: each model's smallest test split still holds ~300 rows
BATCH_ROWS = 1500
KAFKA_NODES = 3

ADDRESSES = {
    **{f"kafka-{i}": f"127.0.0.{1 + i}" for i in range(1, KAFKA_NODES + 1)},  # 127.0.0.2 ...
    "hdfs-namenode": "127.0.0.10",
    "hdfs-datanode-1": "127.0.0.11",
    "hdfs-datanode-2": "127.0.0.12",
    "producer": "127.0.0.20",
    "consumer": "127.0.0.21",
    "spark-master": "127.0.0.30",
    "spark-worker": "127.0.0.31",
    "mlflow": "127.0.0.40",
    "trainer": "127.0.0.50",
    "gateway": "127.0.0.60",
}


def port(host: str, default: int) -> int:
    """The service's default port on its own address, unless something there (or on 0.0.0.0) holds it."""
    with socket.socket() as s:
        try:
            s.bind((host, default))
            return default
        except OSError:
            s.bind((host, 0))
            return int(s.getsockname()[1])


@dataclass
class Cluster:
    """Where each service answers, as the other hosts are told."""

    bootstrap: str
    namenode: str  # hdfs://host:port
    spark_master: str
    tracking_uri: str
    gateway: str

    @property
    def dataset(self) -> str:
        return f"{self.namenode}/btcflow/batch"


def hadoop_client_conf(host: Host, namenode: str) -> dict[str, str]:
    """A Hadoop client configuration folder on `host` (HADOOP_CONF_DIR: what hdfs-native and Spark read):
    the NameNode as default file system, DataNodes reached by the address they registered."""
    from services.hdfs.cluster import HdfsCluster

    folder = host.folder / "hadoop-conf"
    folder.mkdir(exist_ok=True)
    core = {"fs.defaultFS": namenode}
    hdfs = dict(HdfsCluster(host.folder, host.folder).client_config)
    for name, properties in (("core-site.xml", core), ("hdfs-site.xml", hdfs)):
        body = "".join(
            f"<property><name>{k}</name><value>{v}</value></property>" for k, v in properties.items()
        )
        (folder / name).write_text(f"<?xml version='1.0'?><configuration>{body}</configuration>\n")
    return {"HADOOP_CONF_DIR": str(folder)}


def wait_all(procs: dict[str, subprocess.Popen[str]], timeout_s: float) -> None:
    """Every spawned start command ends with 0; one that fails names its host and its last lines."""
    deadline = time.monotonic() + timeout_s
    for name, proc in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name}: still starting after {timeout_s:.0f} s: {output(proc)[-1500:]}"
            ) from None
        assert code == 0, f"{name} exited {code}: {output(proc)[-1500:]}"


@pytest.fixture
def hosts() -> Iterator[Network]:
    with network(ADDRESSES) as net:
        yield net


def start_services(net: Network) -> Cluster:
    """Every service on its own host, started together (the Kafka nodes wait for each other's quorum)."""
    h = net.hosts
    kafka = [h[f"kafka-{i}"] for i in range(1, KAFKA_NODES + 1)]
    kafka_ports = {n.name: (port(n.address, 9092), port(n.address, 9093)) for n in kafka}
    voters = ",".join(f"{i}@{n.address}:{kafka_ports[n.name][1]}" for i, n in enumerate(kafka, start=1))
    cluster_id = h["kafka-1"].run(btcflow("broker", "cluster-id")).stdout.strip()
    nn = h["hdfs-namenode"]
    nn_port, nn_http = port(nn.address, 9820), port(nn.address, 9870)
    namenode = f"hdfs://{nn.address}:{nn_port}"
    master = h["spark-master"]
    spark_port, spark_ui, history = (
        port(master.address, 7077),
        port(master.address, 8080),
        port(master.address, 18080),
    )
    spark_master = f"spark://{master.address}:{spark_port}"
    mlflow = h["mlflow"]
    tracking_port, postgres_port = port(mlflow.address, 5000), port(mlflow.address, 5433)
    gateway = h["gateway"]

    starting: dict[str, subprocess.Popen[str]] = {}
    for i, node in enumerate(kafka, start=1):
        starting[node.name] = node.spawn(
            btcflow("broker", "start", "--node-id", str(i), "--voters", voters, "--cluster-id", cluster_id),
            {"BTCFLOW_BROKER_PORT": str(kafka_ports[node.name][0]), "BTCFLOW_BROKER_HEAP": "256m"},
        )
    starting[nn.name] = nn.spawn(
        btcflow("hdfs", "start", "--datanodes", "0", "--host", nn.address),
        {
            "BTCFLOW_HDFS_PORT": str(nn_port),
            "BTCFLOW_HDFS_HTTP_PORT": str(nn_http),
            "BTCFLOW_HDFS_HEAP": "256m",
        },
    )
    starting[master.name] = master.spawn(
        btcflow("spark", "start", "--host", master.address, "--workers", "0"),
        {
            "BTCFLOW_SPARK_PORT": str(spark_port),
            "BTCFLOW_SPARK_UI_PORT": str(spark_ui),
            "BTCFLOW_SPARK_HISTORY_PORT": str(history),
            "BTCFLOW_SPARK_DAEMON_MEMORY": "256m",
        },
    )
    starting[mlflow.name] = mlflow.spawn(
        btcflow("tracking", "start", "--host", mlflow.address, "--postgres-host", mlflow.address),
        {
            "BTCFLOW_TRACKING_PORT": str(tracking_port),
            "BTCFLOW_POSTGRES_PORT": str(postgres_port),
            "BTCFLOW_TRACKING_WORKERS": "1",
        },
    )
    wait_all({nn.name: starting.pop(nn.name), master.name: starting.pop(master.name)}, 180)
    # the NameNode and the master answer: their DataNodes and worker join them from their own hosts
    for name in ("hdfs-datanode-1", "hdfs-datanode-2"):
        dn = h[name]
        starting[name] = dn.spawn(
            btcflow("hdfs", "join", namenode, "--host", dn.address),
            {"BTCFLOW_HDFS_HTTP_PORT": str(nn_http), "BTCFLOW_HDFS_HEAP": "256m"},
        )
    worker = h["spark-worker"]
    starting[worker.name] = worker.spawn(
        btcflow("spark", "start", "--host", worker.address, "--join", spark_master, "--memory", "1g"),
        {
            "BTCFLOW_SPARK_WORKER_UI_PORT": str(port(worker.address, 8081)),
            "BTCFLOW_SPARK_DAEMON_MEMORY": "256m",
            "BTCFLOW_SPARK_EXECUTOR_MEMORY": "512m",
            **hadoop_client_conf(worker, namenode),
        },
    )
    wait_all(starting, 240)
    return Cluster(
        bootstrap=",".join(f"{n.address}:{kafka_ports[n.name][0]}" for n in kafka),
        namenode=namenode,
        spark_master=spark_master,
        tracking_uri=f"http://{mlflow.address}:{tracking_port}",
        gateway=f"http://{gateway.address}:{port(gateway.address, 8000)}",
    )


def dataset_rows(cluster: Cluster, hdfs_conf: dict[str, str]) -> tuple[list[dict], list[float]]:
    """The manifest and every listed batch's Timestamps, read over HDFS from outside every host."""
    import os

    import pyarrow.parquet as pq

    from core.dataset import read_manifest
    from core.storage import open_storage

    os.environ.update(hdfs_conf)  # this process is an observer: a Hadoop client like the hosts
    storage = open_storage(cluster.dataset)
    entries = read_manifest(storage)
    stamps: list[float] = []
    for entry in entries:
        table = pq.read_table(io.BytesIO(storage.read(entry.file)))
        stamps += table.column("Timestamp").to_pylist()
        assert table.num_rows == entry.rows, (
            f"{entry.file}: {table.num_rows} rows, manifest says {entry.rows}"
        )
    return [vars(e) for e in entries], stamps


def test_produce_consume_train_promote_serve_on_hosts_that_share_nothing(hosts: Network) -> None:
    h = hosts.hosts
    cluster = start_services(hosts)
    kafka = {"BTCFLOW_KAFKA_BOOTSTRAP": cluster.bootstrap}

    # rows: a generated file on the producer's host, into Kafka; the consumer group cuts it into
    # batches on HDFS (the manifest there too)
    producer, consumer, trainer = h["producer"], h["consumer"], h["trainer"]
    producer.run(btcflow("data", "synth", "--rows", str(ROWS), "--out", "data/btc.csv", "--seed", "7"))
    producer.run(btcflow("produce", "--input", "data/btc.csv"), kafka)
    dataset = {"BTCFLOW_BATCH_URI": cluster.dataset, **hadoop_client_conf(consumer, cluster.namenode)}
    consumed = consumer.run(
        btcflow("consume", "--batch-rows", str(BATCH_ROWS), "--idle-timeout", "5"), {**kafka, **dataset}
    )
    assert f"consumed {ROWS:,} rows" in consumed.stdout + consumed.stderr

    # each row of the file exactly once in the dataset
    with (producer.data / "btc.csv").open() as f:
        sent = sorted(float(row["Timestamp"]) for row in csv.DictReader(f))
    entries, stamps = dataset_rows(cluster, hadoop_client_conf(trainer, cluster.namenode))
    assert [e["batch"] for e in entries] == [1, 2]
    assert len(stamps) == len(set(stamps)) == ROWS
    assert sorted(stamps) == sent

    # another host's local folder is not there: the trainer pointed at the consumer's disk fails loudly
    seen = trainer.run(["ls", "-A", str(consumer.folder)]).stdout.split()
    assert seen == [], f"the trainer sees the consumer's folder: {seen}"
    local = trainer.run(
        btcflow("train", "--model", "close", "--batches", "1"),
        {"BTCFLOW_BATCH_URI": str(consumer.data / "batch")},
        check=False,
    )
    assert local.returncode == 2 and "manifest" in local.stderr, local.stderr

    # train on the standalone cluster: the driver on the trainer's host, executors on the worker's
    training = {
        **dataset,
        **hadoop_client_conf(trainer, cluster.namenode),
        "BTCFLOW_SPARK_MASTER": cluster.spark_master,
        "BTCFLOW_SPARK_DRIVER_HOST": trainer.address,
        "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
        "BTCFLOW_SPARK_EXECUTOR_MEMORY": "512m",
        "MLFLOW_TRACKING_URI": cluster.tracking_uri,
        "MLFLOW_DFS_TMP": f"{cluster.namenode}/btcflow/tmp/mlflow",  # Spark ML writes models there first
    }
    trainer.run(btcflow("train", "--model", "all", "--batches", "2"), training, timeout=300)
    promoting = {
        name: trainer.spawn(btcflow("promote", "--model", name, "--version", "1"), training) for name in SPECS
    }
    wait_all(promoting, 120)
    registry = MlflowClient(cluster.tracking_uri)
    for spec in SPECS.values():
        (version,) = registry.search_model_versions(f"name = '{spec.registered_name}'")
        assert (version.version, version.current_stage) == ("1", "Production")
        run = registry.get_run(version.run_id)
        assert run.data.tags["btcflow.spark_master"] == cluster.spark_master

    # serve: the gateway has only the tracking server's address
    gateway = h["gateway"]
    host, gateway_port = cluster.gateway.removeprefix("http://").rsplit(":", 1)
    serving = gateway.spawn(
        btcflow("serve", "--host", host, "--port", gateway_port),
        {"MLFLOW_TRACKING_URI": cluster.tracking_uri, "BTCFLOW_POLL_INTERVAL_S": "2"},
    )
    try:
        wait_until(
            lambda: _ready(cluster.gateway) or serving.poll() is not None,
            120,
            lambda: f"the gateway's /ready: {output(serving)[-800:]}",
        )
        assert serving.poll() is None, output(serving)[-1500:]
        ts = stamps[-1] + 60
        close = httpx.get(f"{cluster.gateway}/predict/close", params={"timestamp": ts}, timeout=10).json()
        high_low = httpx.get(
            f"{cluster.gateway}/predict/high_low", params={"open": 5.0, "volume": 3.0}, timeout=10
        ).json()
        trend = httpx.get(
            f"{cluster.gateway}/predict/trend", params={"open": 5.0, "close": 5.1, "volume": 3.0}, timeout=10
        ).json()
        assert close["model"]["version"] == high_low["model"]["version"] == trend["model"]["version"] == "1"
        assert close["predicted_close"] > 0 and trend["predicted_trend"] in ("Up", "Down")
        assert high_low["predicted_high"] >= high_low["predicted_low"] - 1e-9, json.dumps(high_low)
    finally:
        serving.terminate()
        serving.wait(timeout=30)

    stop_services(hosts)


def _ready(gateway: str) -> bool:
    try:
        return httpx.get(f"{gateway}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_services(net: Network) -> None:
    """Every service stopped by its own command on its own host, together (what is left, power_off kills)."""
    h = net.hosts
    stopping = {name: h[name].spawn(btcflow("broker", "stop")) for name in h if name.startswith("kafka-")}
    stopping |= {name: h[name].spawn(btcflow("hdfs", "stop")) for name in h if name.startswith("hdfs-")}
    stopping |= {name: h[name].spawn(btcflow("spark", "stop")) for name in ("spark-master", "spark-worker")}
    stopping["mlflow"] = h["mlflow"].spawn(btcflow("tracking", "stop"))
    wait_all(stopping, 90)
    left = {name: pids for name, host in h.items() if (pids := host.processes(but_holder=True))}
    assert not left, f"processes left after every stop command: {left}"
