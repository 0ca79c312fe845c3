"""The batch store: batch files and their manifest (format: `core.dataset`), written by any number of
consumer-group members at once, on the local disk or on HDFS (`core.storage`), without a lock.

A commit log, as Delta Lake and Iceberg keep: batch n is committed when its record `_commits/<n>.json`
is created, and a store creates a file only if its name is free, so of two members claiming n exactly
one wins. A commit goes:

1. **stage**: the batch's bytes go to a hidden name only this member knows (`.incoming-<uuid>.<fmt>`).
   Seconds for a big batch, so members stage in parallel.
2. **claim**: read where the dataset stands (the manifest view, then the records after it), check the
   batch continues each of its partitions there, and create record n = next. Taken: read again, retry.
   The record holds the batch's manifest entry, its staged name and its rejected messages: from now on
   the batch is in the dataset, whatever happens to this member.
3. **publish**: rename the staged file to `batch_<n>` (a rename that never replaces). Any member that
   finds a record whose file is not in place yet does this for it (roll forward) before it claims.
4. **view**: rewrite `manifest.json`, the merged view readers use, when it lags.

Clean-up happens only before a claim (a member removes its own staged file) or, for a member that died
before claiming, once its staged file is older than `LEFTOVER_AGE_S`. A failure at any step leaves the
batch either claimed (listed once its file is in place, which the next commit or the owner's retry
does) or nowhere. The claim reads the view once and probes one record: its cost does not grow with the
number of batches; the view's rewrite does (a few bytes per batch), off the claim.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import itertools
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.dataset import (
    COLUMNS,
    MANIFEST,
    BatchEntry,
    CommitRecord,
    ManifestError,
    batch_file,
    committed,
    manifest_text,
    record_name,
    resume_offsets,
)
from core.dataset import read_manifest as read_manifest  # the listed batches, for the demo, benches, tests
from core.errors import BadInput, BtcflowError
from core.storage import LocalStorage, Storage, as_storage
from pipeline.errors import StorageFull, StoreUnavailable

log = logging.getLogger("pipeline")

SCHEMA = pa.schema([(name, pa.float64()) for name in COLUMNS])
CHUNK_ROWS = 256 * 1024  # rows per parquet row group and per CSV slice
STAGED_PREFIX = ".incoming-"
LEFTOVER_AGE_S = 3600.0  # a staged file this old has no live writer (a commit takes seconds)
WRITE_RETRY_S = 60.0  # how long a failing write of a batch or its record is tried again (see _retrying)
Format = Literal["parquet", "csv"]
T = TypeVar("T")


class StaleBatch(BtcflowError):
    """The batch does not continue the dataset: another member already wrote (some of) its offsets."""


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


def encode(table: pa.Table, fmt: Format) -> bytes:
    """The batch file's bytes. Parquet without dictionary pages: prices are nearly unique floats, and
    building them copies the batch. CSV as the Kaggle file writes floats (1325412060.0, so readers infer
    float64 again), slice by slice."""
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink, compression="zstd", row_group_size=CHUNK_ROWS, use_dictionary=False)
    else:
        for start in range(0, table.num_rows, CHUNK_ROWS):
            part = table.slice(start, CHUNK_ROWS).to_pandas()
            sink.write(part.to_csv(index=False, header=start == 0, lineterminator="\n").encode())
    return sink.getvalue()


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _retrying(where: str, what: str, write: Callable[[], T]) -> T:
    """`write()`, tried again while it fails, for WRITE_RETRY_S: a DataNode killed mid-write is still
    given out by the NameNode until it misses its heartbeats (~15 s), and a write whose block it held can
    fail only when the NameNode gives up completing the file (~15 s more). A full store is not tried
    again, nor a name another writer took (FileExistsError)."""
    deadline = time.monotonic() + WRITE_RETRY_S
    for attempt in itertools.count(1):
        try:
            return write()
        except FileExistsError:
            raise
        except OSError as exc:
            if _is_full(exc) or time.monotonic() + attempt > deadline:
                raise
            log.warning("writing %s to %s failed (%s); trying again", what, where, _one_line(exc))
            time.sleep(attempt)
    raise AssertionError("unreachable")


class BatchStore:
    """Commits batches to a folder shared by any number of writers (processes of one consumer group)."""

    def __init__(self, where: Storage | Path | str, fmt: Format = "parquet") -> None:
        self.storage = as_storage(where)
        self.fmt = fmt
        self._known: list[CommitRecord] = []
        try:
            self.storage.make_folder("_commits")
        except OSError as exc:
            raise BadInput(f"cannot create the batch folder {self.storage.uri}: {exc}") from None
        self._remove_dead_leftovers()

    @property
    def where(self) -> str:
        return self.storage.uri

    @property
    def entries(self) -> list[BatchEntry]:
        """Every claimed batch as it is now (other members append to it), rolled forward."""
        return [r.entry for r in self._records()]

    def _records(self) -> list[CommitRecord]:
        """The log as far as it goes now: what this store read before, plus the records after it, each
        published (records never change once created, so what was read stays true)."""
        try:
            records = committed(self.storage, known=self._known)
        except ManifestError as exc:
            raise BadInput(str(exc)) from None
        for k, record in enumerate(records):
            if record.staged:
                self._publish(record)
                records[k] = replace(record, staged=None)
        self._known = records
        return list(records)

    def rejected_count(self) -> int:
        """Messages kept with the claimed batches (`rejected` of each manifest entry)."""
        return sum(e.rejected for e in self.entries)

    def rejected_messages(self) -> list[dict[str, object]]:
        """Every rejected message, tagged with its batch, in batch order (read from the commit log)."""
        out: list[dict[str, object]] = []
        for entry in self.entries:
            if entry.rejected:
                record = CommitRecord.parse(self.storage.read(record_name(entry.batch)))
                out.extend({"batch": entry.batch, **r} for r in record.rejected)
        return out

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
        StorageFull (the dataset as it was) when the store is full."""
        if table.num_rows == 0:
            raise ValueError("a batch holds at least one row")
        table = table.select(list(COLUMNS)).cast(SCHEMA)
        if not _is_sorted(table.column("Timestamp")):  # one partition in file order already is
            table = table.take(pc.sort_indices(table, [("Timestamp", "ascending")]))
        data = encode(table, self.fmt)
        staged = ""
        ts = table.column("Timestamp")
        entry = BatchEntry(
            batch=0,
            file="",
            rows=table.num_rows,
            min_ts=pc.min(ts).as_py(),
            max_ts=pc.max(ts).as_py(),
            offsets={str(p): [first, last] for p, (first, last) in sorted(offsets.items())},
            sha256=hashlib.sha256(data).hexdigest(),
            topic_id=topic_id,
            crc32c=f"{crc32c.crc32c(data):08x}",
            rejected=len(rejected),
        )
        claimed: CommitRecord | None = None
        try:
            staged = self._stage(data)  # 1. stage
            claimed = self._claim(entry, staged, rejected, offsets, topic_id)  # 2. claim
            self._publish(claimed)  # 3. publish
        except OSError as exc:
            if claimed is None:
                self._drop_unclaimed(staged)
            if _is_full(exc):
                raise StorageFull(
                    f"no space left in {self.storage.uri}{self._free()}: batch not listed, the dataset is "
                    "as it was; free some space and rerun to read its rows again"
                ) from None
            state = "claimed, its file not yet in place" if claimed else "not listed"
            raise StoreUnavailable(
                f"the dataset store {self.storage.uri} failed ({_one_line(exc)}): batch {state}, its "
                "offsets not committed; rerun to go on exactly once"
            ) from exc
        except BaseException:
            if claimed is None:
                self._drop_unclaimed(staged)
            raise
        try:
            self._refresh_view()  # 4. view
        except OSError as exc:  # the batch is listed through its record: the next commit rewrites the view
            log.warning(
                "manifest.json in %s not rewritten after batch %d: %s", self.where, claimed.entry.batch, exc
            )
        return claimed.entry

    def _drop_unclaimed(self, staged: str) -> None:
        """Remove this member's staged file unless a record names it (then it is the dataset's). Best
        effort: a store that fails now leaves it to the leftover sweep."""
        if staged and not self._claimed_by(staged):
            with contextlib.suppress(OSError):
                self.storage.delete(staged)

    def _stage(self, data: bytes) -> str:
        """Write the batch's bytes under a new hidden name; its name. Nothing of this batch is claimed yet:
        a failed write is tried again under another name."""

        def attempt() -> str:
            staged = f"{STAGED_PREFIX}{uuid.uuid4().hex}.{self.fmt}"
            try:
                self.storage.write(staged, data)
            except OSError:
                with contextlib.suppress(OSError):
                    self.storage.delete(staged)
                raise
            return staged

        return _retrying(self.where, "a batch", attempt)

    def _free(self) -> str:
        if not isinstance(self.storage, LocalStorage):
            return ""
        return f" ({shutil.disk_usage(self.storage.root).free / 2**20:,.1f} MiB free)"

    def _claim(
        self,
        entry: BatchEntry,
        staged: str,
        rejected: Sequence[dict[str, object]],
        offsets: dict[int, tuple[int, int]],
        topic_id: str | None,
    ) -> CommitRecord:
        """Create the next record for this batch: the first writer of a number wins, the other reads the
        dataset again (its batch may now be stale) and tries the next number."""
        while True:
            records = self._records()
            self._check_continues([r.entry for r in records], offsets, topic_id)
            number = len(records) + 1
            record = CommitRecord(
                replace(
                    entry,
                    batch=number,
                    file=batch_file(number, self.fmt),
                    closed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                ),
                staged,
                list(rejected),
            )
            try:
                _retrying(self.where, f"batch {number}'s record", functools.partial(self._create, record))
            except FileExistsError:
                continue
            return record

    def _create(self, record: CommitRecord) -> None:
        """Create `record`; a write that failed once its rename took effect did its work."""
        name = record_name(record.entry.batch)
        try:
            self.storage.create_new(name, record.text())
        except FileExistsError:
            raise
        except OSError:
            try:
                there = CommitRecord.parse(self.storage.read(name))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                there = None
            if there is None or there.staged != record.staged:
                raise

    def _claimed_by(self, staged: str) -> bool:
        """Whether a record names `staged`: then it is the dataset's, never to be removed by its writer.
        Unknown (the store failing) counts as claimed; a published batch's staged name is gone anyway."""
        try:
            return any(r.staged == staged for r in committed(self.storage))
        except (OSError, ManifestError):
            return True

    def _publish(self, record: CommitRecord) -> None:
        """Give a claimed batch's staged file its name (roll forward): idempotent, any member may do it."""
        final = record.entry.file
        if record.staged is None or self.storage.exists(final):
            return
        try:
            self.storage.rename_new(record.staged, final)
        except FileExistsError:
            pass  # another member published it meanwhile
        except FileNotFoundError:
            if not self.storage.exists(final):
                raise

    def _refresh_view(self) -> None:
        """Rewrite `manifest.json` from the log. Members race, and an older view may land after a newer
        one; each member reads the log again after its rename and writes again if it grew, so the last
        rename always comes from a member that saw every record before it: the view ends complete."""
        records = self._records()
        for _ in range(3):
            tmp = f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
            self.storage.write(tmp, manifest_text([r.entry for r in records]))
            try:
                self.storage.replace(tmp, MANIFEST)
            finally:
                self.storage.delete(tmp)
            newer = self._records()
            if len(newer) == len(records):
                return
            records = newer

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

    def _remove_dead_leftovers(self) -> None:
        """Staged files and temporaries older than LEFTOVER_AGE_S: their writers died. A staged file a
        record names is published first (claimed bytes are never removed)."""
        try:
            self._records()
        except BadInput:
            return  # an unreadable manifest: the caller says so when it reads the entries
        cutoff = time.time() - LEFTOVER_AGE_S
        for info in [*self.storage.listing(), *self.storage.listing("_commits")]:
            base = info.name.rsplit("/", 1)[-1]
            if base.startswith(".") and info.mtime_s < cutoff:
                log.info("removing %s, left by a writer that died", info.name)
                self.storage.delete(info.name)
