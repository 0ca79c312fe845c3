"""Who a btcflow command is on the MLflow server btcflow runs, and a refusal told in one line.

The server requires a user and a password (services.mlflow_auth). MLflow's client reads them itself from
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; when those are unset and the command talks to the
server of this data dir, `use_kept_credential` sets them from the credential the server's start kept for
the role the command needs (`trainer`: train, promote, history, monitor; `reader`: the gateway). Never
from argv, never shown. No mlflow import: the gateway calls it too.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.credentials import from_environment, read_credential
from core.errors import AccessRefused, BadInput
from core.secrets import mask_uri

USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"
ROLES = ("trainer", "reader")


def credentials_dir(data_dir: Path) -> Path:
    """Where the tracking server of `data_dir` keeps its credentials (services.mlflow_auth writes them)."""
    return data_dir / "tracking" / "credentials"


def use_kept_credential(tracking_uri: str, server_uri: str, data_dir: Path, role: str) -> str | None:
    """The user this process calls the tracking server as; None: anonymous (or not a server).

    The environment wins. Else, when `tracking_uri` is `server_uri` (the server this data dir runs) and its
    start kept a credential for `role`, that one goes into the environment for MLflow's client (and for
    the processes this one starts, such as the gateway's workers).
    """
    found = from_environment(USERNAME_VAR, PASSWORD_VAR)
    if found is not None:
        return found.username
    if role not in ROLES:
        raise ValueError(f"no role {role!r}")
    if _normal(tracking_uri) != _normal(server_uri):
        return None
    try:
        kept = read_credential(credentials_dir(data_dir) / role)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if kept is None:
        return None
    os.environ[USERNAME_VAR] = kept.username
    os.environ[PASSWORD_VAR] = kept.password
    return kept.username


def refusal(exc: BaseException, server: str, doing: str = "") -> AccessRefused | None:
    """An MLflow error that is the server refusing the caller, as one line naming the user and the server;
    None for any other error. 401: no credential or a wrong one; 403: the user's role may not."""
    code = getattr(exc, "error_code", None)
    status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(str(code))
    if status is None:
        return None
    user = os.environ.get(USERNAME_VAR)
    who = f"user {user!r}" if user else "an anonymous caller (no MLFLOW_TRACKING_USERNAME/PASSWORD)"
    where = mask_uri(server)
    if status == 401:
        return AccessRefused(f"MLflow server {where} refused {who}: wrong or missing password (HTTP 401)")
    what = doing or _endpoint(str(getattr(exc, "message", exc)))
    return AccessRefused(
        f"MLflow server {where} refused {who} {what}: the user's role does not allow it (HTTP 403)"
    )


def _endpoint(message: str) -> str:
    """`the call runs/create` out of MLflow's "API request to endpoint /api/2.0/mlflow/runs/create failed"."""
    marker = "endpoint "
    if marker in message:
        path = message.split(marker, 1)[1].split(" ", 1)[0]
        return f"the call {path.rpartition('/mlflow/')[2] or path}"
    return "a call"


def _normal(uri: str) -> str:
    uri = uri.strip().rstrip("/").lower()
    return uri.replace("://localhost", "://127.0.0.1")
