"""Ingest benchmark: R generated rows end to end (first send to every row in a closed batch) through
real embedded Kafka clusters, producer and consumer-group members side by side, for several shapes
NODES x PARTITIONS x CONSUMERS (default 1x1x1, 1x2x2 and 3x2x2, replication min(3, nodes)).

For each shape it prints, in one run on one machine: end-to-end rows/s; as the reference, Kafka's own
ProducerPerformance (R records of our average value size, acks=all) on a topic with the same
partitions, replication and min.insync.replicas, and our rate as a fraction of it; the peak RSS and
CPU seconds of each consumer member and of the producer (what limits the run). On shapes with three
or more nodes it also SIGKILLs the leader of partition 0 mid-run and prints the stall (the longest
time that partition's end offset did not move after the kill) and checks that every row landed once.

On one node it then reads the shape's topic, already full with the R rows, twice more, one reader after
the other: btcflow's consumer group (C fresh `btcflow consume` members, a new group and folder) and its
peer, Spark Structured Streaming (bench/spark_peer.py: the Kafka source, at pyspark's version when Maven
Central serves it, the value's JSON parsed into the six columns, a Parquet file sink,
`trigger(availableNow=True)`, local[*], offset ranges split over every core), and prints both rows/s and
their ratio. Fair by construction: the same topic, the same rows from the earliest offset to the end,
each writing the same six float columns as Parquet, nothing else running. btcflow's time runs from
launching its processes (interpreter start and group join included) until every row is in a closed
batch; Spark's from the query's start to its termination, its rows counted in the files it wrote: its
JVM's start-up is excluded (printed apart, once), which favours the peer. btcflow's rate from its
members' assignment is printed beside it. --no-peer skips it.

Then the dataset's store: one member (1x1x1) into a local folder and into HDFS (a 1-DataNode HDFS started
here, or --hdfs URI), end-to-end rows/s of both and their ratio; and the commit's cost (claim, publish,
view) at batches 1-10 against the last 10 of --commit-batches on the local disk (--hdfs-commit-batches on
HDFS, where each commit closes three small files, ~0.5 s each). --no-hdfs skips both.

Clusters run in a temporary folder on free ports and are stopped at the end.
    .venv/bin/python bench/ingest.py [--rows 1000000] [--shapes 1x1x1,1x2x2,3x2x2] [--batch-rows R/4]
    .venv/bin/python bench/ingest.py --nodes 3 --partitions 4 --consumers 3
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from commit import measure, report  # bench/commit.py
from kafka import KafkaConsumer, TopicPartition
from local_hdfs import temporary_hdfs  # bench/local_hdfs.py
from spark_peer import PeerRun, read_topic, start_session  # bench/spark_peer.py

from core.storage import open_storage
from pipeline.broker import ensure_topic, partition_leader
from pipeline.producer import produce
from pipeline.rows import FIELDS, RowChecker
from pipeline.settings import PipelineSettings
from pipeline.store import read_manifest
from pipeline.synth import synth
from services.kafka.cluster import EmbeddedCluster
from services.kafka.launcher import find_java, free_port_block

REPO = Path(__file__).resolve().parents[1]
BTCFLOW = str(Path(sys.executable).with_name("btcflow"))
DEADLINE_S = 900  # no shape runs longer than this


@dataclass(frozen=True)
class Shape:
    nodes: int
    partitions: int
    consumers: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        nodes, partitions, consumers = (int(x) for x in text.lower().split("x"))
        return cls(nodes, partitions, consumers)

    def __str__(self) -> str:
        return f"{self.nodes}x{self.partitions}x{self.consumers}"


@dataclass
class Result:
    shape: Shape
    end_to_end: float = 0.0
    reference: float = 0.0
    tuned_reference: float = 0.0
    producer_line: str = ""
    member_rss: list[int] = field(default_factory=list)
    member_cpu: list[float] = field(default_factory=list)
    producer_cpu: float = 0.0
    stall_s: float | None = None
    exactly_once: bool | None = None
    group_rate: float = 0.0  # the consumer group alone on the full topic, from launching it
    group_rate_joined: float = 0.0  # the same, from its members' assignment
    peer: PeerRun | None = None


def average_value_size(path: Path, sample: int = 10_000) -> int:
    """Mean size of our message values (the JSON), measured on the file's first rows."""
    checker, sizes = RowChecker(), []
    with path.open("rb") as f:
        f.readline()
        for line, _ in zip(f, range(sample), strict=False):
            checked = checker.check(line)
            if not isinstance(checked, str):
                sizes.append(len(orjson.dumps(dict(zip(FIELDS, checked[1], strict=True)))))
    return round(sum(sizes) / len(sizes))


class Members:
    """C `btcflow consume` processes of one group on one folder; peak RSS and CPU of each."""

    def __init__(
        self,
        count: int,
        env: dict[str, str],
        topic: str,
        out_dir: str,
        batch_rows: int,
        idle_s: float,
        group: str | None = None,
    ) -> None:
        args = ["--out", str(out_dir), "--topic", topic, "--group", group or f"bench-{topic}"]
        args += ["--batch-rows", str(batch_rows), "--idle-timeout", str(idle_s), "--no-progress"]
        self.procs = [
            subprocess.Popen(
                [BTCFLOW, "-v", "consume", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(count)
        ]
        self.out_dir = out_dir
        self.rss = [0] * count
        self.cpu = [0.0] * count
        self._joined = [threading.Event() for _ in range(count)]
        self.last_line = ""
        for proc, joined in zip(self.procs, self._joined, strict=True):
            threading.Thread(target=self._drain, args=(proc, joined), daemon=True).start()

    def _drain(self, proc: subprocess.Popen[bytes], joined: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # keep the pipe empty; note when the member holds partitions
            self.last_line = line.decode(errors="replace").strip()
            if b"pipeline: assigned [" in line:
                joined.set()

    def wait_joined(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        for joined in self._joined:
            joined.wait(max(0.0, deadline - time.monotonic()))

    def sample(self) -> None:
        for i, proc in enumerate(self.procs):
            try:
                ps = psutil.Process(proc.pid)
                self.rss[i] = max(self.rss[i], ps.memory_info().rss)
                times = ps.cpu_times()
                self.cpu[i] = times.user + times.system
            except psutil.Error:
                pass

    def rows_landed(self) -> int:
        return sum(e.rows for e in read_manifest(self.out_dir))

    def alive(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def rows_per_partition(self) -> dict[str, int]:
        """Messages per partition, from the manifest's offsets (no rejects in generated data)."""
        counts: dict[str, int] = {}
        for entry in read_manifest(self.out_dir):
            for partition, (first, last) in entry.offsets.items():
                counts[partition] = counts.get(partition, 0) + last - first + 1
        return counts

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=60)


TUNED = ["compression.type=lz4", "batch.size=262144", "linger.ms=20"]  # what btcflow's producer sets


def producer_performance(
    libs: Path,
    bootstrap: str,
    topic: str,
    rows: int,
    size: int,
    props: list[str] = [],  # noqa: B006
) -> float:
    """Kafka's own Java producer benchmark on `topic` (created by the caller): records/s. Its record
    payloads are random bytes, so lz4 (with `TUNED`) shrinks them less than our JSON."""
    done = subprocess.run(
        [
            find_java(),
            "-Xmx512m",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={REPO / 'pipeline' / 'kafka' / 'log4j2.properties'}",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(rows),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            *props,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    last = [ln for ln in done.stdout.splitlines() if "records sent" in ln]
    match = re.search(r"([\d.]+) records/sec", last[-1]) if last else None
    if not match:
        raise RuntimeError(f"ProducerPerformance failed: {(done.stdout + done.stderr)[-500:]}")
    return float(match.group(1))


class Failover:
    """SIGKILLs the leader of partition 0 once rows flow, then times how long its end offset stood still."""

    def __init__(self, cluster: EmbeddedCluster, topic: str, after_rows: int) -> None:
        self.cluster, self.topic, self.after_rows = cluster, topic, after_rows
        self.killed: int | None = None
        self.stall_s: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        tp = TopicPartition(self.topic, 0)
        watcher = KafkaConsumer(bootstrap_servers=self.cluster.bootstrap, request_timeout_ms=5000)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while watcher.end_offsets([tp])[tp] < self.after_rows and time.monotonic() < deadline:
                time.sleep(0.05)
            self.killed = partition_leader(self.cluster.bootstrap, self.topic, 0)
            before = watcher.end_offsets([tp])[tp]
            killed_at = time.monotonic()
            self.cluster.node(self.killed).kill()
            while time.monotonic() < deadline:  # until the partition grows again, via a new leader
                try:
                    if watcher.end_offsets([tp])[tp] > before:
                        self.stall_s = time.monotonic() - killed_at
                        return
                except Exception:  # noqa: BLE001 - metadata of a dead leader: ask again
                    pass
                time.sleep(0.05)
        finally:
            watcher.close()


def check_exactly_once(out_dir: str, path: Path) -> bool:
    """Every row of the file in the batches once, with equal values."""
    import pandas as pd

    expected = pd.read_csv(path, float_precision="round_trip").to_numpy()
    storage = open_storage(out_dir)
    got = np.concatenate(
        [
            pq.read_table(pa.BufferReader(storage.read(e.file))).to_pandas().to_numpy()
            for e in read_manifest(storage)
        ]
    )
    got = got[np.argsort(got[:, 0], kind="stable")]
    return got.shape == expected.shape and bool(np.array_equal(got, expected))


IDLE_S = 20.0  # members close their last, partial batch this long after their last message (subtracted)


def ingest(
    shape: Shape, cluster: EmbeddedCluster, path: Path, out_dir: str, rows: int, batch_rows: int, topic: str
) -> tuple[Members, float, str, float, Failover | None]:
    """Producer and members side by side until every row is in a closed batch: (members, seconds from
    the first send until the last row was read, the producer's line, its CPU seconds, the failover)."""
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": cluster.bootstrap}
    env.pop("BTCFLOW_DATA_DIR", None)
    settings = PipelineSettings(kafka_bootstrap=cluster.bootstrap, topic=topic, partitions=shape.partitions)
    ensure_topic(cluster.bootstrap, topic, shape.partitions)
    failing = topic.startswith("failover")
    members = Members(shape.consumers, env, topic, out_dir, batch_rows, 60 if failing else IDLE_S)
    try:
        members.wait_joined()
        failover = Failover(cluster, topic, rows // (4 * shape.partitions)) if failing else None
        me = psutil.Process()  # the producer: this process and its workers, reaped (children_*) when done
        cpu_before = sum(me.cpu_times()[:4])
        sent_at = time.monotonic()
        summary = produce(settings, path, workers=shape.partitions, progress=False)
        producer_cpu = sum(me.cpu_times()[:4]) - cpu_before  # members are reaped later
        while members.rows_landed() < rows:
            members.sample()
            if time.monotonic() > sent_at + DEADLINE_S or not members.alive():
                raise RuntimeError(
                    f"{shape}: {members.rows_landed():,} of {rows:,} rows landed; last: {members.last_line}"
                )
            time.sleep(0.1)
        done_at = time.monotonic()
        if not failing and any(n % batch_rows for n in members.rows_per_partition().values()):
            done_at -= IDLE_S  # a partial last batch waited out the idle timeout after its last row
    finally:
        members.stop()
    return members, done_at - sent_at, summary.line(), producer_cpu, failover


def read_back(
    shape: Shape, cluster: EmbeddedCluster, topic: str, out_dir: str, rows: int, batch_rows: int
) -> tuple[float, float]:
    """The consumer group alone on `topic`, already full with `rows` rows: (seconds from launching its
    members until every row is in a closed batch, the same from their assignment)."""
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": cluster.bootstrap}
    env.pop("BTCFLOW_DATA_DIR", None)
    launched = time.monotonic()
    members = Members(shape.consumers, env, topic, out_dir, batch_rows, IDLE_S, group=f"read-{topic}")
    try:
        members.wait_joined()
        joined = time.monotonic()
        while members.rows_landed() < rows:
            members.sample()
            if time.monotonic() > launched + DEADLINE_S or not members.alive():
                raise RuntimeError(f"{shape} read back: {members.rows_landed():,} of {rows:,} rows landed")
            time.sleep(0.05)
        done = time.monotonic()
        if any(n % batch_rows for n in members.rows_per_partition().values()):
            done -= IDLE_S
    finally:
        members.stop()
    return done - launched, done - joined


def run_shape(
    shape: Shape,
    cluster: EmbeddedCluster,
    path: Path,
    tmp: Path,
    size: int,
    rows: int,
    batch_rows: int,
    spark: object | None = None,
) -> Result:
    label = str(shape).replace("x", "-")
    result = Result(shape)
    members, seconds, result.producer_line, result.producer_cpu, _ = ingest(
        shape, cluster, path, str(tmp / f"batch-{label}"), rows, batch_rows, f"live-{label}"
    )
    result.end_to_end = rows / seconds
    result.member_rss, result.member_cpu = members.rss, members.cpu
    if spark is not None:  # the same full topic, read by the group alone, then by the peer
        topic = f"live-{label}"
        total, joined = read_back(shape, cluster, topic, str(tmp / f"read-{label}"), rows, batch_rows)
        result.group_rate, result.group_rate_joined = rows / total, rows / joined
        result.peer = read_topic(spark, cluster.bootstrap, topic, tmp / f"peer-{label}")
        if result.peer.rows != rows:
            raise RuntimeError(f"the Spark peer wrote {result.peer.rows:,} rows of {rows:,}")
    reference_topic = f"perf-{label}"
    ensure_topic(cluster.bootstrap, reference_topic, shape.partitions)
    libs = cluster.jars_dir / "libs"
    result.reference = producer_performance(libs, cluster.bootstrap, reference_topic, rows, size)
    result.tuned_reference = producer_performance(libs, cluster.bootstrap, reference_topic, rows, size, TUNED)
    if shape.nodes >= 3:
        members, _, _, _, failover = ingest(
            shape, cluster, path, str(tmp / f"failover-{label}"), rows, batch_rows, f"failover-{label}"
        )
        assert failover is not None
        failover.thread.join(timeout=60)
        result.stall_s = failover.stall_s
        result.exactly_once = check_exactly_once(members.out_dir, path)
        cluster.start()  # the killed node comes back
    return result


def compare_stores(
    cluster: EmbeddedCluster, path: Path, tmp: Path, rows: int, batch_rows: int, hdfs: str
) -> tuple[float, float]:
    """End-to-end rows/s of one member (shape 1x1x1) into a local folder, then into `hdfs`: the same
    cluster, file and batch size, one after the other."""
    shape = Shape(1, 1, 1)
    local = rows / ingest(shape, cluster, path, str(tmp / "store-local"), rows, batch_rows, "store-local")[1]
    remote = rows / ingest(shape, cluster, path, f"{hdfs}/store-hdfs", rows, batch_rows, "store-hdfs")[1]
    return local, remote


def store_figures(
    args: argparse.Namespace, clusters: dict, path: Path, tmp: Path, rows: int, batch_rows: int
) -> None:
    """The local-against-HDFS comparison, then the commit cost at 10 and N batches on both stores.
    Starts what it needs (a 1-DataNode HDFS, a 1-node Kafka) into `clusters`, which the caller stops."""
    hdfs = args.hdfs
    if hdfs is None:
        clusters["hdfs"] = temporary_hdfs(tmp)
        hdfs = f"{clusters['hdfs'].start(datanodes=1, timeout_s=180)}/bench"
    if 1 not in clusters:
        clusters[1] = EmbeddedCluster(
            tmp / "kafka-1", PipelineSettings().kafka_jars, 1, free_port_block(2), "512m"
        )
        clusters[1].start(timeout_s=180)
    stores = compare_stores(clusters[1], path, tmp, rows, batch_rows, hdfs)
    local, remote = stores
    print(
        f"store 1x1x1 end to end: local {local:,.0f} rows/s, hdfs {remote:,.0f} rows/s, ratio "
        f"{remote / local:.2f} (goal 0.8: {'met' if remote / local >= 0.8 else 'not met'})",
        flush=True,
    )
    n = args.commit_batches
    if n:
        print(f"\ncommit cost, medians of 10 commits (batches of 10 rows), {n} batches:")
        report("local", measure(open_storage(tmp / "commit-local"), n), n)
        n = args.hdfs_commit_batches
        report("hdfs", measure(open_storage(f"{hdfs}/commit"), n), n)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of generated data (R)")
    parser.add_argument(
        "--shapes", default="1x1x1,1x2x2,3x2x2", help="NODESxPARTITIONSxCONSUMERS, comma-separated"
    )
    parser.add_argument("--nodes", type=int, help="with --partitions and --consumers: one shape only")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=None, help="consumer batch size (default R/4)")
    parser.add_argument(
        "--hdfs", help="an hdfs://host:port/path for the store comparison (default: a 1-DataNode HDFS here)"
    )
    parser.add_argument("--no-hdfs", action="store_true", help="skip the local-against-HDFS comparison")
    parser.add_argument(
        "--no-peer", action="store_true", help="skip Spark Structured Streaming on the 1-node shapes' topics"
    )
    parser.add_argument(
        "--commit-batches", type=int, default=1000, help="batches of the commit-cost figures (0: none)"
    )
    parser.add_argument(
        "--hdfs-commit-batches", type=int, default=300, help="the same on HDFS (~1 s a commit: 3 small files)"
    )
    args = parser.parse_args()
    shapes = (
        [Shape(args.nodes, args.partitions, args.consumers)]
        if args.nodes
        else [Shape.parse(s) for s in args.shapes.split(",")]
    )
    rows, batch_rows = args.rows, args.batch_rows or max(1, args.rows // 4)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="btcflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "btc.csv"
        synth(rows, path, seed=42)
        size = average_value_size(path)
        print(f"data: {rows:,} rows, average value {size} bytes; batches of {batch_rows:,} rows")
        clusters: dict = {}  # Kafka clusters by node count, and "hdfs"
        spark = None  # the peer's session, started at the first one-node shape
        try:
            for shape in shapes:
                if shape.nodes not in clusters:
                    port = free_port_block(2 * shape.nodes)
                    home = tmp / f"kafka-{shape.nodes}"
                    cluster = EmbeddedCluster(home, PipelineSettings().kafka_jars, shape.nodes, port, "512m")
                    started = time.monotonic()
                    cluster.start(timeout_s=180)
                    print(
                        f"{shape.nodes}-node cluster at {cluster.bootstrap} "
                        f"in {time.monotonic() - started:.0f} s"
                    )
                    clusters[shape.nodes] = cluster
                if shape.nodes == 1 and not args.no_peer and spark is None:
                    spark, version, started_s = start_session()
                    print(f"Spark peer: local[*], spark-sql-kafka {version}, session in {started_s:.1f} s")
                peer = spark if shape.nodes == 1 else None
                cluster = clusters[shape.nodes]
                results.append(run_shape(shape, cluster, path, tmp, size, rows, batch_rows, peer))
                print(describe(results[-1]), flush=True)
            if not args.no_hdfs:
                store_figures(args, clusters, path, tmp, rows, batch_rows)
        finally:
            if spark is not None:
                spark.stop()
            for cluster in clusters.values():
                cluster.stop()
    print()
    one_node = [r for r in results if r.shape.nodes == 1]
    if one_node:
        best = max(r.end_to_end / r.reference for r in one_node)
        print(
            f"goal 0.6 of ProducerPerformance on one node: {'met' if best >= 0.6 else 'not met'} ({best:.2f})"
        )
    peers = [r for r in results if r.peer is not None]
    if peers:
        best = max(r.group_rate / r.peer.rows_per_s for r in peers if r.peer is not None)
        verdict = "met" if best >= 1.0 else "not met"
        print(f"goal consumer group 1.0 of Spark Structured Streaming (query only): {verdict} ({best:.2f})")
    stalls = [r for r in results if r.stall_s is not None]
    for r in stalls:
        verdict = "met" if r.stall_s is not None and r.stall_s < 15 and r.exactly_once else "not met"
        print(f"goal failover stall under 15 s with nothing lost ({r.shape}): {verdict}")


def describe(r: Result) -> str:
    rss = ", ".join(f"{b / 2**20:,.0f}" for b in r.member_rss)
    cpu = ", ".join(f"{c:.1f}" for c in r.member_cpu)
    lines = [
        f"== {r.shape}: end to end {r.end_to_end:,.0f} rows/s; ProducerPerformance {r.reference:,.0f} rec/s; "
        f"ratio {r.end_to_end / r.reference:.2f}; with btcflow's producer settings "
        f"({', '.join(TUNED)}) {r.tuned_reference:,.0f} rec/s, ratio {r.end_to_end / r.tuned_reference:.2f}",
        f"   producer: {r.producer_line} (CPU {r.producer_cpu:.1f} s)",
        f"   members: peak RSS MiB [{rss}], CPU s [{cpu}]",
    ]
    if r.peer is not None:
        lines.append(
            f"   full topic: consumer group {r.group_rate:,.0f} rows/s from launch "
            f"({r.group_rate_joined:,.0f} from assignment); Spark Structured Streaming "
            f"{r.peer.rows_per_s:,.0f} rows/s (query only, {r.peer.rows:,} rows in {r.peer.seconds:.1f} s); "
            f"ratio {r.group_rate / r.peer.rows_per_s:.2f}"
        )
    if r.stall_s is not None or r.exactly_once is not None:
        stall = f"{r.stall_s:.1f} s" if r.stall_s is not None else "never recovered"
        lines.append(f"   leader of partition 0 SIGKILLed: stall {stall}; every row once: {r.exactly_once}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
