"""Monitor benchmark: does `btcflow monitor` keep up with the producer at --rate 1000 rows/s on this machine?

In a temporary folder: an embedded Kafka broker on free ports, an MLflow store with small real Spark models
(the tests' helpers; each model a Production version and one challenger, so six versions score every row),
and R generated rows. `btcflow monitor` (its own process, as users run it) joins a new group first; then
the producer replays the rows at RATE rows/s. Sampling the monitor's /metrics and the topic's end offset,
it prints the producer's rate, the monitor's scoring rate over the same run and their ratio, the lag
(rows produced but not yet scored) at the producer's last row and at worst, how long after that last row
the monitor had scored everything, and the monitor's CPU. A second monitor (new group) then reads the same
rows as a backlog, as fast as it can: its rate over the RATE goal is the headroom.

    .venv/bin/python bench/monitor.py [--rows 60000] [--rate 1000] [--store URI]
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

import httpx
import psutil
from kafka import KafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.broker import ensure_topic, free_port_pair  # noqa: E402
from pipeline.producer import Pacing, produce  # noqa: E402
from pipeline.settings import PipelineSettings  # noqa: E402
from pipeline.synth import synth  # noqa: E402
from services.kafka.cluster import EmbeddedBroker  # noqa: E402
from services.processes import free_port  # noqa: E402 - the repo is on sys.path just above

BTCFLOW = str(Path(sys.executable).with_name("btcflow"))
TOPIC = "bench-monitor"
DEADLINE_S = 600  # no monitor run waits longer than this


def build_store(root: Path) -> str:
    """Each model fitted twice on small frames: v1 promoted, v2 a challenger (Spark local[1])."""
    from bench import spark_models as sm

    uri = f"sqlite:///{root / 'mlflow.db'}"
    spark = sm.spark_session()
    for seed in (0, 1):
        frame = sm.synthetic_minutes(3000, seed=seed)
        for kind in sm.REGISTERED:
            version = sm.log_and_register(sm.fit(spark, kind, frame), kind, frame, uri)
            if seed == 0:
                sm.promote(uri, kind, version)
    spark.stop()
    return uri


def scraped(url: str) -> dict[str, float]:
    """rows_scored_total and consumer_lag from the monitor's /metrics (empty while it does not answer)."""
    try:
        page = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return {}
    out = {}
    for name in ("btcflow_monitor_rows_scored_total", 'btcflow_monitor_consumer_lag{partition="0"}'):
        match = re.search(rf"^{re.escape(name)} (\S+)$", page, re.MULTILINE)
        if match:
            out[name.split("{")[0]] = float(match.group(1))
    return out


@dataclass
class Samples:
    """(seconds since the first send, rows in the topic, rows scored) every `every_s`, and the CPU used."""

    url: str
    bootstrap: str
    proc: psutil.Process
    every_s: float = 0.25
    rows: list[tuple[float, int, int]] = field(default_factory=list)
    cpu_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def run(self, stop: threading.Event) -> None:
        """Until `stop` or the monitor exits. Scored is read before produced: the lag is never under-read."""
        tp = TopicPartition(TOPIC, 0)
        watcher = KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            while not stop.is_set() and self.proc.is_running():
                figures = scraped(self.url)
                if not figures:  # between two pages, or gone
                    stop.wait(self.every_s)
                    continue
                scored = int(figures.get("btcflow_monitor_rows_scored_total", 0))
                produced = watcher.end_offsets([tp])[tp]
                self.rows.append((time.monotonic() - self.started, produced, scored))
                try:
                    times = self.proc.cpu_times()
                    self.cpu_s = times.user + times.system
                except psutil.Error:
                    pass
                stop.wait(self.every_s)
        finally:
            watcher.close()


def start_monitor(env: dict[str, str], group: str, port: int, log: Path) -> subprocess.Popen:
    """Open-ended (stopped by SIGTERM once the samples saw every row scored, so /metrics shows the end)."""
    command = [BTCFLOW, "-v", "monitor", "--topic", TOPIC, "--group", group, "--from-beginning"]
    command += ["--idle-timeout", "120", "--metrics-port", str(port)]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def until_scored(samples: Samples, rows: int, proc: subprocess.Popen) -> None:
    """Wait until a sample saw every row scored (or the monitor died, or the deadline), then SIGTERM it:
    the stop flag ends the loop, which prints its summary."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.rows and samples.rows[-1][2] >= rows:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)


def wait_serving(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while not scraped(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the monitor did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def summary_line(log: Path) -> str:
    """The monitor's own summary line; the end of its log when there is none."""
    lines = log.read_text(errors="replace").splitlines()
    found = next((ln for ln in lines if ln.startswith("monitored ")), None)
    return found or "no summary; its log ends:\n" + "\n".join(lines[-15:])


def scored_all(samples: Samples, rows: int, log: Path) -> float:
    """When the samples first saw every row scored (seconds since the first send); exits if never."""
    done = next((t for t, _, scored in samples.rows if scored >= rows), None)
    if done is None:
        raise SystemExit(f"the monitor never scored the {rows:,} rows: {summary_line(log)}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=60_000, help="rows to stream (R)")
    parser.add_argument("--rate", type=float, default=1000.0, help="producer rate, rows/s (RATE)")
    parser.add_argument(
        "--store", help="an MLflow store whose three models have a Production version (skips fitting them)"
    )
    args = parser.parse_args()
    rows, rate = args.rows, args.rate
    with tempfile.TemporaryDirectory(prefix="btcflow-bench-monitor-") as name:
        tmp = Path(name)
        csv = tmp / "btc.csv"
        synth(rows, csv, seed=42)
        started = time.monotonic()
        uri = args.store or build_store(tmp)
        built = "given" if args.store else f"fitted in {time.monotonic() - started:.0f} s"
        print(f"store: 3 models x 2 versions (Production + 1 challenger), {built}")
        broker = EmbeddedBroker(
            tmp / "kafka", PipelineSettings().kafka_jars, port=free_port_pair(), heap="512m"
        )
        bootstrap = broker.start(timeout_s=120)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "BTCFLOW_KAFKA_BOOTSTRAP": bootstrap}
        env.pop("BTCFLOW_DATA_DIR", None)
        try:
            ensure_topic(bootstrap, TOPIC)
            live(tmp, env, bootstrap, csv, rows, rate)
            backlog(tmp, env, bootstrap, rows, rate)
        finally:
            broker.stop()


def live(tmp: Path, env: dict[str, str], bootstrap: str, csv: Path, rows: int, rate: float) -> None:
    """The monitor beside a paced producer: does it keep up?"""
    port, log = free_port(), tmp / "monitor-live.log"
    url = f"http://127.0.0.1:{port}/metrics"
    proc = start_monitor(env, "bench-live", port, log)
    stop = threading.Event()
    try:
        wait_serving(url, proc, log)
        samples = Samples(url, bootstrap, psutil.Process(proc.pid))
        sampler = threading.Thread(target=samples.run, args=(stop,), daemon=True)
        sampler.start()
        settings = PipelineSettings(kafka_bootstrap=bootstrap, topic=TOPIC)
        sent = produce(settings, csv, pacing=Pacing(rate=rate), progress=False)
        produced_at = time.monotonic() - samples.started
        until_scored(samples, rows, proc)
        stop.set()
        sampler.join(timeout=10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    done_at = scored_all(samples, rows, log)
    at_end = min(samples.rows, key=lambda s: abs(s[0] - produced_at))
    worst = max(produced - scored for t, produced, scored in samples.rows if t <= done_at)
    producer_rate = sent.sent / produced_at
    monitor_rate = rows / done_at
    print(f"producer: {sent.line()}; {producer_rate:,.0f} rows/s from the first send to the last ack")
    print(f"monitor:  {summary_line(log)}")
    print(
        f"live: {rows:,} rows scored in {done_at:.1f} s from the first send, {monitor_rate:,.0f} rows/s, "
        f"ratio to the producer {monitor_rate / producer_rate:.3f}; lag at the producer's last row "
        f"{at_end[1] - at_end[2]:,} rows, at worst {worst:,} rows (at most: sampled every 0.25 s); all "
        f"scored {max(done_at - produced_at, 0.0):.2f} s after the last row; monitor CPU "
        f"{samples.cpu_s:.1f} s ({samples.cpu_s / done_at:.0%} of one core)"
    )
    kept_up = monitor_rate / producer_rate >= 0.98 and done_at - produced_at < 2.0
    print(
        f"goal: the monitor keeps up with the producer at {rate:,.0f} rows/s: "
        f"{'met' if kept_up else 'not met'}"
    )


def backlog(tmp: Path, env: dict[str, str], bootstrap: str, rows: int, rate: float) -> None:
    """A new group reading the same rows already in the topic: the monitor's own ceiling."""
    port, log = free_port(), tmp / "monitor-backlog.log"
    url = f"http://127.0.0.1:{port}/metrics"
    proc = start_monitor(env, "bench-backlog", port, log)
    stop = threading.Event()
    try:
        wait_serving(url, proc, log)
        samples = Samples(url, bootstrap, psutil.Process(proc.pid), every_s=0.05)
        sampler = threading.Thread(target=samples.run, args=(stop,), daemon=True)
        sampler.start()
        until_scored(samples, rows, proc)
        stop.set()
        sampler.join(timeout=10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    last = scored_all(samples, rows, log)
    first_t, first_scored = next((t, s) for t, _, s in samples.rows if s > 0)
    speed = (rows - first_scored) / max(last - first_t, 1e-3)
    print(f"backlog:  {summary_line(log)}")
    print(
        f"backlog: {rows:,} rows already in the topic scored at {speed:,.0f} rows/s (between the first "
        f"and the last sample that saw rows scored, every 0.05 s), {speed / rate:.1f}x the {rate:,.0f} "
        "rows/s goal"
    )


if __name__ == "__main__":
    main()
