"""Helpers the ingest tests share: rows in the contract's message format, sent to a real broker, and the
checks that every batch file and the manifest must pass."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kafka import KafkaProducer

from core.storage import Storage, as_storage
from pipeline.broker import ensure_topic
from pipeline.store import COLUMNS, read_manifest

BTCFLOW = [sys.executable, "-m", "btcflow.cli"]


def make_rows(n: int, start: int = 0) -> np.ndarray:
    """Kaggle-like rows with distinct timestamps and prices that are not round in binary."""
    rng = np.random.default_rng(start)
    ts = 1325412060.0 + 60.0 * np.arange(start, start + n)
    open_ = np.round(4.0 + rng.random(n) * 1000, 2)
    close = np.round(open_ * (1 + rng.normal(0, 0.01, n)), 2)
    high = np.maximum(open_, close) + 0.01
    low = np.minimum(open_, close) - 0.01
    volume = np.round(rng.exponential(3.0, n), 8)
    return np.column_stack([ts, open_, high, low, close, volume])


def send(
    bootstrap: str,
    topic: str,
    rows: np.ndarray,
    partitions: int = 1,
    extra: Sequence[bytes | None] = (),
) -> None:
    """Put rows on the topic in the contract's message format (key: Timestamp text, value: JSON),
    spread round-robin over `partitions`; `extra` values go to partition 0 after the rows."""
    ensure_topic(bootstrap, topic, partitions)  # the broker creates no topic by itself
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=512 * 1024, acks="all")
    try:
        for i, row in enumerate(rows.tolist()):
            value = orjson.dumps(dict(zip(COLUMNS, row, strict=True)))
            producer.send(topic, key=repr(row[0]).encode(), value=value, partition=i % partitions)
        for bad in extra:
            producer.send(topic, key=b"bad", value=bad, partition=0)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def read_batches(out: Path | Storage, temporaries_ok: bool = False) -> tuple[list, np.ndarray]:
    """The manifest entries and all rows of all batch files, checking what must hold for any batch
    (on the local disk or any other store). `temporaries_ok`: a store that failed mid-commit may keep a
    hidden temporary its writer could not remove (the leftover sweep takes it after an hour)."""
    storage = as_storage(out)
    entries = read_manifest(storage)
    frames = []
    for number, entry in enumerate(entries, start=1):
        data = storage.read(entry.file)
        assert entry.batch == number and entry.file.startswith(f"batch_{number}.")
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        frame = (
            pq.read_table(pa.BufferReader(data)).to_pandas()
            if entry.file.endswith(".parquet")
            else pd.read_csv(io.BytesIO(data), float_precision="round_trip")
        )
        assert list(frame.columns) == list(COLUMNS)
        assert all(str(t) == "float64" for t in frame.dtypes)
        assert len(frame) == entry.rows
        assert frame["Timestamp"].is_monotonic_increasing
        assert (frame["Timestamp"].min(), frame["Timestamp"].max()) == (entry.min_ts, entry.max_ts)
        frames.append(frame.to_numpy())
    assert temporaries_ok or not [f.name for f in storage.listing() if f.name.endswith(".tmp")]
    return entries, np.concatenate(frames) if frames else np.empty((0, len(COLUMNS)))


def assert_contiguous(entries: list) -> None:
    """Per partition, each batch starts right after the previous one ended, from offset 0."""
    nxt: dict[str, int] = {}
    for entry in entries:
        for partition, (first, last) in entry.offsets.items():
            assert first == nxt.get(partition, 0), (entry.batch, partition, first)
            assert last >= first
            nxt[partition] = last + 1


def assert_exactly(rows: np.ndarray, got: np.ndarray) -> None:
    expected = rows[np.argsort(rows[:, 0], kind="stable")]
    got = got[np.argsort(got[:, 0], kind="stable")]
    assert len(np.unique(got[:, 0])) == len(got), "a row landed twice"
    np.testing.assert_array_equal(got, expected)


def wait_for_batches(out: Path | Storage, count: int, timeout_s: float = 90) -> int:
    """Poll the dataset until it lists `count` batches (or the time is up); returns how many it lists."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = len(read_manifest(out))
        if listed >= count or time.monotonic() > deadline:
            return listed
        time.sleep(0.1)


def consume_cli(*args: str) -> list[str]:
    return [*BTCFLOW, "consume", *args]


def start_live(env: dict[str, str], args: list[str]) -> subprocess.Popen[str]:
    """`btcflow -v consume ...` as a subprocess, returned once its loop runs (it has its partitions):
    signals sent earlier would only hit Python's start-up, under load several seconds long."""
    proc = subprocess.Popen(
        [*BTCFLOW, "-v", "consume", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "pipeline: assigned [" in line:
            break
    return proc
