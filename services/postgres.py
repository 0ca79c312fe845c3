"""btcflow's own PostgreSQL cluster, the tracking server's backend store: never the system's cluster.

The cluster lives in one folder (`<data dir>/postgres`, its own log `postgres.log` inside) and listens
on one address only (127.0.0.1 unless told otherwise), on its own port. It holds one role, `btcflow`,
whose password is generated at the first start and kept 0600 beside the other tracking files, and two
databases: `mlflow` (runs and the registry) and `mlflow_auth` (the server's users and permissions). Password
authentication (scram-sha-256) rather than trust: with trust any local user could rewrite the
registry; the password never appears on a command line (MLflow gets it through its environment).

PostgreSQL refuses to run as root: when btcflow runs as root, `initdb`, `pg_ctl` and so the server run
as the `postgres` system user the Debian package creates (`runuser -u postgres --`), who owns the
cluster folder and must be able to enter every folder above it.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import stat
import subprocess
import tempfile
from pathlib import Path

from core.errors import ServiceDidNotStart
from core.secrets import kept_secret
from services.processes import Supervised, port_open

log = logging.getLogger("services")

HOST = "127.0.0.1"  # BTCFLOW_POSTGRES_HOST's default
ROLE = "btcflow"
DATABASE = "mlflow"  # the tracking store
AUTH_DATABASE = "mlflow_auth"  # MLflow's users and permissions (services.mlflow_auth)
SYSTEM_USER = "postgres"  # the Debian package's user, who runs the cluster when btcflow is root
_SOCKET_PATH_MAX = 100  # a unix socket path longer than ~107 bytes cannot be bound: then TCP only


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps each major version apart)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise ServiceDidNotStart(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run make setup "
            "(apt-get install postgresql), or start with --backend-store-uri on a database of your own"
        )
    return found[-1].parent


class PostgresCluster:
    """One PostgreSQL cluster in `home` on `host`:`port`, started and stopped with `pg_ctl -w`."""

    def __init__(
        self, home: Path, port: int, secret_dir: Path, bin_dir: Path | None = None, host: str = HOST
    ) -> None:
        self.home = home.absolute()
        self.host = host
        self.port = port
        self.secret_dir = secret_dir.absolute()
        self._bin_dir = bin_dir
        # the postmaster's pid file (its pid on the first line); its command line names the folder
        self.process = Supervised(
            name="postgres",
            address=f"{host}:{port}",
            host=host,
            port=port,
            pid_file=self.home / "postmaster.pid",
            log_file=self.home / "postgres.log",
            marker=str(self.home).encode(),
        )

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def password_file(self) -> Path:
        return self.secret_dir / "postgres.password"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI MLflow's store uses (it carries the password: keep it off command lines)."""
        return self.uri_for(DATABASE)

    def uri_for(self, database: str) -> str:
        """The SQLAlchemy URI of one of the cluster's databases (with the password: off command lines)."""
        return f"postgresql+psycopg2://{ROLE}:{self.password()}@{self.host}:{self.port}/{database}"

    def password(self) -> str:
        """The role's password, generated once (0600) and kept, so a restart finds the same one."""
        return kept_secret(self.password_file, lambda: secrets.token_urlsafe(24))

    def start(self, timeout_s: float = 60.0) -> str:
        """Create the cluster at the first start, start it unless it runs, make sure the databases exist.

        Idempotent; returns the SQLAlchemy URI of the `mlflow` database.
        """
        if self.process.pid is None:
            if port_open(self.host, self.port):
                raise ServiceDidNotStart(
                    f"PostgreSQL port {self.port} on {self.host} is taken by another process "
                    "(set BTCFLOW_POSTGRES_PORT to another one)"
                )
            if not (self.home / "PG_VERSION").exists():
                self._init()
            self._pg_ctl_start(timeout_s)
        self._create_database(timeout_s)
        return self.uri

    def stop(self, timeout_s: float = 30.0) -> bool:
        """`pg_ctl stop -m fast` (disconnect clients, checkpoint, exit); False if it was not running."""
        if self.process.pid is None:
            return False
        proc = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-D",
                str(self.home),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout_s)),
            ]
        )
        if proc.returncode != 0 and self.process.pid is not None:
            raise ServiceDidNotStart(f"PostgreSQL in {self.home} did not stop: {_tail(proc.stdout)}")
        return True

    # -- internals ------------------------------------------------------------------------------------

    def _user(self) -> pwd.struct_passwd | None:
        """The system user who runs the cluster when btcflow is root; None: btcflow's own user."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ServiceDidNotStart(
                f"PostgreSQL refuses to run as root and there is no '{SYSTEM_USER}' user "
                "(apt-get install postgresql creates it)"
            ) from None

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        user = self._user()
        prefix = ["runuser", "-u", user.pw_name, "--"] if user else []
        return subprocess.run(
            prefix + cmd,
            cwd=self.home if self.home.is_dir() else None,  # a cwd the postgres user may not enter warns
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the postmaster pg_ctl leaves behind never gets the caller's Ctrl-C
            check=False,
        )

    def _check_traversable(self, user: pwd.struct_passwd) -> None:
        """Every folder above the cluster must let the postgres user through: say which one does not."""
        groups = {user.pw_gid, *(g for g in os.getgrouplist(user.pw_name, user.pw_gid))}
        for parent in reversed(self.home.parents):
            st = parent.stat()
            bit = (
                stat.S_IXUSR
                if st.st_uid == user.pw_uid
                else stat.S_IXGRP
                if st.st_gid in groups
                else stat.S_IXOTH
            )
            if not st.st_mode & bit:
                raise ServiceDidNotStart(
                    f"PostgreSQL runs as user {user.pw_name}, who cannot enter {parent} "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod o+x {parent}, or set BTCFLOW_DATA_DIR "
                    "to a folder outside it"
                )

    def _init(self) -> None:
        user = self._user()
        if user:
            self._check_traversable(user)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if any(self.home.iterdir()):
            raise ServiceDidNotStart(
                f"{self.home} is not empty and holds no PostgreSQL cluster: remove it to start afresh"
            )
        password = self.password()
        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.home.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if user:
                os.chown(self.home, user.pw_uid, user.pw_gid)
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            self.home.chmod(0o700)
            proc = self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.home),
                    "-U",
                    ROLE,
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                ]
            )
        finally:
            os.unlink(pwfile)
        if proc.returncode != 0:
            raise ServiceDidNotStart(f"initdb of {self.home} failed: {_tail(proc.stdout)}")
        log.info("PostgreSQL cluster created in %s", self.home)

    def _pg_ctl_start(self, timeout_s: float) -> None:
        socket_dir = str(self.home) if len(f"{self.home}/.s.PGSQL.{self.port}") < _SOCKET_PATH_MAX else ""
        options = f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories='{socket_dir}'"
        proc = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(self.home),
                "-l",
                str(self.process.log_file),
                "-w",
                "-t",
                str(int(max(timeout_s, 1))),
                "-o",
                options,
            ]
        )
        if proc.returncode != 0 or self.process.pid is None:
            logged = self.process.log_file.exists()
            error = self.process.last_error(("ERROR", "FATAL", "PANIC")) if logged else ""
            raise ServiceDidNotStart(
                f"PostgreSQL did not start on {self.process.address}: {error or _tail(proc.stdout)} "
                f"(log: {self.process.log_file})"
            )

    def _create_database(self, timeout_s: float) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(
                host=self.host,
                port=self.port,
                user=ROLE,
                password=self.password(),
                dbname="postgres",
                connect_timeout=max(1, int(timeout_s)),
            )
        except psycopg2.Error as exc:
            raise ServiceDidNotStart(
                f"PostgreSQL on {self.process.address} refuses btcflow: {str(exc).strip()} "
                f"(log: {self.process.log_file})"
            ) from None
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                for database in (DATABASE, AUTH_DATABASE):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if cur.fetchone() is None:
                        cur.execute(f"CREATE DATABASE {database} OWNER {ROLE}")
        finally:
            conn.close()


def _tail(output: str | None) -> str:
    lines = [ln.strip() for ln in (output or "").splitlines() if ln.strip()]
    return (lines or ["no output"])[-1][:300]
