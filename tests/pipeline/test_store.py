"""The batch store shared by many writers: numbers claimed in commit order without gaps, a batch that
does not continue the dataset refused, crash leftovers cleaned, a full disk an expected failure."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.dataset import BatchEntry, CommitRecord, ManifestError, manifest_text, resume_offsets
from pipeline.errors import StorageFull
from pipeline.settings import PipelineSettings
from pipeline.store import COLUMNS, LEFTOVER_AGE_S, BatchStore, StaleBatch, encode, read_manifest
from tests.pipeline.ingest import consume_cli, make_rows, read_batches, send

REPO = Path(__file__).resolve().parents[2]


def rows(first: int, n: int) -> pa.Table:
    ts = 1325412060.0 + 60.0 * np.arange(first, first + n)
    return pa.table({name: ts if name == "Timestamp" else np.full(n, 1.5) for name in COLUMNS})


def test_batches_are_numbered_in_commit_order_and_a_late_one_is_refused(tmp_path: Path) -> None:
    first, second = BatchStore(tmp_path), BatchStore(tmp_path)  # two members, no lock held between commits
    assert first.write_batch(rows(0, 10), {0: (0, 9)}).batch == 1
    assert second.write_batch(rows(10, 10), {1: (0, 9)}).batch == 2
    assert first.write_batch(rows(20, 10), {0: (10, 19)}).batch == 3
    # a member that lost partition 0 and still holds offsets 10-25 of it: another member wrote 10-19
    with pytest.raises(StaleBatch, match="partition 0: offsets from 10"):
        second.write_batch(rows(20, 16), {0: (10, 25)})
    assert [e.batch for e in read_manifest(tmp_path)] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "_commits",
        "batch_1.parquet",
        "batch_2.parquet",
        "batch_3.parquet",
        "manifest.json",
    ]
    assert sorted(p.name for p in (tmp_path / "_commits").iterdir()) == ["1.json", "2.json", "3.json"]
    assert resume_offsets(read_manifest(tmp_path)) == {0: 20, 1: 10}
    view = json.loads((tmp_path / "manifest.json").read_text())["batches"]  # the merged view, contract keys
    assert [b["batch"] for b in view] == [1, 2, 3] and {"sha256", "offsets", "crc32c"} <= set(view[0])


def _writer(directory: str, partition: int, batches: int, size: int) -> None:
    store = BatchStore(Path(directory))
    for k in range(batches):
        first = k * size
        store.write_batch(rows(partition * 100_000 + first, size), {partition: (first, first + size - 1)})


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, 8, 500 + p)) for p in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    entries = read_manifest(tmp_path)
    assert [e.batch for e in entries] == list(range(1, 33))  # 1..32, no gap, no number twice
    per_partition: dict[str, list[list[int]]] = {}
    for entry in entries:
        table = pq.read_table(tmp_path / entry.file)
        assert table.num_rows == entry.rows
        ((partition, span),) = entry.offsets.items()
        assert entry.rows == span[1] - span[0] + 1
        assert table.column("Timestamp")[0].as_py() == entry.min_ts
        per_partition.setdefault(partition, []).append(span)
    for p, spans in per_partition.items():  # each writer's batches in its own order, contiguous
        size = 500 + int(p)
        assert spans == [[k * size, k * size + size - 1] for k in range(8)]


def test_a_dead_writers_leftover_goes_a_live_ones_stays_and_a_claimed_batch_is_published(
    tmp_path: Path,
) -> None:
    store = BatchStore(tmp_path)
    store.write_batch(rows(0, 10), {0: (0, 9)})
    dead = tmp_path / ".incoming-dead.parquet"
    dead.write_bytes(b"half a batch")
    old = time.time() - LEFTOVER_AGE_S - 60
    os.utime(dead, (old, old))
    live = tmp_path / ".incoming-live.parquet"  # a member staging now
    live.write_bytes(b"a batch being written")
    # a member that died between its claim and its rename: the record names its staged file
    orphan = BatchStore(tmp_path)
    staged = ".incoming-claimed.parquet"
    (tmp_path / staged).write_bytes(encode(rows(10, 5), "parquet"))
    entry = store.entries[0]
    claimed = CommitRecord(
        replace(entry, batch=2, file="batch_2.parquet", offsets={"0": [10, 14]}, rows=5, sha256="x"), staged
    )
    (tmp_path / "_commits" / "2.json").write_bytes(claimed.text())
    assert [e.batch for e in read_manifest(tmp_path)] == [1]  # claimed, not yet listed: no file
    os.utime(tmp_path / staged, (old, old))
    BatchStore(tmp_path)  # the next member to open the store publishes it, and removes only the dead file
    assert not dead.exists() and live.exists() and not (tmp_path / staged).exists()
    assert [e.batch for e in read_manifest(tmp_path)] == [1, 2]
    assert orphan.write_batch(rows(15, 5), {0: (15, 19)}).batch == 3


def test_rejected_messages_are_kept_with_their_batch(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    store.write_batch(rows(0, 5), {0: (0, 6)}, [{"partition": 0, "offset": 5, "reason": "x"}])
    store.write_batch(rows(5, 5), {0: (7, 11)})
    store.write_batch(rows(10, 5), {0: (12, 17)}, [{"partition": 0, "offset": 16, "reason": "y"}])
    kept = store.rejected_messages()
    assert [(r["batch"], r["offset"], r["reason"]) for r in kept] == [(1, 5, "x"), (3, 16, "y")]
    assert store.rejected_count() == 2
    assert [e.rejected for e in read_manifest(tmp_path)] == [1, 0, 1]


def test_one_rule_for_manifest_keys(tmp_path: Path) -> None:
    entry = BatchEntry(1, "batch_1.parquet", 3, 1.0, 3.0, {"0": [0, 2]}, "ab", "t", topic_id="id-a")
    record = json.loads(manifest_text([entry]))
    record["batches"][0]["written_by"] = "a newer version"  # unknown keys are ignored
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    assert read_manifest(tmp_path) == [entry]
    del record["batches"][0]["sha256"]  # a missing contract key is not
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ManifestError, match="sha256"):
        read_manifest(tmp_path)
    # batches from a topic of the same name that was deleted since do not say where the new one resumes
    old = BatchEntry(1, "batch_1.parquet", 3, 1.0, 3.0, {"0": [0, 99]}, "ab", topic_id="id-a")
    new = BatchEntry(2, "batch_2.parquet", 3, 4.0, 6.0, {"0": [0, 9]}, "cd", topic_id="id-b")
    assert resume_offsets([old]) == {0: 100}
    assert resume_offsets([old, new], "id-b") == {0: 10}
    assert resume_offsets([old], "id-b") == {}


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 2 MiB tmpfs, where this machine lets the test mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0 or not shutil.disk_usage(mount).total <= 4 << 20:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or 'not permitted'}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_with_one_line_and_leaves_the_dataset_intact(small_disk: Path) -> None:
    store = BatchStore(small_disk, "csv")
    store.write_batch(rows(0, 1000), {0: (0, 999)})
    before = (small_disk / "manifest.json").read_bytes()
    with pytest.raises(StorageFull) as caught:
        store.write_batch(rows(1000, 200_000), {0: (1000, 200_999)})  # ~14 MB of CSV
    message = str(caught.value)
    assert caught.value.exit_code == 3 and "\n" not in message
    assert str(small_disk) in message and "MiB free" in message
    assert (small_disk / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["_commits", "batch_1.csv", "manifest.json"]
    assert os.path.getsize(small_disk / "batch_1.csv") > 0


def test_consume_onto_a_full_disk_exits_3_with_one_line(settings: PipelineSettings, small_disk: Path) -> None:
    send(settings.bootstrap, settings.topic, make_rows(60_000))  # ~4 MB as CSV: more than the disk holds
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": settings.bootstrap, "BTCFLOW_TOPIC": settings.topic}
    args = ["--out", str(small_disk), "--batch-rows", "20000", "--format", "csv", "--idle-timeout", "8"]
    done = subprocess.run(consume_cli(*args), env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 3
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"btcflow: error: no space left in {small_disk}") and "MiB free" in line
    entries, _ = read_batches(small_disk)  # what was listed is whole, and no temporary file is left
    assert 0 < len(entries) < 3
    assert sorted(p.name for p in small_disk.iterdir() if p.name.startswith(".incoming")) == []
