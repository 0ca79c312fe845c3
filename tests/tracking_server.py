"""Session fixture: a real MLflow tracking server on its own PostgreSQL cluster, artifacts proxied, MLflow's
basic-auth on (every request needs a user)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.access import PASSWORD_VAR, USERNAME_VAR
from core.credentials import Credential, read_credential
from services.mlflow_server import TrackingServer
from services.processes import free_port


def service_dir(prefix: str) -> Path:
    """A folder of its own under /tmp, mode 0755: PostgreSQL runs as the `postgres` user when the tests
    run as root, and that user cannot enter pytest's tmp folders (/tmp/pytest-of-root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def credential(server: TrackingServer, role: str) -> Credential:
    """The kept credential of the server's `role` service user (trainer, reader) or of its admin."""
    found = read_credential(server.home / "credentials" / role)
    assert found is not None, f"the server's start kept no {role} credential"
    return found


def as_user(monkeypatch: pytest.MonkeyPatch, who: Credential) -> None:
    """This test calls the server (MLflow's client, and the commands it starts) as `who`."""
    monkeypatch.setenv(USERNAME_VAR, who.username)
    monkeypatch.setenv(PASSWORD_VAR, who.password)


@pytest.fixture(scope="session")
def tracking_server() -> Iterator[TrackingServer]:
    """`mlflow server` (1 worker) on its own PostgreSQL, free ports, a folder under /tmp; once per session.

    Tests use `.uri`; one may `.stop()` it and `.start(timeout_s=...)` it again, and restarts it before
    it ends if it stopped it. Everything is stopped and removed at the end of the session.

    While it runs, the session calls it as its trainer (MLFLOW_TRACKING_USERNAME/PASSWORD, which MLflow's
    client and every command a test starts read): the role btcflow's training and promotion use. A test
    that needs another user says so with `as_user`.
    """
    home = service_dir("btcflow-tracking-")
    server = TrackingServer(home, port=free_port(), postgres_port=free_port(), workers=1)
    with pytest.MonkeyPatch.context() as session_env:
        try:
            server.start(timeout_s=120)
            as_user(session_env, credential(server, "trainer"))
            yield server
        finally:
            server.stop()
            shutil.rmtree(home, ignore_errors=True)
