"""`btcflow demo` as a user runs it: from nothing to answered predictions, on its own broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from services.kafka.launcher import free_port_pair

# Lines of the JVM, Spark, MLflow, alembic, uvicorn and Kafka that the default level keeps off the terminal
FOREIGN = re.compile(
    r"Using incubator modules|netlib|JNI_OnLoad|log4j|setLogLevel|NativeCodeLoader"
    r"|^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARN|ERROR) "  # Spark's own console layout
    r"|^\[Stage \d+|Successfully registered model|Created version '|Creating a new version"
    r"|View run|View experiment|alembic|Context impl|Running upgrade|Uvicorn running|Started server process"
    r"|Application startup|Waiting for application|HTTP Request:|INFO (mlflow|kafka|py4j|uvicorn|httpx)",
    re.MULTILINE,
)
# what btcflow itself may write to stderr: its error line, or a record of its own packages' loggers
OWN_STDERR = re.compile(
    r"btcflow: |\S+ \S+ (WARNING|ERROR|CRITICAL) (btcflow|pipeline|training|serving|monitoring)\b"
)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        "BTCFLOW_BROKER_PORT": str(free_port_pair()),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "BTCFLOW_SPARK_MASTER": "local[1]",
        "COLUMNS": "200",  # rich wraps at 80 columns off a terminal
    }
    env.pop("BTCFLOW_KAFKA_BOOTSTRAP", None)
    env.pop("BTCFLOW_LOG_LEVEL", None)  # the default level, whatever the shell running the tests says
    cli = [sys.executable, "-m", "btcflow.cli"]
    try:
        done = subprocess.run(
            [*cli, "demo", "--rows", "6000"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        subprocess.run([*cli, "broker", "stop"], env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "sent 6,000 rows, rejected 0" in out
    assert "consumed 6,000 rows into 4 batches" in out
    for answer in ("predicted_close", "predicted_high", "predicted_low", "predicted_trend", "Production"):
        assert answer in out
    assert "gateway stopped" in out
    # the gate says how each best version did against its naive baseline on the unseen rows
    assert all(f"{name} v" in out for name in ("btc-close", "btc-high-low", "btc-trend"))
    assert len(re.findall(r"\(baseline [0-9.e+-]+: (beats|does not beat) it\)", out)) == 3, out[-3000:]
    # a coherent candle: High >= Open >= Low
    open_ = float(re.search(r"predict/high_low\?open=([0-9.e+-]+)&", out).group(1))
    high = float(re.search(r"'predicted_high': ([0-9.e+-]+)", out).group(1))
    low = float(re.search(r"'predicted_low': ([0-9.e+-]+)", out).group(1))
    assert high >= open_ >= low
    # the short live-scoring run: every minute of the held-out tail scored
    assert re.search(r"monitored [0-9,]+ minutes \([0-9,]+ rows read, 0 bad messages\)", out), out[-3000:]
    steps = re.search(r"step times: (.*)", out)  # the last lines say where the time went, step by step
    names = ("generate", "broker", "ingest", "train", "promote", "gateway", "monitor")
    assert steps and all(f"{name} " in steps.group(1) for name in names), out[-1000:]
    assert re.search(r"\bfit_s\b", out)  # the versions table shows each fit's seconds
    # quiet: only btcflow's own lines, the JVM's output in the log file the demo names
    foreign = [m.group(0) for m in FOREIGN.finditer(out + done.stderr)]
    assert not foreign, foreign
    strays = [line for line in done.stderr.splitlines() if not OWN_STDERR.match(line)]
    assert not strays, strays
    jvm_log = re.search(r"Spark's own output \(the JVM's warnings\):\s+(\S+)", out)
    assert jvm_log and Path(jvm_log.group(1)).parent == (tmp_path / "data" / "logs").resolve(), out[-3000:]
    assert Path(jvm_log.group(1)).is_file()
