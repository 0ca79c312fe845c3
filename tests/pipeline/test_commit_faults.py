"""The commit protocol under failure: every step of a commit fails in turn (the staged write, its fsync,
the commit record, the rename that publishes the file, the manifest view, each folder fsync), before or
after it took effect, while a second member commits at that very moment. After each case and the first
member's retry (its offsets were never committed, so a restarted consumer reads its rows again), the
dataset holds each row exactly once and every listed file exists with the checksum its record gives.

On the local disk and on HDFS alike; no root needed (the faults are raised by a wrapper of the store).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import core.storage
from core.dataset import read_view
from core.storage import FileInfo, HdfsStorage, LocalStorage, Storage
from pipeline.errors import StoreUnavailable
from pipeline.store import COLUMNS, BatchStore, StaleBatch, read_manifest


def rows(first: int, n: int) -> pa.Table:
    ts = 1325412060.0 + 60.0 * np.arange(first, first + n)
    return pa.table({name: ts if name == "Timestamp" else np.full(n, 1.5) for name in COLUMNS})


@dataclass(frozen=True)
class Fault:
    """Fail the first call of `op` on a name `matches` accepts; `after`: once the call took effect."""

    op: str
    matches: Callable[[str], bool]
    after: bool = False


STAGED = lambda name: name.startswith(".incoming-")  # noqa: E731 - a table of predicates reads best
RECORD_TMP = lambda name: name.startswith("_commits/.")  # noqa: E731
RECORD = lambda name: name.startswith("_commits/") and not name.startswith("_commits/.")  # noqa: E731
BATCH = lambda name: name.startswith("batch_")  # noqa: E731
VIEW_TMP = lambda name: name.startswith(".manifest.json")  # noqa: E731
VIEW = lambda name: name == "manifest.json"  # noqa: E731

FAULTS = {
    "write staged file": Fault("write", STAGED),
    "write staged file, then fail": Fault("write", STAGED, after=True),
    "write commit record": Fault("write", RECORD_TMP),
    "rename commit record": Fault("rename_new", RECORD),
    "rename commit record, then fail": Fault("rename_new", RECORD, after=True),
    "rename staged file into place": Fault("rename_new", BATCH),
    "rename staged file into place, then fail": Fault("rename_new", BATCH, after=True),
    "write manifest view": Fault("write", VIEW_TMP),
    "replace manifest view": Fault("replace", VIEW),
    "replace manifest view, then fail": Fault("replace", VIEW, after=True),
}
LOCAL_FSYNCS = {  # the local disk's own durability steps: a file's fsync and a folder's after a link
    "fsync staged file": Fault("fsync", STAGED),
    "fsync commit record": Fault("fsync", RECORD_TMP),
    "fsync folder after the commit record": Fault("fsync_dir", lambda name: name.endswith("_commits")),
    "fsync folder after the rename": Fault("fsync_dir", lambda name: not name.endswith("_commits")),
}


class FaultyStorage(Storage):
    """A store that fails one operation once, calling `meanwhile` (another member's commit) first."""

    def __init__(self, inner: Storage, fault: Fault, meanwhile: Callable[[], None], fired: list[str]) -> None:
        self.inner, self.fault, self.meanwhile, self.fired = inner, fault, meanwhile, fired
        self.uri = inner.uri

    def trip(self, op: str, name: str, call: Callable[[], object]) -> None:
        if self.fired or op != self.fault.op or not self.fault.matches(name):
            call()
            return
        self.fired.append(name)
        if self.fault.after:
            call()
        self.meanwhile()
        raise OSError(errno.EIO, f"injected: {op} {name}")

    def write(self, name: str, data: bytes) -> None:
        self.trip("write", name, lambda: self.inner.write(name, data))

    def rename_new(self, src: str, dst: str) -> None:
        self.trip("rename_new", dst, lambda: self.inner.rename_new(src, dst))

    def replace(self, src: str, dst: str) -> None:
        self.trip("replace", dst, lambda: self.inner.replace(src, dst))

    def location(self, name: str) -> str:
        return self.inner.location(name)

    def read(self, name: str) -> bytes:
        return self.inner.read(name)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def info(self, name: str) -> FileInfo:
        return self.inner.info(name)

    def listing(self, folder: str = "") -> list[FileInfo]:
        return self.inner.listing(folder)

    def make_folder(self, folder: str = "") -> None:
        self.inner.make_folder(folder)


@pytest.fixture(params=["local", "hdfs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "batch")
        return
    cluster = request.getfixturevalue("hdfs_cluster")
    store = HdfsStorage(f"{cluster.address}/faults/{uuid.uuid4().hex}")
    yield store
    store.clear()


def _local_fsync_faults(
    monkeypatch: pytest.MonkeyPatch, fault: Fault, meanwhile: Callable[[], None], fired: list[str]
) -> None:
    """The local disk's fsyncs fail through the functions core.storage calls."""

    def failing(op: str, name: str, call: Callable[[], None]) -> None:
        if fired or op != fault.op or not fault.matches(name):
            call()
            return
        fired.append(name)
        meanwhile()
        raise OSError(errno.EIO, f"injected: {op} {name}")

    real_fsync, real_dir = os.fsync, core.storage.fsync_dir

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))  # the name the store wrote, as the matchers see it
        name = f"_commits/{path.name}" if path.parent.name == "_commits" else path.name
        failing("fsync", name, lambda: real_fsync(fd))

    def fsync_dir(folder: Path) -> None:
        failing("fsync_dir", str(folder), lambda: real_dir(folder))

    monkeypatch.setattr(core.storage.os, "fsync", fsync)
    monkeypatch.setattr(core.storage, "fsync_dir", fsync_dir)


def _check_exactly_once(storage: Storage, expected: set[float]) -> None:
    entries = read_manifest(storage)
    assert [e.batch for e in entries] == list(range(1, len(entries) + 1))
    seen: list[float] = []
    for entry in entries:
        data = storage.read(entry.file)  # every listed file is there, with the bytes its record names
        assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.file
        seen += pq.read_table(io.BytesIO(data)).column("Timestamp").to_pylist()
    assert len(seen) == len(set(seen)) and set(seen) == expected  # each row exactly once, none lost
    assert [e.batch for e in read_view(storage)] == [e.batch for e in entries]  # the view caught up


@pytest.mark.parametrize("meanwhile", ["a second member commits", "alone"])
@pytest.mark.parametrize("case", [*FAULTS, *LOCAL_FSYNCS])
def test_a_failure_at_any_step_leaves_the_batch_listed_with_its_file_or_nowhere(
    case: str, meanwhile: str, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case in LOCAL_FSYNCS and not isinstance(storage, LocalStorage):
        pytest.skip("HDFS has no client-side fsync step: a write returns once every DataNode acknowledged it")
    BatchStore(storage).write_batch(rows(0, 50), {0: (0, 49)})  # the dataset before: one batch
    other = BatchStore(storage)

    def second_member_commits() -> None:
        other.write_batch(rows(10_000, 40), {1: (0, 39)})
        second.append(True)

    second: list[bool] = []

    fired: list[str] = []
    hook = second_member_commits if meanwhile != "alone" else lambda: None
    if case in LOCAL_FSYNCS:
        _local_fsync_faults(monkeypatch, LOCAL_FSYNCS[case], hook, fired)
        first = BatchStore(storage)
    else:
        faulty = FaultyStorage(storage, FAULTS[case], hook, fired)
        first = BatchStore(faulty)
    try:
        first.write_batch(rows(50, 30), {0: (50, 79)})
    except StoreUnavailable:
        monkeypatch.undo()
        # a restarted member: its offsets were not committed, so it reads and writes the rows again;
        # StaleBatch when the failed commit had claimed the batch: the retry is refused, nothing doubles
        with contextlib.suppress(StaleBatch):
            BatchStore(storage).write_batch(rows(50, 30), {0: (50, 79)})
    monkeypatch.undo()
    assert fired, "the fault never fired: the step it names is not where the commit goes"
    BatchStore(storage).write_batch(rows(20_000, 5), {2: (0, 4)})  # and the dataset goes on
    if meanwhile == "alone":
        assert not second
    expected = {float(t) for t in 1325412060.0 + 60.0 * np.r_[0:80, 20_000:20_005]}
    if second:
        expected |= {float(t) for t in 1325412060.0 + 60.0 * np.r_[10_000:10_040]}
    _check_exactly_once(storage, expected)


@pytest.mark.parametrize("case", ["write staged file", "write commit record"])
def test_a_write_that_fails_once_is_tried_again_and_the_batch_lands(case: str, tmp_path: Path) -> None:
    """A DataNode killed mid-write fails one write of a batch or of its record (HDFS gives up completing
    the file): the commit writes again under a fresh name, and the caller sees the batch listed."""
    storage = LocalStorage(tmp_path / "batch")
    fired: list[str] = []
    entry = BatchStore(FaultyStorage(storage, FAULTS[case], lambda: None, fired)).write_batch(
        rows(0, 30), {0: (0, 29)}
    )
    assert fired and entry.batch == 1
    _check_exactly_once(storage, {float(t) for t in 1325412060.0 + 60.0 * np.arange(30)})
    assert not [f.name for f in storage.listing() if f.name.startswith(".")]  # no staged file left behind
