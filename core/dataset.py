"""The batch dataset's on-disk format, the one definition that the consumer (which writes it) and
training (which reads it) share: `DIR/batch_<n>.<parquet|csv>` plus `DIR/manifest.json`.

It lives outside `pipeline` and `training` so that neither imports the other, and it imports nothing
heavy (no pyarrow, no pyspark): training, the store and the demo all read the manifest through it.

The manifest is the truth of what was ingested: a file it does not list is a crash's leftover.
One rule for its entries everywhere: the contract's keys are required, keys this version does not
know are ignored (a newer writer may add some), anything else makes the manifest unreadable.

An entry's `sha256` is the digest of the file's bytes as they were renamed into place (the writer hashes
the finished file, `sha256_of`); `verify` is the reader's side of that promise, so both live here.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

COLUMNS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")
MANIFEST = "manifest.json"


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


_KNOWN = {f.name for f in fields(BatchEntry)}


def batch_file(number: int, fmt: str) -> str:
    return f"batch_{number}.{fmt}"


def read_manifest(directory: Path) -> list[BatchEntry]:
    """The closed batches in order; [] when there is no manifest yet; ManifestError when unreadable."""
    path = directory / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        entries = [
            BatchEntry(**{k: v for k, v in e.items() if k in _KNOWN}) for e in json.loads(text)["batches"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"unreadable manifest {path}: {exc}") from None
    for number, entry in enumerate(entries, start=1):
        if entry.batch != number:
            raise ManifestError(f"unreadable manifest {path}: entry {number} says batch {entry.batch}")
    return entries


def manifest_text(entries: list[BatchEntry]) -> str:
    return json.dumps({"batches": [_as_json(e) for e in entries]}, indent=2) + "\n"


def _as_json(entry: BatchEntry) -> dict[str, object]:
    record = asdict(entry)
    if record["topic_id"] is None:  # written by a version that did not know it: keep the old shape
        del record["topic_id"]
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


def verify(directory: Path, entry: BatchEntry) -> None:
    """Check that `entry`'s file holds exactly the bytes the manifest recorded when it closed.

    BatchFileError, naming the batch, when the file is missing or was changed, truncated or replaced
    since: lineage tags claim these bytes, so nothing may be read from a file that is not them. The
    full hash runs once per file per process (watching, a cumulative selection re-reads old batches).
    """
    path = directory / entry.file
    checked_at = time.time_ns()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BatchFileError(
            f"batch {entry.batch} ({path}) is listed in {directory / MANIFEST} but missing"
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
