"""The batch store: batch files and their manifest (format: `core.dataset`), written by any number of
consumer-group members at once.

A batch is committed in three steps. Its file is written under a unique hidden name, outside any lock
(seconds for a big batch, so members write in parallel). Then, under a short exclusive lock on
`DIR/.lock`, the store reads the manifest as it is now, checks that the batch continues every one of
its partitions exactly where the manifest leaves it (so a member that lost its partitions to another
can never write the same offsets twice), takes the next number, renames the file to `batch_<n>`,
appends the batch's rejected messages and replaces the manifest (written aside, renamed). A crash at
any moment leaves the manifest either with the batch or without it; an unlisted file is a leftover.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.dataset import (
    COLUMNS,
    MANIFEST,
    BatchEntry,
    ManifestError,
    batch_file,
    manifest_text,
    read_manifest,
    resume_offsets,
    sha256_of,
)
from core.errors import BadInput, BtcflowError
from pipeline.errors import StorageFull

SCHEMA = pa.schema([(name, pa.float64()) for name in COLUMNS])
LOCK = ".lock"
REJECTED = "rejected.jsonl"
CHUNK_ROWS = 256 * 1024  # rows per parquet row group and per CSV slice
Format = Literal["parquet", "csv"]


class StaleBatch(BtcflowError):
    """The batch does not continue the dataset: another member already wrote (some of) its offsets."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


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


def _write_csv(table: pa.Table, path: Path) -> None:
    """pandas writes floats as the Kaggle file does (1325412060.0, so readers infer float64 again);
    slice by slice so the text of a 2.33M-row batch never sits in memory at once."""
    with path.open("w", newline="") as f:
        for start in range(0, table.num_rows, CHUNK_ROWS):
            part = table.slice(start, CHUNK_ROWS).to_pandas()
            part.to_csv(f, index=False, header=start == 0, lineterminator="\n")


def _write_table(table: pa.Table, path: Path, fmt: Format) -> None:
    if fmt == "parquet":
        # no dictionary pages: prices are nearly unique floats, and building them copies the batch
        pq.write_table(table, path, compression="zstd", row_group_size=CHUNK_ROWS, use_dictionary=False)
    else:
        _write_csv(table, path)
    _fsync(path)


def _claim(path: Path) -> IO[bytes]:
    """Create `path` and hold an exclusive flock on it while it is written: a store that finds a hidden
    temporary file it can lock knows its writer is dead and removes it."""
    f = path.open("xb")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


class BatchStore:
    """Commits batches to a directory shared by any number of writers (processes of one consumer group)."""

    def __init__(self, directory: Path, fmt: Format = "parquet") -> None:
        self.directory = directory
        self.fmt = fmt
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the batch folder {directory}: {exc.strerror}") from None
        self._remove_dead_leftovers()

    @property
    def entries(self) -> list[BatchEntry]:
        """The manifest as it is on disk now (other members append to it)."""
        try:
            return read_manifest(self.directory)
        except ManifestError as exc:
            raise BadInput(str(exc)) from None

    def rejected_count(self) -> int:
        """Messages kept in `rejected.jsonl` (lines of unlisted batches included until the next commit)."""
        try:
            with (self.directory / REJECTED).open("rb") as f:
                return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def write_batch(
        self,
        table: pa.Table,
        offsets: dict[int, tuple[int, int]],
        rejected: Sequence[dict[str, object]] = (),
        topic_id: str | None = None,
    ) -> BatchEntry:
        """Commit one batch (sorted by Timestamp here) with the messages among its offsets that were
        rejected; returns its manifest entry. Once this returns, the rows are durable and listed: only
        then may the caller commit offsets. StaleBatch when another writer got to these offsets first;
        StorageFull (nothing left behind, the dataset as it was) when the disk is full."""
        if table.num_rows == 0:
            raise ValueError("a batch holds at least one row")
        table = table.select(list(COLUMNS)).cast(SCHEMA)
        if not _is_sorted(table.column("Timestamp")):  # one partition in file order already is
            table = table.take(pc.sort_indices(table, [("Timestamp", "ascending")]))
        tmp = self.directory / f".incoming-{uuid.uuid4().hex}.{self.fmt}.tmp"
        final: Path | None = None
        try:
            with _claim(tmp):
                _write_table(table, tmp, self.fmt)
                digest = sha256_of(tmp)
                with self._locked():
                    entries = self.entries
                    self._check_continues(entries, offsets, topic_id)
                    number = len(entries) + 1
                    final = self.directory / batch_file(number, self.fmt)
                    tmp.replace(final)
                    _fsync_dir(self.directory)
                    self._append_rejected(number, rejected)
                    ts = table.column("Timestamp")
                    entry = BatchEntry(
                        batch=number,
                        file=final.name,
                        rows=table.num_rows,
                        min_ts=pc.min(ts).as_py(),
                        max_ts=pc.max(ts).as_py(),
                        offsets={str(p): [first, last] for p, (first, last) in sorted(offsets.items())},
                        sha256=digest,
                        closed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        topic_id=topic_id,
                    )
                    self._replace_manifest([*entries, entry])
                    final = None  # listed: no longer ours to clean up
            return entry
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(self.directory).free
            raise StorageFull(
                f"no space left in {self.directory.resolve()} ({free / 2**20:,.1f} MiB free): batch not "
                "written, the dataset is as it was; free some space and rerun to read its rows again"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
            if final is not None:
                final.unlink(missing_ok=True)

    @staticmethod
    def _check_continues(
        entries: list[BatchEntry], offsets: dict[int, tuple[int, int]], topic_id: str | None
    ) -> None:
        """Every partition of the batch must start at or after where the dataset leaves it: the
        member that wrote there first wins, a late one (its partitions moved on) drops its batch."""
        resume = resume_offsets(entries, topic_id)
        for partition, (first, _) in offsets.items():
            if partition in resume and first < resume[partition]:
                raise StaleBatch(
                    f"partition {partition}: offsets from {first} are in the dataset already "
                    f"(it continues at {resume[partition]})"
                )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The commit lock: held for a rename and two small writes, released by the kernel if the
        holder dies (a crash never leaves a stale lock)."""
        with (self.directory / LOCK).open("ab") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def _replace_manifest(self, entries: list[BatchEntry]) -> None:
        final = self.directory / MANIFEST
        tmp = final.with_name(final.name + ".tmp")
        try:
            tmp.write_text(manifest_text(entries))
            _fsync(tmp)
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def _append_rejected(self, number: int, rejected: Sequence[dict[str, object]]) -> None:
        """`DIR/rejected.jsonl`: one line per message that was not a row, tagged with its batch.

        Lines of a batch the manifest never listed (its writer died before the manifest) sit at the
        end of the file, since every commit runs this under the lock: they are cut off first.
        """
        path = self.directory / REJECTED
        _trim_unlisted(path, number - 1)
        if not rejected:
            return
        with path.open("ab") as f:
            f.write(b"".join(orjson.dumps({"batch": number, **r}) + b"\n" for r in rejected))
            f.flush()
            os.fsync(f.fileno())

    def _remove_dead_leftovers(self) -> None:
        """Temporary files whose writer died: a batch file nobody holds the lock of, and the manifest's
        or the rejects' replacement (they exist only inside a commit, so under the lock they are dead)."""
        with self._locked():
            for name in (MANIFEST, REJECTED):
                (self.directory / f"{name}.tmp").unlink(missing_ok=True)
        for tmp in self.directory.glob(".incoming-*.tmp"):
            with contextlib.suppress(OSError), tmp.open("rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer's
                tmp.unlink(missing_ok=True)


def _trim_unlisted(path: Path, listed: int) -> None:
    """Cut the lines of batches above `listed` (and a line torn by a crash) off the end of `path`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    if tail.endswith(b"\n") and _batch_of(tail.splitlines()[-1]) <= listed:
        return  # the usual case: nothing to cut, and the file was not read whole
    lines = path.read_bytes().splitlines(keepends=True)
    keep = [line for line in lines if line.endswith(b"\n") and _batch_of(line) <= listed]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(keep))
    _fsync(tmp)
    tmp.replace(path)


def _batch_of(line: bytes) -> int:
    try:
        return int(orjson.loads(line)["batch"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 1 << 62  # torn or foreign: never listed
