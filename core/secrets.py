"""Secrets btcflow keeps and never shows.

- Shown: every URI btcflow prints, logs or answers goes through `mask_uri`, which hides the password of
  `scheme://user:password@host` (and a `password=` query value) wherever it sits in a text, so an exception
  naming the store is safe to show too. `mask_log_records` puts `MaskSecrets` on every log record of the
  process; `core.logs.configure` calls it, so no record carries a password whatever the tracking URI holds.
- Kept: `kept_secret` (PostgreSQL's password, the webhook key) appears whole or not at all, and two first
  starts agree on one value.

Only the standard library: the CLI configures logging, and so installs the masking, before every command.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.storage import fsync_dir

log = logging.getLogger("core")

MASK = "***"

# scheme://user:password@ : the password runs to the last '@' of the unbroken text after it, so a raw '@' or
# '/' inside a password never leaves its tail shown (at worst a host:port/path...@ is masked too)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#'\"]*:)(?P<password>[^\s'\"]*)@")
# ...?password=... as libpq and SQLAlchemy take it
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<password>[^&\s'\"#]*)", re.IGNORECASE)


def _hide(match: re.Match[str]) -> str:
    if not match.group("password"):
        return match.group(0)
    return match.group("head") + MASK + match.group(0)[match.end("password") - match.start() :]


def mask_uri(text: str) -> str:
    """`text` with the password of every URI in it masked: `postgresql://btcflow:***@127.0.0.1:5433/mlflow`.

    A URI alone or inside a longer message (an exception naming the store); anything else is left as is.
    """
    if "://" not in text and "=" not in text:  # the common case, for every log record: no regex
        return text
    return _QUERY.sub(_hide, _USERINFO.sub(_hide, text))


def has_password(uri: str) -> bool:
    """Whether the URI carries a password (what `mask_uri` would hide)."""
    return any(m.group("password") for pattern in (_USERINFO, _QUERY) for m in pattern.finditer(uri))


class MaskSecrets(logging.Filter):
    """Masks passwords in a record's message, arguments, exception and stack text; never drops a record.

    The arguments are masked one by one where that is enough (an exception whose text names the store
    becomes its masked text), so formatters that read them (uvicorn's access log) keep working; a message
    that still shows a password once formatted is replaced by its masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.msg, str):
                record.msg = mask_uri(record.msg)
            if isinstance(record.args, Mapping):
                record.args = {k: _masked_arg(v) for k, v in record.args.items()}
            elif isinstance(record.args, tuple):
                record.args = tuple(_masked_arg(a) for a in record.args)
            message = record.getMessage()
        except Exception:  # a record that does not format: its handler reports it, as it would have
            return True
        masked = mask_uri(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_uri(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_uri(record.stack_info)
        return True


def _masked_arg(value: Any) -> Any:
    if isinstance(value, int | float) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    masked = mask_uri(text)
    return value if masked == text else masked


def mask_log_records() -> None:
    """Mask every log record this process creates, whatever logger and handler it goes to (idempotent).

    On the record factory rather than on handlers: uvicorn and MLflow add handlers of their own after
    btcflow configures logging, and a filter on the root's handler would never see their records.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "masks_secrets", False):
        return
    masker = MaskSecrets()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        masker.filter(record)
        return record

    factory.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def read_uri_file(path: Path) -> str:
    """The URI a file holds (its first non-blank line), so a password never needs a command line.

    ValueError naming the file (never its content) when it cannot be read or holds nothing.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    uri = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not uri:
        raise ValueError(f"{path} is empty: write the URI on its first line")
    return uri


# -- kept secrets ---------------------------------------------------------------------------------------


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path`; the first call makes it with `make()`, and every later one reads it.

    The file appears whole or not at all: the value goes to a temporary file in the same folder (0600),
    is fsynced, then hard-linked as `path`, which fails when `path` exists. Of two first starts, the first
    link wins and the other reads the winner's value. A full disk or a crash before the link leaves no
    `path` (the temporary file is removed, but after a kill -9), so the next start makes a fresh one.

    A file that holds no usable secret (empty, blank or unprintable: what an older, non-atomic btcflow
    left after a full disk between create and write) cannot have served as one (initdb refuses an empty
    password, `mlflow server` an empty key): it is moved aside to `<name>.invalid`, under a lock on the
    folder so two starts repairing it at once agree, and a new secret replaces it.
    """
    make_value: str | None = None
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # each turn either returns or saw another process change the file
        value = _read(path)
        if value is not None and _usable(value):
            return value
        if value is not None:
            _set_aside(path)
            continue
        make_value = make_value or _checked(make())
        if _link_new(path, make_value):
            return make_value
    raise RuntimeError(f"{path}: no usable secret after several attempts (another process keeps changing it)")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None


def _usable(value: str) -> bool:
    return bool(value) and value.isprintable() and not any(c.isspace() for c in value)


def _checked(value: str) -> str:
    if not _usable(value):
        raise ValueError("a new secret must be printable text without blanks")
    return value


def _link_new(path: Path, value: str) -> bool:
    """Write `value` aside, fsync, link it as `path`; False when `path` exists already (another won)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _set_aside(path: Path) -> None:
    """Move an unusable secret file to `<name>.invalid`, unless another process replaced it meanwhile."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        value = _read(path)
        if value is not None and not _usable(value):
            aside = path.with_name(path.name + ".invalid")
            os.replace(path, aside)
            log.warning(
                "%s held no usable secret (an interrupted write?): moved to %s, making a new one", path, aside
            )
    finally:
        os.close(fd)
