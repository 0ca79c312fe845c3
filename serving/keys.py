"""Gateway API keys: the keys file `btcflow keys` writes, and the check every gateway worker makes with it.

Hashing. A key is `btcflow_<id>_<secret>`: `id` is 12 random hex digits, public, a lookup id (as GitHub's
and Stripe's tokens carry one); `secret` is `secrets.token_urlsafe(32)`, 256 random bits. The file keeps,
per key, its name, id, a random 16-byte salt and HMAC-SHA256(salt, key), never the key. A slow KDF (scrypt,
PBKDF2) exists to stretch a password a human chose, so that guessing the few bits it has costs much; a
256-bit random secret has no few bits to guess, so one HMAC is as strong against a stolen file as any KDF,
and costs a microsecond where scrypt would cost milliseconds on every request (the gateway answers a GET in
well under one). A request's key is found by its id (a dict lookup) and compared with `hmac.compare_digest`;
an unknown id is compared against a dummy record all the same, so the time taken says nothing.

Reload. Each worker process holds a `Keyring`. At most once per `interval_s` (the gateway's
BTCFLOW_POLL_INTERVAL_S) a request makes it stat the file; a new (inode, size, mtime) re-reads it. Writers
replace the file whole (temporary file, fsync, rename), so a change shows as a new inode and mtime, and a
reader never sees half a file. A revoked key is thus refused within one poll interval in every worker of
`btcflow serve --workers N`, with no message between processes. A file gone or unreadable after the start
refuses every key (fail closed) and says so in the log, once per change; its name is logged, never a key
or a hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from core.errors import BadInput
from core.storage import fsync_dir

log = logging.getLogger("serving")

PREFIX = "btcflow"
FORMAT = 1  # the file's `format`: a reader refuses one it does not know
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a key's name: a metric label, a log word
_KEY = re.compile(rf"^{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


class KeysError(BadInput):
    """The keys file cannot be used, or a `btcflow keys` request cannot be met (exit 2)."""


@dataclass(frozen=True)
class StoredKey:
    """One record of the keys file: what identifies and verifies a key, never the key itself."""

    name: str
    id: str
    salt: str  # hex
    hash: str  # hex HMAC-SHA256(salt, key)
    created_at: str  # ISO 8601, UTC
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, key: bytes) -> bool:
        return hmac.compare_digest(_digest(bytes.fromhex(self.salt), key), bytes.fromhex(self.hash))


def _digest(salt: bytes, key: bytes) -> bytes:
    return hmac.new(salt, key, hashlib.sha256).digest()


def new_key(name: str, now: datetime | None = None) -> tuple[str, StoredKey]:
    """A fresh key and the record that verifies it; the key is shown once and kept nowhere."""
    if not NAME.match(name):
        raise KeysError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    key_id, salt = secrets.token_hex(6), secrets.token_bytes(16)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return key, StoredKey(name, key_id, salt.hex(), _digest(salt, key.encode()).hex(), created)


# -- the file ------------------------------------------------------------------------------------------


def read_keys(path: Path) -> list[StoredKey]:
    """Every record of the file, revoked ones included. FileNotFoundError when there is none; KeysError
    naming the file (never its content) when it is not a keys file."""
    text = path.read_text()
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        return [StoredKey(**record) for record in data["keys"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = type(exc).__name__ if not isinstance(exc, ValueError) else str(exc).split(":")[0]
        raise KeysError(f"{path} is not a btcflow keys file ({reason})") from None


def write_keys(path: Path, keys: list[StoredKey]) -> None:
    """Replace the file whole: a 0600 temporary file beside it, fsynced, renamed over it."""
    body = json.dumps({"format": FORMAT, "keys": [asdict(k) for k in keys]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[list[StoredKey]]:
    """The records, for one read-modify-write at a time (a lock on the file's folder, as core.secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        try:
            keys = read_keys(path)
        except FileNotFoundError:
            keys = []
        yield keys
    finally:
        os.close(fd)


def create(path: Path, name: str) -> str:
    """Add a key named `name` to the file (made if missing) and return the key, the one time it exists."""
    with _locked(path) as keys:
        if any(k.name == name and k.active for k in keys):
            raise KeysError(f"a key named {name} exists already: revoke it first, or choose another name")
        key, record = new_key(name)
        write_keys(path, [*keys, record])
    return key


def ensure_file(path: Path) -> None:
    """Make an empty keys file when there is none: a gateway on it refuses every key until `create`."""
    with _locked(path) as keys:
        if not path.exists():
            write_keys(path, keys)


def revoke(path: Path, name: str) -> bool:
    """Mark the key named `name` revoked; False if it was already. KeysError when no key has that name."""
    with _locked(path) as keys:
        named = [k for k in keys if k.name == name]
        if not named:
            raise KeysError(f"no key named {name} in {path}")
        if not any(k.active for k in named):
            return False
        now = datetime.now(UTC).isoformat(timespec="seconds")
        write_keys(path, [replace(k, revoked_at=now) if k.name == name and k.active else k for k in keys])
    return True


# -- the check, in each worker -------------------------------------------------------------------------

_DUMMY = StoredKey("", "", "00" * 16, "00" * 32, "")


class Keyring:
    """The active keys of one file, re-read when it changes (checked at most once per `interval_s`).

    Made at the gateway's start, when the file must exist (KeysError otherwise: a gateway that would refuse
    every request is a mistake to say at once). `clock` is for tests.
    """

    def __init__(self, path: Path, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.interval_s, self.clock = path, interval_s, clock
        self._by_id: dict[str, StoredKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._due = 0.0
        try:
            self._load(self._stat())
        except FileNotFoundError:
            raise KeysError(
                f"BTCFLOW_API_KEYS_FILE={path}: no such file (make a key with `btcflow keys create NAME`, or "
                "unset the variable for an open gateway)"
            ) from None

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _load(self, stamp: tuple[int, int, int]) -> None:
        keys = read_keys(self.path)
        self._by_id = {k.id: k for k in keys if k.active}
        self._stamp = stamp
        log.info("API keys from %s: %d active (%s)", self.path, len(self._by_id), self.names())

    def names(self) -> str:
        return ", ".join(sorted(k.name for k in self._by_id.values())) or "none"

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look; a file gone or broken refuses every key."""
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._load(stamp)
        except (OSError, KeysError) as exc:
            if self._stamp is not None or self._by_id:  # say it once, not on every look
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                log.warning(
                    "API keys file %s unusable (%s): refusing every key until it is fixed", self.path, why
                )
            self._by_id, self._stamp = {}, None

    def verify(self, key: bytes) -> str | None:
        """The name of the active key `key` is, else None; the file is looked at first if it is time."""
        now = self.clock()
        if now >= self._due:
            self._due = now + self.interval_s
            self.refresh()
        match = _KEY.match(key.decode("latin-1"))
        record = self._by_id.get(match.group(1)) if match else None
        ok = (record or _DUMMY).matches(key)  # the same work whether or not the id is known
        return record.name if record is not None and ok else None


def key_from_header(authorization: bytes | None) -> bytes | None:
    """The token of `Authorization: Bearer <token>`, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None
