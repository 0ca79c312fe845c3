"""Ingest benchmark: R generated rows through a real broker, producer and consumer side by side.

Prints the producer's rows/s, the consumer's rows/s (side by side, and draining a full topic alone),
end-to-end rows/s (first send to last batch closed), the consumer's peak RSS, and, as the reference
in the same run on the same machine, Kafka's own ProducerPerformance tool for R records of our average
value size, with our end-to-end rate as a fraction of it.

Starts its own broker in a temporary folder on free ports (no running broker needed) and stops it.
    .venv/bin/python bench/ingest.py [--rows 1000000] [--workers 1] [--batch-rows 250000]
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
from pathlib import Path

import orjson
import psutil

from pipeline.broker import EmbeddedBroker, ensure_topic, find_java, free_port_pair
from pipeline.producer import ProduceSummary, produce
from pipeline.rows import FIELDS, RowChecker
from pipeline.settings import PipelineSettings
from pipeline.store import read_manifest
from pipeline.synth import synth

REPO = Path(__file__).resolve().parents[1]
BTCFLOW = str(Path(sys.executable).with_name("btcflow"))
DEADLINE_S = 1800  # no phase of the bench runs longer than this


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


class Watch:
    """Polls a consumer process: peak RSS (with its children) and when the manifest reached each row count."""

    def __init__(self, proc: subprocess.Popen[bytes], out_dir: Path, rows: int) -> None:
        self.proc, self.out_dir, self.rows = proc, out_dir, rows
        self.peak_rss = 0
        self.first_batch: tuple[float, int] | None = None  # (time, rows) when the first batch closed
        self.done_at: float | None = None

    def run(self, deadline: float) -> None:
        ps = psutil.Process(self.proc.pid)
        while time.monotonic() < deadline and self.done_at is None:
            try:
                procs = [ps, *ps.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            if self.done_at is None and (self.out_dir / "manifest.json").exists():
                batches = read_manifest(self.out_dir)
                total = sum(b.rows for b in batches)
                if batches and self.first_batch is None:
                    self.first_batch = (time.monotonic(), total)
                if total >= self.rows:
                    self.done_at = time.monotonic()
            if self.proc.poll() is not None and self.done_at is None:
                return  # it exited early; consumer_line reports why
            time.sleep(0.1)

    def steady_rate(self) -> float | None:
        """Rows/s between the first batch closing and the last one: start-up and idle wait left out."""
        if self.first_batch is None or self.done_at is None or self.done_at <= self.first_batch[0]:
            return None
        return (self.rows - self.first_batch[1]) / (self.done_at - self.first_batch[0])


def start_consumer(env: dict[str, str], topic: str, out_dir: Path, batch_rows: int) -> subprocess.Popen:
    """`btcflow consume` as users run it; stopped by SIGTERM once the manifest holds every row.

    The idle timeout is long because a second consumer of the same group (the CLI's default) waits for
    the previous static member's session to expire before it gets the partitions.
    """
    cmd = [
        BTCFLOW,
        "consume",
        "--out",
        str(out_dir),
        "--batch-rows",
        str(batch_rows),
        "--idle-timeout",
        "120",
    ]
    return subprocess.Popen(
        cmd, env={**env, "BTCFLOW_TOPIC": topic}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def consumer_line(proc: subprocess.Popen, watch: Watch) -> str:
    if proc.poll() is None:
        proc.terminate()  # every row is in the manifest: a clean stop, with its summary line
    out, err = proc.communicate(timeout=60)
    if watch.done_at is None:
        raise RuntimeError(f"the consumer did not get every row: {(out + err).decode()[-800:]}")
    return out.decode().strip()


def producer_performance(libs: Path, bootstrap: str, rows: int, size: int) -> tuple[float, str]:
    """Kafka's own Java producer benchmark: (records/s, its summary line)."""
    ensure_topic(bootstrap, "perf-reference", 1)
    done = subprocess.run(
        [
            find_java(),
            "-Xmx512m",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={REPO / 'pipeline' / 'kafka' / 'log4j2.properties'}",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            "perf-reference",
            "--num-records",
            str(rows),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
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
    return float(match.group(1)), last[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of generated data (R)")
    parser.add_argument("--workers", type=int, default=1, help="producer processes (one partition each)")
    parser.add_argument("--batch-rows", type=int, default=None, help="consumer batch size (default R/4)")
    args = parser.parse_args()
    rows, batch_rows = args.rows, args.batch_rows or max(1, args.rows // 4)
    base = PipelineSettings()
    with tempfile.TemporaryDirectory(prefix="btcflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "btc.csv"
        started = time.monotonic()
        synth(rows, path, seed=42)
        synth_s = time.monotonic() - started
        value_size = average_value_size(path)
        print(
            f"data: {rows:,} rows generated in {synth_s:.1f} s ({rows / synth_s:,.0f} rows/s), "
            f"average value {value_size} bytes"
        )

        broker = EmbeddedBroker(tmp / "kafka", base.kafka_jars, port=free_port_pair(), heap="1g")
        bootstrap = broker.start(timeout_s=120)
        try:
            env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": bootstrap}
            env.pop("BTCFLOW_DATA_DIR", None)

            # 1. side by side on topic "live", first while the default consumer group is fresh
            live = PipelineSettings(kafka_bootstrap=bootstrap, topic="live", partitions=args.workers)
            ensure_topic(bootstrap, live.topic, args.workers)
            consumer = start_consumer(env, live.topic, tmp / "batch", batch_rows)
            time.sleep(3)  # let it join the group before the first row
            watch = Watch(consumer, tmp / "batch", rows)
            result: list[ProduceSummary] = []
            sent_at = time.monotonic()
            producer = threading.Thread(
                target=lambda: result.append(produce(live, path, workers=args.workers, progress=False))
            )
            producer.start()
            watch.run(sent_at + DEADLINE_S)
            producer.join(timeout=DEADLINE_S)
            live_line = consumer_line(consumer, watch)
            if not result:
                raise RuntimeError("the producer did not finish")
            assert watch.done_at is not None
            end_to_end = rows / (watch.done_at - sent_at)

            # 2. the producer alone, into topic "alone"
            alone = PipelineSettings(kafka_bootstrap=bootstrap, topic="alone", partitions=args.workers)
            produced_alone = produce(alone, path, workers=args.workers, progress=False)

            # 3. the consumer alone, draining the full topic "alone"
            drain = start_consumer(env, "alone", tmp / "drain", batch_rows)
            drain_watch = Watch(drain, tmp / "drain", rows)
            drain_watch.run(time.monotonic() + DEADLINE_S)
            drain_line = consumer_line(drain, drain_watch)

            reference, reference_line = producer_performance(
                base.kafka_jars / "libs", bootstrap, rows, value_size
            )
        finally:
            broker.stop()

    print(f"producer alone ({args.workers} worker(s)): {produced_alone.line()}")
    print(f"consumer alone (draining a full topic): {drain_line}")
    print(f"  steady rows/s, first to last batch closed: {drain_watch.steady_rate() or float('nan'):,.0f}")
    print(f"side by side, producer: {result[0].line()}")
    print(f"side by side, consumer: {live_line}")
    print(f"  steady rows/s, first to last batch closed: {watch.steady_rate() or float('nan'):,.0f}")
    print(f"end to end rows/s (first send to last batch closed): {end_to_end:,.0f}")
    print(
        f"consumer peak RSS: {watch.peak_rss / 2**20:,.0f} MiB side by side, "
        f"{drain_watch.peak_rss / 2**20:,.0f} MiB draining ({batch_rows:,}-row batches)"
    )
    print(f"reference, Kafka ProducerPerformance ({rows:,} x {value_size} B, acks=all): {reference_line}")
    print(f"end to end as a fraction of ProducerPerformance: {end_to_end / reference:.3f}")
    print(f"goal 50,000 rows/s end to end: {'met' if end_to_end >= 50_000 else 'not met'}")


if __name__ == "__main__":
    main()
