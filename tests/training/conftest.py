"""Training fixtures: one local[1] SparkSession per session, batches written by the real batch store,
a fresh MLflow SQLite store per test (or per module where a test only reads a trained store), and the
`btcflow` command run in process."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.store import BatchStore
from training.settings import TrainingSettings

START = 1325412060.0


def minute_table(rows: int, *, seed: int = 0, drift: float = 0.0, walk: float = 0.5) -> pa.Table:
    """Kaggle-shaped minutes: a random walk (plus `drift` per minute) with High/Low around Open/Close."""
    rng = np.random.default_rng(seed)
    ts = START + 60.0 * np.arange(rows)
    close = 100.0 + drift * np.arange(rows) + np.cumsum(rng.normal(0, walk, rows))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) + rng.exponential(0.2, rows)
    low = np.minimum(open_, close) - rng.exponential(0.2, rows)
    volume = rng.exponential(5.0, rows) + np.abs(close - open_) * 3
    return pa.table(
        {"Timestamp": ts, "Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}
    )


def write_batches(directory: Path, table: pa.Table, sizes: list[int], fmt: str = "parquet") -> BatchStore:
    """Cut `table` into consecutive batches through the real BatchStore (manifest, sha256, offsets)."""
    store = BatchStore(directory, fmt)  # type: ignore[arg-type]
    offset = 0
    for size in sizes:
        store.write_batch(table.slice(offset, size), {0: (offset, offset + size - 1)})
        offset += size
    return store


def training_settings(root: Path) -> TrainingSettings:
    return TrainingSettings(
        data_dir=root / "data",
        tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db",
        spark_master="local[1]",
        spark_partitions=2,
        spark_driver_memory="1g",
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One real local Spark (one core) for the whole session: start-up is the expensive part."""
    from training.data import spark_session

    session = spark_session("local[1]", "1g", partitions=2)
    yield session
    session.stop()


@pytest.fixture
def store_settings(tmp_path: Path) -> TrainingSettings:
    """Settings on a temporary data dir and a temporary MLflow store (SQLite, artifacts beside it)."""
    return training_settings(tmp_path)


@contextmanager
def logging_kept() -> Iterator[None]:
    """Put back every logger's level and the root's handlers: main() sets them for the process
    (basicConfig, mlflow and kafka at WARNING and above), which would last the whole test session."""
    manager = logging.Logger.manager
    levels = {name: lg.level for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    try:
        yield
    finally:
        for name, lg in list(manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))
        logging.root.setLevel(root_level)
        for handler in [h for h in logging.root.handlers if h not in root_handlers]:
            logging.root.removeHandler(handler)


@pytest.fixture
def btcflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator:
    """The command's entry point in process (fast): returns its exit status, stdout and stderr."""
    from btcflow.cli.main import main

    def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["btcflow", *args])
        with pytest.raises(SystemExit) as done:
            main()
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(args, done.value.code, printed.out, printed.err)

    with logging_kept():
        yield run
