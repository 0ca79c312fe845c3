"""Hosts that share nothing: every role of btcflow on a host of its own, and the whole job still runs.

Each role runs in its own mount namespace with its own loopback address (tests/hosts.py): the Kafka nodes,
the HDFS NameNode and two DataNodes, the producer, the consumer group, the Spark master, a Spark worker (its
executors on its host), MLflow's server with its PostgreSQL, the trainer (Spark's driver) and the gateway.
A private tmpfs covers every other host's folder, so what a role keeps locally no other role can read: the
dataset travels through HDFS, the models through MLflow's server, the rows through Kafka.

produce → consume into hdfs:// → train on spark:// → promote → serve, with each row in the dataset exactly
once; and a role that reads another's local folder fails. The README's "Hosts that share nothing" lists
these very commands. Skipped, saying why, where this machine cannot make a mount namespace (not root).
"""

from __future__ import annotations

import csv
import io
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from core.access import PASSWORD_VAR, USERNAME_VAR
from core.credentials import read_credential
from tests.hosts import REPO, Host, Network, btcflow, network, output, unavailable
from tests.waiting import wait_until
from training.specs import SPECS

reason = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=reason or "")]

log = logging.getLogger("tests.shared_nothing")

ROWS = 3000  # two batches of 1,500: the smallest test split still holds ~300 rows
BATCH_ROWS = 1500
KAFKA_NODES = 3
ADDRESSES = {
    **{f"kafka-{i}": f"127.0.0.{1 + i}" for i in range(1, KAFKA_NODES + 1)},  # 127.0.0.2, .3, .4
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
# small JVMs and few trees: 2 cores run all of it
SPARK_DAEMONS = {"BTCFLOW_SPARK_DAEMON_MEMORY": "256m"}
EXECUTOR = {"BTCFLOW_SPARK_EXECUTOR_MEMORY": "512m"}
TRAIN_SMALL = ("--max-iter", "10", "--num-trees", "4", "--max-depth", "3")


def port(host: str, default: int) -> int:
    """The service's default port on its host's own address, unless something holds it there (or on
    0.0.0.0): then a free one."""
    with socket.socket() as s:
        try:
            s.bind((host, default))
            return default
        except OSError:
            s.bind((host, 0))
            return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """Where each service answers: all the other hosts are told."""

    bootstrap: str
    namenode: str  # hdfs://host:port
    spark_master: str
    tracking_uri: str
    gateway_host: str
    gateway_port: int

    @property
    def dataset(self) -> str:
        return f"{self.namenode}/btcflow/batch"

    @property
    def gateway(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"


def hdfs_client_config() -> dict[str, str]:
    """What every HDFS client sets: DataNodes reached at the address they registered (all of them connect
    to the NameNode from 127.0.0.1)."""
    from services.hdfs.cluster import HdfsCluster

    return HdfsCluster(REPO, REPO).client_config


def hadoop_client_conf(host: Host, namenode: str) -> dict[str, str]:
    """A Hadoop client's configuration on `host` (HADOOP_CONF_DIR, read by hdfs-native and by Spark): the
    NameNode as the default file system, DataNodes reached at the address they registered."""
    folder = host.folder / "hadoop-conf"
    folder.mkdir(exist_ok=True)
    sites = {
        "core-site.xml": {"fs.defaultFS": namenode},
        "hdfs-site.xml": hdfs_client_config(),
    }
    for name, properties in sites.items():
        body = "".join(
            f"<property><name>{k}</name><value>{v}</value></property>" for k, v in properties.items()
        )
        (folder / name).write_text(f"<?xml version='1.0'?>\n<configuration>{body}</configuration>\n")
    return {"HADOOP_CONF_DIR": str(folder)}


def wait_all(procs: dict[str, subprocess.Popen[str]], timeout_s: float) -> None:
    """Every spawned command ends with 0; one that does not fails naming its host and its last lines."""
    deadline = time.monotonic() + timeout_s
    for name, proc in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name}: not done after {timeout_s:.0f} s: {output(proc)[-1500:]}"
            ) from None
        assert code == 0, f"{name} exited {code}: {output(proc)[-1500:]}"


def start_services(net: Network) -> Cluster:
    """Every service on its own host, started side by side: the Kafka nodes (each waits for the quorum),
    the NameNode, the Spark master and MLflow; then the DataNodes and the worker join theirs."""
    h = net.hosts
    kafka = [h[f"kafka-{i}"] for i in range(1, KAFKA_NODES + 1)]
    client_ports = {n.name: port(n.address, 9092) for n in kafka}
    voters = ",".join(f"{i}@{n.address}:{port(n.address, 9093)}" for i, n in enumerate(kafka, start=1))
    cluster_id = kafka[0].run(btcflow("broker", "cluster-id")).stdout.strip()
    nn, master, mlflow, worker = h["hdfs-namenode"], h["spark-master"], h["mlflow"], h["spark-worker"]
    nn_port, nn_http = port(nn.address, 9820), port(nn.address, 9870)
    namenode = f"hdfs://{nn.address}:{nn_port}"
    spark_port = port(master.address, 7077)
    spark_master = f"spark://{master.address}:{spark_port}"
    tracking_port = port(mlflow.address, 5000)

    starting = {
        node.name: node.spawn(
            btcflow("broker", "start", "--node-id", str(i), "--voters", voters, "--cluster-id", cluster_id),
            {"BTCFLOW_BROKER_PORT": str(client_ports[node.name]), "BTCFLOW_BROKER_HEAP": "256m"},
        )
        for i, node in enumerate(kafka, start=1)
    }
    first = {
        nn.name: nn.spawn(
            btcflow("hdfs", "start", "--datanodes", "0", "--host", nn.address),
            {"BTCFLOW_HDFS_PORT": str(nn_port), "BTCFLOW_HDFS_HTTP_PORT": str(nn_http)},
        ),
        master.name: master.spawn(
            btcflow("spark", "start", "--host", master.address, "--workers", "0"),
            {
                "BTCFLOW_SPARK_PORT": str(spark_port),
                "BTCFLOW_SPARK_UI_PORT": str(port(master.address, 8080)),
                "BTCFLOW_SPARK_HISTORY_PORT": str(port(master.address, 18080)),
                **SPARK_DAEMONS,
            },
        ),
    }
    starting[mlflow.name] = mlflow.spawn(
        btcflow("tracking", "start", "--host", mlflow.address, "--postgres-host", mlflow.address),
        {
            "BTCFLOW_TRACKING_PORT": str(tracking_port),
            "BTCFLOW_POSTGRES_PORT": str(port(mlflow.address, 5433)),
            "BTCFLOW_TRACKING_WORKERS": "1",
        },
    )
    wait_all(first, 180)
    for name in ("hdfs-datanode-1", "hdfs-datanode-2"):
        starting[name] = h[name].spawn(
            btcflow("hdfs", "join", namenode, "--host", h[name].address),
            {"BTCFLOW_HDFS_HTTP_PORT": str(nn_http)},
        )
    starting[worker.name] = worker.spawn(
        btcflow("spark", "start", "--host", worker.address, "--join", spark_master, "--memory", "1g"),
        {
            "BTCFLOW_SPARK_WORKER_UI_PORT": str(port(worker.address, 8081)),
            **SPARK_DAEMONS,
            **EXECUTOR,
            **hadoop_client_conf(worker, namenode),  # its executors read the batches on HDFS
        },
    )
    wait_all(starting, 240)
    gateway = h["gateway"]
    return Cluster(
        bootstrap=",".join(f"{n.address}:{client_ports[n.name]}" for n in kafka),
        namenode=namenode,
        spark_master=spark_master,
        tracking_uri=f"http://{mlflow.address}:{tracking_port}",
        gateway_host=gateway.address,
        gateway_port=port(gateway.address, 8000),
    )


def stop_services(net: Network) -> None:
    """Every service stopped by its own command on its own host, side by side; nothing may be left."""
    h = net.hosts
    commands = {
        **{name: ("broker", "stop") for name in h if name.startswith("kafka-")},
        **{name: ("hdfs", "stop") for name in h if name.startswith("hdfs-")},
        "spark-master": ("spark", "stop"),
        "spark-worker": ("spark", "stop"),
        "mlflow": ("tracking", "stop"),
    }
    wait_all({name: h[name].spawn(btcflow(*args)) for name, args in commands.items()}, 90)
    left = {name: pids for name, host in h.items() if (pids := host.processes(but_holder=True))}
    assert not left, f"processes left on their hosts after every stop command: {left}"


def dataset_timestamps(cluster: Cluster) -> tuple[list[int], list[float]]:
    """The batch numbers the manifest lists and every listed row's Timestamp, read over HDFS by this
    process (an observer outside every host, a Hadoop client like them)."""
    import hdfs_native
    import pyarrow.parquet as pq

    from core.dataset import read_manifest
    from core.storage import HdfsStorage

    client = hdfs_native.Client(cluster.namenode, config=hdfs_client_config())
    storage = HdfsStorage(cluster.dataset, client=client)
    entries = read_manifest(storage)
    stamps: list[float] = []
    for entry in entries:
        table = pq.read_table(io.BytesIO(storage.read(entry.file)))
        assert table.num_rows == entry.rows, (
            f"{entry.file}: {table.num_rows} rows, the manifest says {entry.rows}"
        )
        stamps += table.column("Timestamp").to_pylist()
    return [e.batch for e in entries], stamps


def ready(gateway: str) -> bool:
    try:
        return httpx.get(f"{gateway}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def hosts() -> Iterator[Network]:
    """The hosts, powered off (every process of theirs killed) and removed at the end, also on failure."""
    with network(ADDRESSES) as net:
        yield net


def login(mlflow_host: Host, role: str) -> dict[str, str]:
    """The tracking server's credential for `role`, as its host's start kept it, handed to another host the
    way an operator would: in MLflow's own variables (no host reads another's files)."""
    kept = read_credential(mlflow_host.data / "tracking" / "credentials" / role)
    assert kept is not None, f"the tracking server kept no {role} credential"
    return {USERNAME_VAR: kept.username, PASSWORD_VAR: kept.password}


def test_produce_consume_train_promote_serve_on_hosts_that_share_nothing(
    hosts: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    started = time.monotonic()

    def phase(what: str) -> None:
        log.info("%6.1f s  %s", time.monotonic() - started, what)

    h = hosts.hosts
    producer, consumer, trainer, gateway = h["producer"], h["consumer"], h["trainer"], h["gateway"]
    cluster = start_services(hosts)
    phase("every service up")

    # a generated file on the producer's host into Kafka; the consumer group cuts it into batches on HDFS
    kafka = {"BTCFLOW_KAFKA_BOOTSTRAP": cluster.bootstrap}
    producer.run(btcflow("data", "synth", "--rows", str(ROWS), "--out", "data/btc.csv", "--seed", "7"))
    producer.run(btcflow("produce", "--input", "data/btc.csv"), kafka)
    dataset = {"BTCFLOW_BATCH_URI": cluster.dataset}
    consumer.run(
        btcflow("consume", "--batch-rows", str(BATCH_ROWS), "--idle-timeout", "5"),
        {**kafka, **dataset, **hadoop_client_conf(consumer, cluster.namenode)},
    )
    phase("produced and consumed")

    # each row of the file exactly once in the dataset
    with (producer.data / "btc.csv").open() as f:
        sent = sorted(float(row["Timestamp"]) for row in csv.DictReader(f))
    batches, stamps = dataset_timestamps(cluster)
    assert batches == [1, 2]
    assert len(stamps) == len(set(stamps)) == ROWS
    assert sorted(stamps) == sent

    # another host's folder is not there: the trainer sees an empty consumer folder, and training on the
    # consumer's local dataset fails in one line
    assert trainer.run(["ls", "-A", str(consumer.folder)]).stdout.split() == []
    local = trainer.run(
        btcflow("train", "--model", "close", "--batches", "1"),
        {"BTCFLOW_BATCH_URI": str(consumer.data / "batch")},
        check=False,
    )
    assert local.returncode == 2 and "manifest" in local.stderr, local.stderr

    # train on the standalone cluster: the driver on the trainer's host, its executors on the worker's
    training = {
        **dataset,
        **hadoop_client_conf(trainer, cluster.namenode),
        "BTCFLOW_SPARK_MASTER": cluster.spark_master,
        "BTCFLOW_SPARK_DRIVER_HOST": trainer.address,
        "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
        **EXECUTOR,
        "MLFLOW_TRACKING_URI": cluster.tracking_uri,
        **login(h["mlflow"], "trainer"),
        "MLFLOW_DFS_TMP": f"{cluster.namenode}/btcflow/tmp/mlflow",  # where Spark ML saves a model first
    }
    trainer.run(btcflow("train", "--model", "all", "--batches", "2", *TRAIN_SMALL), training, timeout=300)
    phase("trained on spark://")
    promoting = {
        m: trainer.spawn(btcflow("promote", "--model", m, "--version", "1"), training) for m in SPECS
    }
    wait_all(promoting, 120)
    for name, value in login(h["mlflow"], "reader").items():  # the test reads the registry as the reader
        monkeypatch.setenv(name, value)
    registry = MlflowClient(cluster.tracking_uri, registry_uri=cluster.tracking_uri)
    for spec in SPECS.values():
        (version,) = registry.search_model_versions(f"name = '{spec.registered_name}'")
        assert (version.version, version.current_stage) == ("1", "Production")
        assert registry.get_run(version.run_id).data.tags["btcflow.spark_master"] == cluster.spark_master
    phase("promoted")

    # the same training on a dataset in the trainer's own folder (the local default, filled by a consumer
    # of its own): the driver reads the manifest, but the executors on the worker's host find no file
    trainer.run(
        btcflow("consume", "--batch-rows", str(BATCH_ROWS), "--idle-timeout", "3"),
        {**kafka, "BTCFLOW_CONSUMER_GROUP": "trainer-local"},
    )
    local_training = {k: v for k, v in training.items() if k not in ("BTCFLOW_BATCH_URI", "HADOOP_CONF_DIR")}
    unread = trainer.run(btcflow("train", "--model", "close", "--batches", "1"), local_training, check=False)
    batch_1 = trainer.data / "batch" / "batch_1.parquet"
    assert unread.returncode != 0 and f"File file:{batch_1} does not exist" in unread.stderr, unread.stderr[
        -2000:
    ]
    phase("a local dataset is not the executors'")

    # serve: the gateway knows only the tracking server's address
    serving = gateway.spawn(
        btcflow("serve", "--host", cluster.gateway_host, "--port", str(cluster.gateway_port)),
        {
            "MLFLOW_TRACKING_URI": cluster.tracking_uri,
            **login(h["mlflow"], "reader"),
            "BTCFLOW_POLL_INTERVAL_S": "2",
        },
    )
    try:
        wait_until(
            lambda: ready(cluster.gateway) or serving.poll() is not None,
            120,
            lambda: f"the gateway's /ready: {output(serving)[-800:]}",
        )
        assert serving.poll() is None, output(serving)[-1500:]
        answers = [
            httpx.get(f"{cluster.gateway}/predict/close", params={"timestamp": stamps[-1] + 60}, timeout=10),
            httpx.get(f"{cluster.gateway}/predict/high_low", params={"open": 5.0, "volume": 3.0}, timeout=10),
            httpx.get(
                f"{cluster.gateway}/predict/trend",
                params={"open": 5.0, "close": 5.1, "volume": 3.0},
                timeout=10,
            ),
        ]
        assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
        close, high_low, trend = (a.json() for a in answers)
        assert {a["model"]["version"] for a in (close, high_low, trend)} == {"1"}
        assert close["predicted_close"] > 0 and trend["predicted_trend"] in ("Up", "Down")
        assert high_low["predicted_high"] > 0 and high_low["predicted_low"] > 0
    finally:
        serving.terminate()
        serving.wait(timeout=30)
    phase("served")

    stop_services(hosts)
    phase("every service stopped")
