"""The credentials btcflow's own users hold on the servers it runs (MLflow, Kafka): one kept file per
user, `<username>:<password>` on one line, 0600, made once by `core.secrets.kept_secret`.

A server's start makes (or reads) the files of the users it creates, so a command on the same host finds
the one of the role it needs; on another host the same values come from the environment
(MLflow's own MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, Kafka's BTCFLOW_KAFKA_USERNAME /
BTCFLOW_KAFKA_PASSWORD), which always win over a file. A password never goes on a command line, and a
`Credential` never shows it (`repr`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core.secrets import kept_secret


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)


def new_password() -> str:
    """32 random bytes, url-safe: no blank, no ':' (so `user:password` splits at the first ':')."""
    return secrets.token_urlsafe(32)


def kept_credential(path: Path, username: str) -> Credential:
    """The credential kept in `path`; the first call makes it (a new random password) for `username`."""
    return _parse(kept_secret(path, lambda: f"{username}:{new_password()}"), path)


def read_credential(path: Path) -> Credential | None:
    """The credential kept in `path`, None when there is no such file. ValueError naming the file (never its
    content) when it holds no `user:password`."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return _parse(text, path)


def from_environment(username_var: str, password_var: str) -> Credential | None:
    """The credential the two variables give, None unless both are set."""
    username, password = os.environ.get(username_var), os.environ.get(password_var)
    if not username or password is None:
        return None
    return Credential(username, password)


def _parse(text: str, path: Path) -> Credential:
    username, sep, password = text.partition(":")
    if not sep or not username or not password:
        raise ValueError(f"{path} holds no `user:password` line")
    return Credential(username, password)
