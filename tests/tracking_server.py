"""Session fixture: a real MLflow tracking server on its own PostgreSQL cluster, artifacts proxied."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.mlflow_server import TrackingServer
from services.processes import free_port


def service_dir(prefix: str) -> Path:
    """A folder of its own under /tmp, mode 0755: PostgreSQL runs as the `postgres` user when the tests
    run as root, and that user cannot enter pytest's tmp folders (/tmp/pytest-of-root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def tracking_server() -> Iterator[TrackingServer]:
    """`mlflow server` (1 worker) on its own PostgreSQL, free ports, a folder under /tmp; once per session.

    Tests use `.uri`; one may `.stop()` it and `.start(timeout_s=...)` it again, and restarts it before
    it ends if it stopped it. Everything is stopped and removed at the end of the session.
    """
    home = service_dir("btcflow-tracking-")
    server = TrackingServer(home, port=free_port(), postgres_port=free_port(), workers=1)
    try:
        server.start(timeout_s=120)
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
