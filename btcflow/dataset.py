"""The batch dataset's on-disk format, the one definition that the consumer (which writes it) and
training (which reads it) share: `DIR/batch_<n>.<parquet|csv>` plus `DIR/manifest.json`.

It lives outside `pipeline` and `training` so that neither imports the other, and it imports nothing
heavy (no pyarrow, no pyspark): training, the store and the demo all read the manifest through it.

The manifest is the truth of what was ingested: a file it does not list is a crash's leftover.
One rule for its entries everywhere: the contract's keys are required, keys this version does not
know are ignored (a newer writer may add some), anything else makes the manifest unreadable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

COLUMNS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """The manifest exists but cannot be read as a list of batches."""


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
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
