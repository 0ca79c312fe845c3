"""The batch store: batch files and their manifest, the source of truth for what was ingested.

Every write is atomic (written aside, flushed, renamed, directory synced): a reader, or a consumer
restarted after SIGKILL, sees a batch whole or not at all. A batch counts once the manifest lists it;
a file the manifest does not list is a leftover of a crash and is overwritten by the next write.
One writer per folder: a store holds an exclusive lock on `DIR/.lock` for its life.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import BadInput

COLUMNS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")
SCHEMA = pa.schema([(name, pa.float64()) for name in COLUMNS])
MANIFEST = "manifest.json"
LOCK = ".lock"
CHUNK_ROWS = 256 * 1024  # rows per parquet row group and per CSV slice
Format = Literal["parquet", "csv"]


@dataclass(frozen=True)
class BatchEntry:
    """One closed batch as the manifest records it; `offsets` maps partition → [first, last] offset."""

    batch: int
    file: str
    rows: int
    min_ts: float
    max_ts: float
    offsets: dict[str, list[int]]
    sha256: str
    closed_at: str


def read_manifest(directory: Path) -> list[BatchEntry]:
    path = directory / MANIFEST
    if not path.exists():
        return []
    return [BatchEntry(**entry) for entry in json.loads(path.read_text())["batches"]]


def resume_offsets(entries: list[BatchEntry]) -> dict[int, int]:
    """The next offset to read per partition: one past the last offset any closed batch holds."""
    resume: dict[int, int] = {}
    for entry in entries:
        for partition, (_, last) in entry.offsets.items():
            resume[int(partition)] = max(resume.get(int(partition), 0), last + 1)
    return resume


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(final)
    _fsync_dir(final.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_sorted(column: pa.ChunkedArray) -> bool:
    """Ascending, chunk boundaries included; vectorised so a sorted 2.33M-row batch is never copied."""
    previous = -np.inf
    for chunk in column.chunks:
        values = chunk.to_numpy(zero_copy_only=False)
        if len(values) == 0:
            continue
        if values[0] < previous or bool(np.any(values[1:] < values[:-1])):
            return False
        previous = values[-1]
    return True


def _lock(directory: Path) -> IO[bytes]:
    """The folder's writer lock, held by the open file returned (a file object: garbage collection
    closes it, and so releases the lock, even for a store nobody closed)."""
    f = (directory / LOCK).open("ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise BadInput(f"another consumer writes {directory}") from None
    return f


def _write_csv(table: pa.Table, path: Path) -> None:
    """pandas writes floats as the Kaggle file does (1325412060.0, so readers infer float64 again);
    slice by slice so the text of a 2.33M-row batch never sits in memory at once."""
    with path.open("w", newline="") as f:
        for start in range(0, table.num_rows, CHUNK_ROWS):
            part = table.slice(start, CHUNK_ROWS).to_pandas()
            part.to_csv(f, index=False, header=start == 0, lineterminator="\n")


class BatchStore:
    """Appends batches to a directory and keeps its manifest; one writer at a time.

    Two writers would both number their next batch n and overwrite each other's file and manifest,
    so the store takes an exclusive, non-blocking flock on `DIR/.lock` and keeps it until `close()`
    (or the end of a `with` block; the kernel drops it if the process dies, so a crash never leaves
    a stale lock).
    """

    def __init__(self, directory: Path, fmt: Format = "parquet") -> None:
        self.directory = directory
        self.fmt = fmt
        directory.mkdir(parents=True, exist_ok=True)
        self._lock: IO[bytes] | None = _lock(directory)
        self.entries = read_manifest(directory)

    def close(self) -> None:
        """Let another writer in (idempotent)."""
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def next_batch(self) -> int:
        return len(self.entries) + 1

    def resume_offsets(self) -> dict[int, int]:
        return resume_offsets(self.entries)

    def write_batch(self, table: pa.Table, offsets: dict[int, tuple[int, int]]) -> BatchEntry:
        """Write one batch (sorted by Timestamp) and record it; returns its manifest entry.

        `offsets` are the first and last Kafka offsets per partition that the batch's rows came from.
        Once this returns, the rows are durable and listed: only then may the caller commit offsets.
        """
        if self._lock is None:
            raise ValueError("the store is closed")
        if table.num_rows == 0:
            raise ValueError("a batch holds at least one row")
        table = table.select(list(COLUMNS)).cast(SCHEMA)
        if not _is_sorted(table.column("Timestamp")):  # one partition in file order already is
            table = table.take(pc.sort_indices(table, [("Timestamp", "ascending")]))
        number = self.next_batch
        final = self.directory / f"batch_{number}.{self.fmt}"
        tmp = final.with_name(final.name + ".tmp")
        if self.fmt == "parquet":
            # no dictionary pages: prices are nearly unique floats, and building them copies the batch
            pq.write_table(table, tmp, compression="zstd", row_group_size=CHUNK_ROWS, use_dictionary=False)
        else:
            _write_csv(table, tmp)
        _replace_durably(tmp, final)
        ts = table.column("Timestamp")
        entry = BatchEntry(
            batch=number,
            file=final.name,
            rows=table.num_rows,
            min_ts=pc.min(ts).as_py(),
            max_ts=pc.max(ts).as_py(),
            offsets={str(p): [first, last] for p, (first, last) in sorted(offsets.items())},
            sha256=_sha256(final),
            closed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._save_manifest([*self.entries, entry])
        self.entries.append(entry)
        return entry

    def _save_manifest(self, entries: list[BatchEntry]) -> None:
        final = self.directory / MANIFEST
        tmp = final.with_name(final.name + ".tmp")
        tmp.write_text(json.dumps({"batches": [asdict(e) for e in entries]}, indent=2) + "\n")
        _replace_durably(tmp, final)
