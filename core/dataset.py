"""The batch dataset's format, the one definition that the consumer (which writes it) and training
(which reads it) share: `DIR/batch_<n>.<parquet|csv>`, the commit log `DIR/_commits/<n>.json` (one record
per batch, the truth) and `DIR/manifest.json` (the merged view of the log). DIR is a `core.storage`
folder: the local disk or HDFS.

It lives outside `pipeline` and `training` so that neither imports the other, and it imports nothing
heavy (no pyarrow, no pyspark): training, the store and the demo all read the manifest through it.

The log is the truth of what was ingested: a file no record names is a crash's leftover. The view may
lag behind the log by the last few batches (its writer died, or lost a race), so every reader here reads
the view and then the records after it; the lag costs one probe when there is none.
One rule for its entries everywhere: the contract's keys are required, keys this version does not
know are ignored (a newer writer may add some), anything else makes the manifest unreadable.

An entry's `sha256` is the digest of the file's bytes as the writer made them, and `crc32c` their CRC32C,
which HDFS can compute for a file from the checksums its DataNodes already keep (COMPOSITE_CRC), without
reading the bytes; `verify` is the reader's side of that promise, so both live here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import crc32c
import orjson

from core.storage import LocalStorage, Storage, as_storage

COLUMNS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")
MANIFEST = "manifest.json"
RECORDS = "_commits"


class ManifestError(ValueError):
    """The manifest exists but cannot be read as a list of batches."""


class BatchFileError(ValueError):
    """A batch the manifest lists is missing, or its bytes are not the ones the manifest records."""


@dataclass(frozen=True)
class BatchEntry:
    """One closed batch. `offsets` maps partition → [first, last] Kafka offset of the messages it holds
    (rejected ones included); `topic_id` is the Kafka topic's id when the batch was read, so that a
    topic deleted and recreated under the same name is never mistaken for the one the batch came from."""

    batch: int
    file: str
    rows: int
    min_ts: float
    max_ts: float
    offsets: dict[str, list[int]]
    sha256: str
    closed_at: str = ""
    topic_id: str | None = None
    crc32c: str | None = None  # hex CRC32C of the file's bytes (written since the HDFS store)
    rejected: int = 0  # messages among the offsets that were not rows, kept in the batch's record


_FIELDS = tuple(f.name for f in fields(BatchEntry))
_KNOWN = set(_FIELDS)


def batch_file(number: int, fmt: str) -> str:
    return f"batch_{number}.{fmt}"


def record_name(number: int) -> str:
    return f"{RECORDS}/{number}.json"


@dataclass(frozen=True)
class CommitRecord:
    """Batch n's record in the log: its entry, the hidden name its file had until it was published
    (None for entries read from the view, all published), and its rejected messages."""

    entry: BatchEntry
    staged: str | None = None
    rejected: list[dict[str, object]] = field(default_factory=list)

    def text(self) -> bytes:
        return json.dumps(
            {"entry": _as_json(self.entry), "staged": self.staged, "rejected": self.rejected}
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> CommitRecord:
        raw = json.loads(data)
        return cls(_entry(raw["entry"]), raw.get("staged"), raw.get("rejected", []))


def _entry(raw: dict[str, object]) -> BatchEntry:
    return BatchEntry(**{k: v for k, v in raw.items() if k in _KNOWN})  # type: ignore[arg-type]


def read_view(storage: Storage) -> list[BatchEntry]:
    """`manifest.json` alone; [] when there is none yet; ManifestError when unreadable."""
    try:
        text = storage.read(MANIFEST)
    except FileNotFoundError:
        return []
    where = storage.location(MANIFEST)
    try:
        entries = [_entry(e) for e in orjson.loads(text)["batches"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"unreadable manifest {where}: {exc}") from None
    for number, entry in enumerate(entries, start=1):
        if entry.batch != number:
            raise ManifestError(f"unreadable manifest {where}: entry {number} says batch {entry.batch}")
    return entries


def committed(
    storage: Storage, *, view_only: bool = False, known: list[CommitRecord] | None = None
) -> list[CommitRecord]:
    """Every claimed batch: the view's, then each record after it until a number nobody claimed.
    Records after the view keep their staged name, so a writer can publish one whose file is not yet
    in place (`pipeline.store`). A record never changes once created, so a reader that `known` the
    first ones reads only the records after them: one probe when nothing is new."""
    records = list(known) if known else [CommitRecord(e) for e in read_view(storage)]
    while not view_only:
        number = len(records) + 1
        try:
            data = storage.read(record_name(number))
        except FileNotFoundError:
            break
        try:
            record = CommitRecord.parse(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(
                f"unreadable commit record {storage.location(record_name(number))}: {exc}"
            ) from None
        if record.entry.batch != number:
            raise ManifestError(f"commit record {number} says batch {record.entry.batch}")
        records.append(record)
    return records


def listed(storage: Storage) -> list[BatchEntry]:
    """The batches readers may use: every claimed one whose file is in place (a record's file is
    published a moment after the claim; the listing stops before the first that is not yet)."""
    out = []
    for record in committed(storage):
        if record.staged is not None and not storage.exists(record.entry.file):
            break
        out.append(record.entry)
    return out


def read_manifest(where: Storage | Path | str) -> list[BatchEntry]:
    """The listed batches of the dataset at `where`, in order; [] when there are none yet."""
    return listed(as_storage(where))


def manifest_text(entries: list[BatchEntry]) -> bytes:
    """The view's bytes: orjson, since the view is rewritten whole after each commit (0.5 ms for 1,000
    batches, where json with asdict took 20)."""
    return orjson.dumps({"batches": [_as_json(e) for e in entries]}, option=orjson.OPT_INDENT_2) + b"\n"


def _as_json(entry: BatchEntry) -> dict[str, object]:
    record = {f: getattr(entry, f) for f in _FIELDS}  # asdict deep-copies every offsets list: 10x slower
    for key in ("topic_id", "crc32c"):  # written by a version that did not know it: keep the old shape
        if record[key] is None:
            del record[key]
    return record


def resume_offsets(entries: list[BatchEntry], topic_id: str | None = None) -> dict[int, int]:
    """The next offset to read per partition: one past the last offset the latest batch holding that
    partition records. With `topic_id`, batches read from another topic of the same name (one that was
    deleted and recreated) do not count; batches that recorded no id count for any."""
    resume: dict[int, int] = {}
    for entry in entries:
        if topic_id is not None and entry.topic_id not in (None, topic_id):
            continue
        for partition, (_, last) in entry.offsets.items():
            resume[int(partition)] = last + 1
    return resume


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes: what the writer records and `verify` compares.

    hashlib.file_digest reads into one reused buffer; hashing is CPU-bound (~400-700 MiB/s here, about
    0.05-0.1 s for a 1M-row parquet batch), so a larger buffer buys nothing measurable.
    """
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# path -> (sha256 it matched, the file's identity then): a process verifies each file once, and again only
# if the file is no longer the same one on disk (another inode, size, mtime or ctime: a rewrite, a
# truncation or a replacement all change one of them; ctime cannot be set back by hand).
_verified: dict[Path, tuple[str, tuple[int, ...]]] = {}
# Timestamps are coarse (a kernel clock tick; 1-2 s on some filesystems): a file changed this shortly before
# it was checked could change again with the same stat, so it is not remembered (git's "racy" rule).
RACY_NS = 2_000_000_000


FileCrc = Callable[[str], str]  # a file's location -> its hex CRC32C, as the store computes it


def verify(where: Storage | Path | str, entry: BatchEntry, file_crc: FileCrc | None = None) -> None:
    """Check that `entry`'s file holds exactly the bytes the manifest recorded when it closed.

    BatchFileError, naming the batch, when the file is missing or was changed, truncated or replaced
    since: lineage tags claim these bytes, so nothing may be read from a file that is not them.
    On the local disk the sha256 of the bytes, once per file per process (watching, a cumulative
    selection re-reads old batches). Elsewhere `file_crc` (HDFS's own file checksum: no byte leaves the
    DataNodes), or the CRC32C of the bytes streamed once when no such call is at hand.
    """
    storage = as_storage(where)
    if isinstance(storage, LocalStorage):
        _verify_local(storage, entry)
        return
    location = storage.location(entry.file)
    try:
        size = storage.info(entry.file).size
    except FileNotFoundError:
        raise BatchFileError(
            f"batch {entry.batch} ({location}) is listed in its manifest but missing"
        ) from None
    if entry.crc32c is None:
        actual_sha = hashlib.sha256(storage.read(entry.file)).hexdigest()
        matches = actual_sha == entry.sha256
    else:
        actual = (
            file_crc(location)
            if file_crc is not None and size
            else f"{crc32c.crc32c(storage.read(entry.file)):08x}"
        )
        matches = actual == entry.crc32c
    if not matches:
        raise BatchFileError(
            f"batch {entry.batch} ({location}) does not match its manifest checksum: changed, truncated or "
            "replaced since it closed"
        )


def _verify_local(storage: LocalStorage, entry: BatchEntry) -> None:
    path = storage.path(entry.file)
    checked_at = time.time_ns()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BatchFileError(
            f"batch {entry.batch} ({path}) is listed in {storage.path(MANIFEST)} but missing"
        ) from None
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    key = path.absolute()
    if _verified.get(key) == (entry.sha256, identity):
        return
    if sha256_of(path) != entry.sha256:
        raise BatchFileError(
            f"batch {entry.batch} ({path}) does not match its manifest sha256: changed, truncated or "
            "replaced since it closed"
        )
    if checked_at - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_NS:
        _verified[key] = (entry.sha256, identity)
