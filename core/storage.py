"""Where the dataset lives: a folder on the local disk or on HDFS, behind the few operations the batch
commit needs (`pipeline.store`) and training reads with (`core.dataset`).

The commit protocol needs only two atomic operations from a store, both of which fail rather than
overwrite: `create_new` (a small file appears whole, or `FileExistsError`) and `rename_new` (a file takes
a name nobody holds, or `FileExistsError`). No lock, so any store with those two can hold a dataset:
the local disk (a hard link fails on an existing name), HDFS (its rename never replaces a file), or an
object store with conditional writes (S3's `If-None-Match: *`) later.

HDFS is reached without a JVM, through `hdfs-native` (a Rust client of HDFS's own RPC protocol).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, ParamSpec, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import hdfs_native

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class FileInfo:
    name: str  # relative to the store's folder
    size: int
    mtime_s: float


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a create, a link, a rename) durable, as a file's fsync does its bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """A folder that holds a dataset. Names are relative to it, with `/` between folders."""

    uri: str  # where it is, as a user writes it (a local path or hdfs://host:port/path)

    def location(self, name: str) -> str:
        """`name` as error messages name it (an absolute path, or an hdfs:// URI)."""
        raise NotImplementedError

    def url(self, name: str) -> str:
        """`name` as Spark and MLflow's lineage take it: a URI with its scheme, which no Hadoop default
        file system (fs.defaultFS) can reinterpret."""
        return self.location(name)

    def read(self, name: str) -> bytes:
        """The file's bytes; FileNotFoundError when absent."""
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        """Write `name` durably, replacing it: only for names nobody else writes (unique temporaries)."""
        raise NotImplementedError

    def create_new(self, name: str, data: bytes) -> None:
        """Create `name` holding `data`, atomically: readers see it whole or not at all, and of two
        creators exactly one succeeds (the other gets FileExistsError)."""
        tmp = f"{_folder_of(name)}.{uuid.uuid4().hex}.tmp"
        self.write(tmp, data)
        try:
            self.rename_new(tmp, name)
        finally:
            self.delete(tmp)

    def rename_new(self, src: str, dst: str) -> None:
        """Move `src` to `dst` unless `dst` exists (FileExistsError; `src` stays); durable when it returns."""
        raise NotImplementedError

    def replace(self, src: str, dst: str) -> None:
        """Move `src` over `dst` in one step (readers see the old file or the new one)."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove `name` if it is there."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        try:
            self.info(name)
        except FileNotFoundError:
            return False
        return True

    def info(self, name: str) -> FileInfo:
        """Size and modification time; FileNotFoundError when absent."""
        raise NotImplementedError

    def listing(self, folder: str = "") -> list[FileInfo]:
        """The files directly in `folder` (none when it does not exist)."""
        raise NotImplementedError

    def make_folder(self, folder: str = "") -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Remove the folder and everything in it (the demo starts from nothing)."""
        raise NotImplementedError


def _folder_of(name: str) -> str:
    """The temporary's prefix for `name`: in the same folder (a rename never crosses folders), hidden."""
    head, _, tail = name.rpartition("/")
    return f"{head}/.{tail}" if head else f".{tail}"


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def location(self, name: str) -> str:
        return str(self.path(name).resolve())

    def url(self, name: str) -> str:
        return self.path(name).resolve().as_uri()

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        with self.path(name).open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def rename_new(self, src: str, dst: str) -> None:
        source, target = self.path(src), self.path(dst)
        os.link(source, target)  # FileExistsError when taken; the file now has both names
        source.unlink()
        fsync_dir(target.parent)

    def replace(self, src: str, dst: str) -> None:
        self.path(src).replace(self.path(dst))
        fsync_dir(self.path(dst).parent)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def info(self, name: str) -> FileInfo:
        stat = self.path(name).stat()
        return FileInfo(name, stat.st_size, stat.st_mtime)

    def listing(self, folder: str = "") -> list[FileInfo]:
        base = self.path(folder)
        try:
            children = list(os.scandir(base))
        except FileNotFoundError:
            return []
        prefix = f"{folder}/" if folder else ""
        return [
            FileInfo(prefix + c.name, (s := c.stat()).st_size, s.st_mtime) for c in children if c.is_file()
        ]

    def make_folder(self, folder: str = "") -> None:
        self.path(folder).mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _os_errors(method: Callable[P, R]) -> Callable[P, R]:
    """hdfs-native raises OSError subclasses for what a file system says, but RuntimeError for some of
    what the cluster does (an RPC refused mid-call, a pipeline with no DataNode left): one kind for
    callers, OSError, as the local disk's."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines() or ["HDFS error"]
            raise OSError(errno.EIO, lines[0]) from exc

    return call


class HdfsStorage(Storage):
    """A folder on HDFS. hdfs-native raises FileNotFoundError and FileExistsError as the local disk does;
    its rename never replaces (HDFS's rename-to-existing fails), so `rename_new` is one RPC."""

    # DataNodes are reached by the name they registered with (their own address, which on a host of its
    # own is not the one the NameNode saw them connect from), as Spark's Hadoop client is told too; a
    # write whose DataNode dies goes on with the replicas left instead of hunting for a replacement
    # (clusters of 2-3 DataNodes have none to give), as services.hdfs's daemons are configured
    CLIENT_CONFIG: ClassVar[dict[str, str]] = {
        "dfs.client.use.datanode.hostname": "true",
        "dfs.client.block.write.replace-datanode-on-failure.enable": "true",
        "dfs.client.block.write.replace-datanode-on-failure.policy": "NEVER",
        # a NameNode that does not answer: a call fails after ~15 s (5 tries, 0.5 s doubling to 4 s
        # between them) instead of retrying for minutes, long enough to ride out a NameNode restart
        "dfs.client.failover.max.attempts": "5",
        "dfs.client.failover.sleep.base.millis": "500",
        "dfs.client.failover.sleep.max.millis": "4000",
    }

    def __init__(self, uri: str, client: hdfs_native.Client | None = None) -> None:
        parts = urlsplit(uri)
        self.uri = uri.rstrip("/")
        self.base = parts.path.rstrip("/") or "/"
        self.namenode = f"hdfs://{parts.netloc}"
        self._client = client

    @property
    def client(self) -> hdfs_native.Client:
        if self._client is None:  # opened on first use: a store is cheap to build
            import hdfs_native

            self._client = hdfs_native.Client(self.namenode, config=self.CLIENT_CONFIG)
        return self._client

    def path(self, name: str) -> str:
        return f"{self.base}/{name}" if name else self.base

    def location(self, name: str) -> str:
        return f"{self.namenode}{self.path(name)}"

    @_os_errors
    def read(self, name: str) -> bytes:
        with self.client.read(self.path(name)) as f:
            return f.readall()

    @_os_errors
    def write(self, name: str, data: bytes) -> None:
        from hdfs_native import WriteOptions

        with self.client.create(self.path(name), WriteOptions(overwrite=True)) as f:
            f.write(data)
        # close() returns once every DataNode of the pipeline acknowledged the last packet

    @_os_errors
    def rename_new(self, src: str, dst: str) -> None:
        self.client.rename(self.path(src), self.path(dst), overwrite=False)

    @_os_errors
    def replace(self, src: str, dst: str) -> None:
        self.client.rename(self.path(src), self.path(dst), overwrite=True)

    @_os_errors
    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.client.delete(self.path(name))

    @_os_errors
    def info(self, name: str) -> FileInfo:
        status = self.client.get_file_info(self.path(name))
        return FileInfo(name, status.length, status.modification_time / 1000)

    @_os_errors
    def listing(self, folder: str = "") -> list[FileInfo]:
        prefix = f"{folder}/" if folder else ""
        try:
            return [
                FileInfo(prefix + s.path.rsplit("/", 1)[-1], s.length, s.modification_time / 1000)
                for s in self.client.list_status(self.path(folder))
                if not s.isdir
            ]
        except FileNotFoundError:
            return []

    @_os_errors
    def make_folder(self, folder: str = "") -> None:
        self.client.mkdirs(self.path(folder), create_parent=True)

    @_os_errors
    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.client.delete(self.base, recursive=True)


def as_storage(where: Storage | Path | str) -> Storage:
    """`where` as a store: a store as is, a path or a URI opened (callers and tests may name a folder)."""
    return where if isinstance(where, Storage) else open_storage(where)


def open_storage(uri: str | Path) -> Storage:
    """The store a BTCFLOW_BATCH_URI names: `hdfs://host:port/path`, or a local folder (a path or file://)."""
    text = str(uri)
    scheme = urlsplit(text).scheme
    if scheme == "hdfs":
        return HdfsStorage(text)
    if scheme == "file":
        return LocalStorage(Path(urlsplit(text).path))
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"unsupported dataset location {text}: use a local folder or hdfs://host:port/path")
    return LocalStorage(Path(text))
