"""The MLflow tracking server btcflow runs: `mlflow server` on 127.0.0.1 (or the host's address it is
given), PostgreSQL behind it, artifacts proxied, so a client (training, promotion, the gateway) needs only
its http address and no file of it: on hosts that share nothing, too.

Authentication is always on: `--app-name basic-auth`, its users and roles in services.mlflow_auth.

Files, all under the data dir: `tracking/` (the server's pid file and log; 0600: the webhook secret key,
the PostgreSQL password, `auth.ini`, the auth app's key and `credentials/` admin, trainer, reader),
`postgres/` (the cluster, with its own `postgres.log`) and `mlflow-artifacts/` (every run's artifacts,
written by the server only).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ServiceDidNotStart
from core.secrets import kept_secret
from services import mlflow_auth
from services.postgres import AUTH_DATABASE, PostgresCluster
from services.processes import ServiceState, Supervised, alive, port_open

log = logging.getLogger("services")

HOST = "127.0.0.1"  # BTCFLOW_TRACKING_HOST's and BTCFLOW_POSTGRES_HOST's default
LOOPBACK_NAMES = ("localhost", "127.0.0.1")  # MLflow's own host check lets these through


class TrackingServerSettings(BaseSettings):
    """What `btcflow tracking` and the tests read (environment, prefix BTCFLOW_)."""

    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path("data"), description="Home of tracking/, postgres/ and mlflow-artifacts/ (the server's files)."
    )
    tracking_host: str = Field(
        HOST,
        description="Address the MLflow server binds and clients reach it at (the uri it prints). On "
        "hosts that share nothing, its host's own address.",
    )
    tracking_port: int = Field(5000, ge=1, le=65535, description="Port of the MLflow server.")
    postgres_host: str = Field(
        HOST,
        description="Address btcflow's own PostgreSQL binds, and the MLflow server reaches it at.",
    )
    postgres_port: int = Field(
        5433,
        ge=1,
        le=65535,
        description="Port of btcflow's own PostgreSQL (5432 is the system's).",
    )
    tracking_workers: int = Field(
        2, ge=1, description="uvicorn worker processes of the server (each one loads MLflow: ~250 MB)."
    )
    tracking_backend_store_uri: str | None = Field(
        None,
        description="A database of your own (SQLAlchemy URI) for the server: btcflow runs no PostgreSQL.",
    )

    @property
    def uri(self) -> str:
        """The server's http address: what MLFLOW_TRACKING_URI points clients at."""
        return f"http://{self.tracking_host}:{self.tracking_port}"


@dataclass(frozen=True)
class TrackingStatus:
    server: ServiceState  # running: the server lives and /health answers
    postgres: ServiceState | None  # None: the server uses a database btcflow does not run
    artifacts: Path
    admin_file: Path  # the admin's kept credential

    @property
    def uri(self) -> str:
        return self.server.address

    @property
    def running(self) -> bool:
        return self.server.running

    @property
    def all_running(self) -> bool:
        return self.running and (self.postgres is None or self.postgres.running)

    def describe(self) -> str:
        lines = [f"MLflow tracking server, artifacts in {self.artifacts}"]
        if self.postgres is None:
            lines.append("  postgres   not used (--backend-store-uri: a database of your own)")
        else:
            lines.append(self.postgres.line(23))
        lines.append(self.server.line(23))
        lines.append(f"  authentication: basic-auth (admin credential in {self.admin_file})")
        return "\n".join(lines)


class TrackingServer:
    """`mlflow server` with proxied artifacts on `host`:`port`, on btcflow's PostgreSQL (on
    `postgres_host`) unless given a `backend_store_uri`; known by its pid file, so any process can start,
    stop or inspect it."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 5000,
        postgres_port: int = 5433,
        workers: int = 2,
        backend_store_uri: str | None = None,
        *,
        host: str = HOST,
        postgres_host: str = HOST,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.host = host
        self.port = port
        self.workers = workers
        self.backend_store_uri = backend_store_uri
        self.home = self.data_dir / "tracking"
        self.artifacts = self.data_dir / "mlflow-artifacts"
        self.process = Supervised(
            name="mlflow",
            address=self.uri,
            host=host,
            port=port,
            pid_file=self.home / "server.pid",
            log_file=self.home / "server.log",
            marker=str(self.artifacts).encode(),  # in the server's command line: one folder per data dir
            probe=f"{self.uri}/health",
        )
        self.postgres = (
            None
            if backend_store_uri
            else PostgresCluster(self.data_dir / "postgres", postgres_port, self.home, host=postgres_host)
        )

    @classmethod
    def from_settings(
        cls, settings: TrackingServerSettings, backend_store_uri: str | None = None
    ) -> TrackingServer:
        return cls(
            settings.data_dir,
            settings.tracking_port,
            settings.postgres_port,
            settings.tracking_workers,
            backend_store_uri or settings.tracking_backend_store_uri,
            host=settings.tracking_host,
            postgres_host=settings.postgres_host,
        )

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def key_file(self) -> Path:
        return self.home / "webhook-secret.key"

    @property
    def _external_marker(self) -> Path:
        return self.home / "external-store"

    @property
    def admin_file(self) -> Path:
        return mlflow_auth.credentials_dir(self.home) / mlflow_auth.ADMIN

    def auth_admin(self) -> mlflow_auth.AuthAdmin:
        """The server's users and roles, through its REST API as the admin kept in this data dir."""
        return mlflow_auth.AuthAdmin(self.uri, mlflow_auth.admin_credential(self.home))

    def start(self, timeout_s: float = 120.0) -> str:
        """Start PostgreSQL and the server, each unless it runs (idempotent), then make btcflow's roles and
        service users (idempotent too); the http uri once /health answers. ServiceDidNotStart (exit 3) names
        the log and its last error line otherwise."""
        deadline = time.monotonic() + timeout_s
        store_uri = self.postgres.start(timeout_s) if self.postgres else self.backend_store_uri
        assert store_uri is not None
        # a database of the user's own keeps the auth tables too (btcflow cannot create another there)
        auth_uri = self.postgres.uri_for(AUTH_DATABASE) if self.postgres else store_uri
        self.home.mkdir(parents=True, exist_ok=True)
        if self.postgres is None:  # so a later `status` does not count btcflow's PostgreSQL
            self._external_marker.write_text("the server uses a database of the user's own\n")
        else:
            self._external_marker.unlink(missing_ok=True)
        pid = self.process.pid
        if pid is None:
            if port_open(self.host, self.port):
                raise ServiceDidNotStart(
                    f"port {self.port} on {self.host} is taken by another process (set BTCFLOW_TRACKING_PORT)"
                )
            self.artifacts.mkdir(parents=True, exist_ok=True)
            config = mlflow_auth.write_config(self.home, auth_uri)
            proc = self.process.launch(self._command(), env=self._environment(store_uri, config))
            pid = proc.pid
        self._wait_healthy(pid, deadline)
        self.auth_admin().provision(self.home)
        return self.uri

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server (SIGTERM, which it passes on to uvicorn), then PostgreSQL; False if neither ran."""
        stopped = self._stop_server(timeout_s)
        if self.postgres is not None:
            stopped = self.postgres.stop(timeout_s) or stopped
        return stopped

    def status(self) -> TrackingStatus:
        server = self.process.state()
        external = self.postgres is None or (server.pid is not None and self._external_marker.exists())
        postgres = None if external or self.postgres is None else self.postgres.process.state()
        return TrackingStatus(server, postgres, self.artifacts, self.admin_file)

    # -- internals ------------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts),
            # MLflow's users and permissions (services.mlflow_auth)
            "--app-name",
            "basic-auth",
        ]
        if self.host not in LOOPBACK_NAMES:  # clients name the server by this address: let it through
            # MLflow's check of the Host header (against DNS rebinding), and the UI's own origin
            hosts = [*LOOPBACK_NAMES, *(f"{h}:*" for h in LOOPBACK_NAMES), self.host, f"{self.host}:*"]
            command += ["--allowed-hosts", ",".join(hosts)]
            command += ["--cors-allowed-origins", f"http://{self.host}:{self.port}"]
        return command

    def _environment(self, store_uri: str, auth_config: Path) -> dict[str, str]:
        env = dict(os.environ)
        client = (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        )
        # a server is a store, not a client; and its admin is the one auth.ini names
        for name in (*client, "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
            env.pop(name, None)
        env.update(
            {
                # the store URI carries a password: in the environment (mlflow server reads it there), never
                # on the command line everyone's `ps` shows
                "MLFLOW_BACKEND_STORE_URI": store_uri,
                # registry webhooks go to the gateway on a loopback or private address over http, and a
                # new one is seen at once
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                # webhook secrets are stored encrypted with this key: the same one after every restart
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": self._webhook_key(),
                # the job runner (GenAI judges, scorers) is a separate huey consumer btcflow has no use for
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # basic-auth: its config (0600: the permission database's password, the admin's) and the
                # CSRF key every worker and restart shares
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_auth.flask_secret(self.home),
            }
        )
        return env

    def _webhook_key(self) -> str:
        """A Fernet key (32 random bytes, url-safe base64) generated once, kept 0600."""
        return kept_secret(self.key_file, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode())

    def _wait_healthy(self, pid: int, deadline: float) -> None:
        while not self.process.answers():
            if not alive(pid):
                self.process.pid_file.unlink(missing_ok=True)
                raise ServiceDidNotStart(
                    f"MLflow server exited at start: {self._last_error()} (log: {self.process.log_file})"
                )
            if time.monotonic() > deadline:
                raise ServiceDidNotStart(
                    f"MLflow server at {self.uri} did not answer /health in time: {self._last_error()} "
                    f"(log: {self.process.log_file})"
                )
            time.sleep(0.3)

    def _last_error(self) -> str:
        return self.process.last_error(("ERROR", "Error", "Exception", "FATAL"))

    def _stop_server(self, timeout_s: float) -> bool:
        """SIGTERM the `mlflow server` process; whatever it leaves behind (uvicorn and its workers, if it
        was SIGKILLed) is killed too, so no orphan keeps the port."""
        import psutil

        pid = self.process.pid
        children: list[psutil.Process] = []
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(pid).children(recursive=True)
        stopped = self.process.stop(timeout_s)
        _, left = psutil.wait_procs(children, timeout=timeout_s)
        for child in left:
            log.warning("MLflow server process %d outlived the server: SIGKILL", child.pid)
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(left, timeout=5)
        return stopped
