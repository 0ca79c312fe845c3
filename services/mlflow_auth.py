"""MLflow's own authentication on the tracking server btcflow runs (`mlflow server --app-name basic-auth`).

Every request needs a user and a password (HTTP basic auth); an anonymous one is answered 401. What a user
may do comes from the roles btcflow creates, idempotently, at every start:

- `trainer`: create experiments (the `btcflow` one) and runs in them, create registered models
  (btc-close, btc-high-low, btc-trend) and their versions, move stages and aliases;
- `reader`: read experiments, runs and the registry, download artifacts (the gateway, the monitor).

A user with no role can read nothing and change nothing that exists: `default_permission = NO_PERMISSIONS`.
One gap is MLflow's: with workspaces off (btcflow's server), its basic-auth lets *every* authenticated user
create a new experiment or registered model (its create check passes whenever workspaces are off; a role
cannot deny it without denying the reads too), of which that user becomes the manager. It cannot write to
btcflow's own. Workspaces on (`--enable-workspaces`) would close it, but there a read of a model that does
not exist yet is answered 403 instead of 404, which the gateway and promotion read as "none yet".

Files, under `<data dir>/tracking/`, all 0600: `auth.ini` (MLFLOW_AUTH_CONFIG_PATH: the permission
database's URI with its password, and the admin's), `flask-secret.key` (CSRF key of the auth app),
`credentials/admin`, `credentials/trainer`, `credentials/reader` (`user:password`, see core.credentials).
The admin is made by MLflow at the first start from the ini; btcflow's two service users (`btcflow-trainer`,
`btcflow-reader`) by `provision` right after. Other users: `add_user` / `remove_user` (`btcflow tracking
user ...`), with the admin's credential.

The permission database is a second database, `mlflow_auth`, in btcflow's PostgreSQL (not the `mlflow` one):
MLflow migrates the two with two alembic chains of their own, and users can be reset or backed up without
touching runs. With a database of the user's own (`--backend-store-uri`), the auth tables go in that same
database (btcflow cannot create another there; MLflow keeps their own version table, `alembic_version_auth`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.credentials import Credential, kept_credential, new_password, read_credential
from core.errors import AccessRefused, BadInput, Unavailable
from core.secrets import kept_secret

ADMIN = "admin"
WORKSPACE = "default"  # where roles live when workspaces are off: every experiment and model
CREDENTIALS = "credentials"  # folder of the kept credentials, under <data dir>/tracking

# role -> (resource type, pattern, permission): MLflow's own grant vocabulary (AuthServiceClient)
ROLES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "trainer": (
        ("experiment", "*", "EDIT"),  # runs, metrics, artifacts
        ("registered_model", "*", "EDIT"),  # versions, stages, aliases
    ),
    "reader": (
        ("experiment", "*", "READ"),
        ("registered_model", "*", "READ"),
    ),
}
AUTH_CACHE_TTL_S = 30  # how long a worker trusts a password it checked
SERVICE_USERS = {"trainer": "btcflow-trainer", "reader": "btcflow-reader"}  # made at every start


def credentials_dir(home: Path) -> Path:
    """Where the kept credentials of a tracking server whose files are in `home` (<data dir>/tracking) are."""
    return home / CREDENTIALS


def admin_credential(home: Path) -> Credential:
    return kept_credential(credentials_dir(home) / ADMIN, ADMIN)


def flask_secret(home: Path) -> str:
    """The auth app's CSRF key: generated once, the same for every worker and restart."""
    return kept_secret(home / "flask-secret.key", new_password)


def write_config(home: Path, database_uri: str) -> Path:
    """`auth.ini` for MLFLOW_AUTH_CONFIG_PATH, 0600 from its first byte, replaced whole."""
    admin = admin_credential(home)
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin.username}\n"
        f"admin_password = {admin.password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # a password check is PBKDF2 (~0.3 s on 2 cores): without the cache every request pays it. A
        # removed user or changed password still passes on the *other* workers for up to this long.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    path = home / "auth.ini"
    fd, tmp = tempfile.mkstemp(prefix=".auth.ini.", dir=home)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text.replace("%", "%%"))  # configparser interpolates '%'
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]
    admin: bool = False


class AuthAdmin:
    """The server's users and roles, managed over its REST API with the admin's credential."""

    def __init__(self, uri: str, admin: Credential, timeout_s: float = 30.0) -> None:
        self.uri = uri.rstrip("/")
        self.admin = admin
        self.timeout_s = timeout_s

    # -- what btcflow makes at each start -----------------------------------------------------------

    def provision(self, home: Path) -> dict[str, Credential]:
        """The roles and their grants, and one service user per role with its kept credential (idempotent).

        Returns role -> the service user's credential."""
        role_ids = self.ensure_roles()
        made: dict[str, Credential] = {}
        for role, username in SERVICE_USERS.items():
            credential = kept_credential(credentials_dir(home) / role, username)
            self._ensure_user(credential)
            self._assign(credential.username, role_ids[role])
            made[role] = credential
        return made

    def ensure_roles(self) -> dict[str, int]:
        """Every role of ROLES with exactly its grants (one missing is added; none is removed)."""
        existing = {r["name"]: int(r["id"]) for r in self._roles()}
        ids: dict[str, int] = {}
        for name, grants in ROLES.items():
            role_id = existing.get(name)
            if role_id is None:
                answer = self._call(
                    "POST", "/api/3.0/mlflow/roles/create", json={"workspace": WORKSPACE, "name": name}
                )
                role_id = int(answer["role"]["id"])
            have = {
                (p["resource_type"], p["resource_pattern"], p["permission"])
                for p in self._call(
                    "GET", "/api/3.0/mlflow/roles/permissions/list", params={"role_id": role_id}
                )["role_permissions"]
            }
            for resource_type, pattern, permission in grants:
                if (resource_type, pattern, permission) not in have:
                    self._call(
                        "POST",
                        "/api/3.0/mlflow/roles/permissions/add",
                        json={
                            "role_id": role_id,
                            "resource_type": resource_type,
                            "resource_pattern": pattern,
                            "permission": permission,
                        },
                    )
            ids[name] = role_id
        return ids

    # -- users ----------------------------------------------------------------------------------------

    def add_user(self, username: str, role: str) -> Credential:
        """A new user with a generated password and `role`; BadInput if the name is taken."""
        if role not in ROLES:
            raise BadInput(f"no role {role!r}: one of {', '.join(ROLES)}")
        role_ids = self.ensure_roles()
        credential = Credential(username, new_password())
        status, _ = self._send(
            "POST",
            "/api/2.0/mlflow/users/create",
            json={"username": username, "password": credential.password},
        )
        if status == 400 and self._exists(username):
            raise BadInput(f"user {username!r} exists already on {self.uri}")
        if status != 200:
            raise BadInput(f"MLflow server {self.uri} did not create user {username!r} (HTTP {status})")
        self._assign(username, role_ids[role])
        return credential

    def users(self) -> list[User]:
        found = self._call("GET", "/api/2.0/mlflow/users/list").get("users", [])
        users = []
        for u in sorted(found, key=lambda u: u["username"]):
            roles = self._call("GET", "/api/3.0/mlflow/users/roles/list", params={"username": u["username"]})
            # not MLflow's own per-user role (`__user_<id>__`: the grants on what the user created)
            names = tuple(sorted(r["name"] for r in roles.get("roles", []) if not r["name"].startswith("__")))
            users.append(User(u["username"], names, bool(u.get("is_admin"))))
        return users

    def remove_user(self, username: str) -> None:
        if username == self.admin.username:
            raise BadInput(f"{username!r} is the server's admin: btcflow does not remove it")
        if not self._exists(username):
            raise BadInput(f"no user {username!r} on {self.uri}")
        self._call("DELETE", "/api/2.0/mlflow/users/delete", json={"username": username})

    # -- internals ------------------------------------------------------------------------------------

    def _roles(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/3.0/mlflow/roles/list", params={"workspace": WORKSPACE}).get(
            "roles", []
        )

    def _exists(self, username: str) -> bool:
        status, _ = self._send("GET", "/api/2.0/mlflow/users/get", params={"username": username})
        return status == 200

    def _ensure_user(self, credential: Credential) -> None:
        """Create it with the kept password, or set that one again (a reset database, a restored file)."""
        body = {"username": credential.username, "password": credential.password}
        status, _ = self._send("POST", "/api/2.0/mlflow/users/create", json=body)
        if status != 200:
            self._call("PATCH", "/api/2.0/mlflow/users/update-password", json=body)

    def _assign(self, username: str, role_id: int) -> None:
        roles = self._call("GET", "/api/3.0/mlflow/users/roles/list", params={"username": username})
        if all(int(r["id"]) != role_id for r in roles.get("roles", [])):
            self._call(
                "POST", "/api/3.0/mlflow/roles/assign", json={"username": username, "role_id": role_id}
            )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body = self._send(method, path, **kwargs)
        if status in (401, 403):
            raise AccessRefused(
                f"MLflow server {self.uri} refused its admin {self.admin.username!r} (HTTP {status}): the "
                f"password kept in credentials/{ADMIN} is not the one the server knows"
            )
        if status != 200:
            raise Unavailable(
                f"MLflow server {self.uri}: {method} {path} answered HTTP {status}: {body[:200]}"
            )
        import json

        return json.loads(body) if body.strip() else {}

    def _send(self, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
        import httpx

        try:
            answer = httpx.request(
                method,
                f"{self.uri}{path}",
                auth=(self.admin.username, self.admin.password),
                timeout=self.timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"MLflow server {self.uri} unreachable: {exc}") from None
        return answer.status_code, answer.text


def service_credentials(home: Path) -> Iterator[tuple[str, Credential]]:
    """The kept credentials found in `home`'s credentials folder: (role or 'admin', credential)."""
    for name in (ADMIN, *SERVICE_USERS):
        found = read_credential(credentials_dir(home) / name)
        if found is not None:
            yield name, found
