"""A Spark standalone cluster from pyspark's own distribution: a master, N workers and the history
server, each one JVM started by `<pyspark>/bin/spark-class` and known by its pid file. All of them bind
one host's address (127.0.0.1 unless told otherwise); on hosts that share nothing, the master's host runs
the master and the history server (no workers), and each other host runs workers that join it.

Nothing is downloaded and nothing is written into the pyspark install: `<home>` (by default
`<BTCFLOW_DATA_DIR>/spark`) holds `conf/spark-defaults.conf` (written at every start), `logs/<daemon>.log`,
`pids/<daemon>.pid`, `work/worker-<i>/` (the executors' folders), `local/` (shuffle and spill files)
and `cluster.json` (the workers, host and master the last start ran, so `status` knows them).
Training writes its event logs to the folder the history server reads (`event_uri`: local or HDFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import jvm
from core.errors import BadInput, ServiceDidNotStart
from services.processes import ServiceState, Supervised, http_ok, port_open, stop_pids
from services.spark.settings import HOST, SparkSettings, event_log_uri, make_event_dir, memory_mb


class SparkUnavailable(ServiceDidNotStart):
    """A Spark daemon (master, worker, history server) did not start or does not answer."""


MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
HISTORY = "org.apache.spark.deploy.history.HistoryServer"
ANY_DAEMON = b"org.apache.spark.deploy"  # the marker every daemon's command line carries

SPARK_DEFAULTS = """\
# Written by btcflow at every `btcflow spark start`; edit services/spark/cluster.py instead.
spark.history.fs.logDirectory {event_uri}
spark.history.ui.port {history_port}
# the history server looks for new event logs this often: a run shows up seconds after it ends
spark.history.fs.update.interval 2s
# event logs on HDFS: DataNodes are reached by the names they registered with (a host each, elsewhere)
spark.hadoop.dfs.client.use.datanode.hostname true
# no REST submission server (fixed port 6066): training connects as a client through spark://
spark.master.rest.enabled false
# finished applications' folders (jars, executor stdout/stderr) in work/ are removed after 7 days
spark.worker.cleanup.enabled true
spark.worker.cleanup.appDataTtl 604800
"""


def spark_home() -> Path:
    """pyspark's own distribution: bin/spark-class and jars/ come with the pip package."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterStatus:
    home: Path
    daemons: tuple[ServiceState, ...]

    @property
    def running(self) -> bool:
        """Every daemon runs."""
        return all(d.running for d in self.daemons)

    def describe(self) -> str:
        up = sum(d.running for d in self.daemons)
        lines = [f"Spark standalone cluster in {self.home}: {up} of {len(self.daemons)} daemons running"]
        width = max(len(d.address) for d in self.daemons)
        lines.extend(d.line(width) for d in self.daemons)
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True)
class Daemon(Supervised):
    """One JVM of the cluster: its main class (the pid file's marker) and arguments."""

    main_class: str
    args: tuple[str, ...]

    @classmethod
    def of(
        cls,
        home: Path,
        name: str,
        main_class: str,
        args: tuple[str, ...],
        host: str,
        port: int,
        address: str,
    ) -> Daemon:
        """Daemon `name` (master, worker-<i>, history), answering on `host`:`port` once it serves (RPC
        for the master, the web UI for the others), with its log and pid file under `home`."""
        return cls(
            name=name,
            address=address,
            host=host,
            port=port,
            pid_file=home / "pids" / f"{name}.pid",
            log_file=home / "logs" / f"{name}.log",
            marker=main_class.encode(),
            main_class=main_class,
            args=args,
        )

    def failure(self, what: str) -> SparkUnavailable:
        return SparkUnavailable(f"Spark {self.name} {what}: {self.last_error()} (log: {self.log_file})")


class SparkCluster:
    """A standalone master, `workers` workers (`cores` and `memory` each) and the history server on
    `host`; with `join` (a master elsewhere), only the workers, registering with that master."""

    def __init__(
        self,
        home: Path,
        event_uri: str,
        *,
        workers: int = 1,
        cores: int = 2,
        memory: str = "2g",
        port: int = 7077,
        ui_port: int = 8080,
        worker_ui_port: int = 8081,
        history_port: int = 18080,
        daemon_memory: str = "512m",
        host: str = HOST,
        join: str | None = None,
    ) -> None:
        least = 1 if join else 0  # workers joining a master elsewhere are all this host runs
        if workers < least:
            raise BadInput(f"a Spark cluster needs {least} worker(s) or more here, not {workers}")
        if join is not None and not join.startswith("spark://"):
            raise BadInput(f"a master to join is spark://host:port, not {join!r}")
        memory_mb(memory, "worker memory")
        memory_mb(daemon_memory, "daemon memory")
        self.home = home.resolve()
        self.event_uri = event_uri
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.port = port
        self.ui_port = ui_port
        self.worker_ui_port = worker_ui_port
        self.history_port = history_port
        self.daemon_memory = daemon_memory
        self.host = host
        self.join = join

    @classmethod
    def from_settings(
        cls,
        settings: SparkSettings | None = None,
        *,
        workers: int | None = None,
        cores: int | None = None,
        memory: str | None = None,
        host: str | None = None,
        join: str | None = None,
    ) -> SparkCluster:
        """The cluster the settings describe; `workers`, `cores`, `memory`, `host`, `join` (the CLI's
        options) override."""
        s = settings or SparkSettings()
        worker_memory = memory or s.worker_memory
        if memory_mb(worker_memory, "worker memory") < memory_mb(s.executor_memory, "executor memory"):
            raise BadInput(
                f"a worker offering {worker_memory} cannot host an executor of {s.executor_memory} "
                "(BTCFLOW_SPARK_EXECUTOR_MEMORY): training would wait for resources forever"
            )
        return cls(
            s.home,
            event_log_uri(s.data_dir, s.event_dir),
            workers=s.workers if workers is None else workers,
            cores=cores or s.worker_cores,
            memory=worker_memory,
            port=s.port,
            ui_port=s.ui_port,
            worker_ui_port=s.worker_ui_port,
            history_port=s.history_port,
            daemon_memory=s.daemon_memory,
            host=host or s.host,
            join=join or s.join,
        )

    @property
    def master_url(self) -> str:
        """This host's master, or the one its workers join."""
        return self.join or f"spark://{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    @property
    def history_url(self) -> str:
        return f"http://{self.host}:{self.history_port}"

    @property
    def conf_file(self) -> Path:
        return self.home / "conf" / "spark-defaults.conf"

    @property
    def _record(self) -> Path:
        return self.home / "cluster.json"

    def master(self) -> Daemon:
        args = ("--host", self.host, "--port", str(self.port), "--webui-port", str(self.ui_port))
        address = f"{self.master_url} (web UI {self.ui_url})"
        return Daemon.of(self.home, "master", MASTER, args, self.host, self.port, address)

    def worker(self, i: int) -> Daemon:
        ui_port = self.worker_ui_port + i - 1
        args = (
            self.master_url,
            "--host",
            self.host,
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--webui-port",
            str(ui_port),
            "--work-dir",
            str(self.home / "work" / f"worker-{i}"),
        )
        address = f"http://{self.host}:{ui_port}"
        return Daemon.of(self.home, f"worker-{i}", WORKER, args, self.host, ui_port, address)

    def history(self) -> Daemon:
        return Daemon.of(self.home, "history", HISTORY, (), self.host, self.history_port, self.history_url)

    def daemons(self, workers: int | None = None) -> list[Daemon]:
        n = self.workers if workers is None else workers
        workers_ = [self.worker(i) for i in range(1, n + 1)]
        return workers_ if self.join else [self.master(), *workers_, self.history()]

    def recorded_workers(self) -> int | None:
        """How many workers the last start ran; None before the first start."""
        try:
            return int(json.loads(self._record.read_text())["workers"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def as_recorded(self) -> SparkCluster:
        """This home's cluster as the last start ran it (its host, and the master its workers joined)."""
        try:
            record = json.loads(self._record.read_text())
        except (FileNotFoundError, ValueError):
            return self
        if not isinstance(record, dict):
            return self
        return SparkCluster(
            self.home,
            self.event_uri,
            workers=max(self.workers, 1),
            cores=self.cores,
            memory=self.memory,
            port=self.port,
            ui_port=self.ui_port,
            worker_ui_port=self.worker_ui_port,
            history_port=self.history_port,
            daemon_memory=self.daemon_memory,
            host=str(record.get("host") or self.host),
            join=record.get("join") or None,
        )

    def start(self, timeout_s: float = 120.0) -> str:
        """Start every daemon that does not run (idempotent); the master URL once all workers are ALIVE.

        Daemons already running are left alone (a running worker keeps its cores and memory); workers
        beyond `workers` left by an earlier, bigger start are stopped. With `join`, only the workers.
        """
        self._prepare()
        extra = [self.worker(i).pid_file for i in range(self.workers + 1, (self.recorded_workers() or 0) + 1)]
        if extra:
            stop_pids(extra, 30.0, WORKER.encode(), "Spark worker")
        record = {"workers": self.workers, "host": self.host, "join": self.join}
        self._record.write_text(json.dumps(record) + "\n")
        started: dict[Daemon, subprocess.Popen[bytes]] = {}
        deadline = time.monotonic() + timeout_s
        try:
            if self.join is None:
                master, history = self.master(), self.history()
                for daemon in (master, history):
                    if daemon.pid is None:
                        started[daemon] = self._launch(daemon)
                # a worker that finds no master retries only after 5-15 s: start workers once it listens
                self._wait(
                    lambda: [] if port_open(self.host, self.port) else [master],
                    started,
                    deadline,
                    "did not listen",
                )
            for i in range(1, self.workers + 1):
                worker = self.worker(i)
                if worker.pid is None:
                    started[worker] = self._launch(worker)
            self._wait(self._unregistered_workers, started, deadline, "did not register with the master")
            if self.join is None:
                self._wait(
                    lambda: [] if self._history_answers() else [history], started, deadline, "did not answer"
                )
        except SparkUnavailable:
            stop_pids([d.pid_file for d in started], 30.0, ANY_DAEMON, "Spark daemon")
            raise
        return self.master_url

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every daemon of the home at once (SIGTERM, SIGKILL after `timeout_s`); False if none ran."""
        pid_files = sorted((self.home / "pids").glob("*.pid"))
        return stop_pids(pid_files, timeout_s, ANY_DAEMON, "Spark daemon")

    def status(self) -> ClusterStatus:
        """Every daemon of the last start (else of the settings), running or not."""
        cluster = self.as_recorded()
        return ClusterStatus(self.home, tuple(d.state() for d in cluster.daemons(self.recorded_workers())))

    def master_json(self) -> dict:
        """The master web UI's /json/: its workers with their state (ALIVE, DEAD), cores and memory."""
        import httpx

        response = httpx.get(f"{self.ui_url}/json/", timeout=2.0)
        response.raise_for_status()
        return dict(response.json())

    def _unregistered_workers(self) -> list[Daemon]:
        """Our workers the master does not list (by web UI address) as ALIVE; joining a master on another
        host, those whose own web UI names no master yet."""
        import httpx

        workers = [self.worker(i) for i in range(1, self.workers + 1)]
        if self.join:
            return [w for w in workers if not _registered(w)]
        try:
            listed = self.master_json().get("workers", [])
        except (httpx.HTTPError, ValueError):
            return workers
        alive = {w.get("webuiaddress") for w in listed if w.get("state") == "ALIVE"}
        return [w for w in workers if w.address not in alive]

    def _history_answers(self) -> bool:
        return http_ok(f"{self.history_url}/api/v1/applications")

    def _prepare(self) -> None:
        for folder in ("conf", "logs", "pids", "work", "local"):
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        if self.join is None:  # the history server's host reads the event logs
            make_event_dir(self.event_uri)
        self.conf_file.write_text(
            SPARK_DEFAULTS.format(event_uri=self.event_uri, history_port=self.history_port)
        )

    def _env(self) -> dict[str, str]:
        """Bind `host` only, keep every file under `home`, small daemon heaps; executors use our Python."""
        env = {k: v for k, v in os.environ.items() if k != "SPARK_ENV_LOADED"}
        env.update(
            SPARK_HOME=str(spark_home()),
            SPARK_CONF_DIR=str(self.home / "conf"),  # not <pyspark>/conf: no spark-env.sh from the install
            SPARK_LOCAL_IP=self.host,  # RPC and web UIs bind here, and the executors a worker starts
            SPARK_LOCAL_HOSTNAME=self.host,  # the name they go by: the address, not a reverse lookup of it
            SPARK_MASTER_HOST=self.host,
            SPARK_PUBLIC_DNS=self.host,  # the addresses the UIs link to
            SPARK_LOG_DIR=str(self.home / "logs"),
            SPARK_PID_DIR=str(self.home / "pids"),
            SPARK_WORKER_DIR=str(self.home / "work"),
            SPARK_LOCAL_DIRS=str(self.home / "local"),
            SPARK_DAEMON_MEMORY=self.daemon_memory,
            SPARK_DAEMON_JAVA_OPTS=jvm.with_extra_options(os.environ.get("SPARK_DAEMON_JAVA_OPTS", "")),
            PYSPARK_PYTHON=sys.executable,
        )
        return env

    def _launch(self, daemon: Daemon) -> subprocess.Popen[bytes]:
        for port in {daemon.port, self.ui_port} if daemon.main_class == MASTER else {daemon.port}:
            if port_open(self.host, port):
                raise SparkUnavailable(
                    f"cannot start the Spark {daemon.name}: port {port} on {self.host} is taken by another "
                    "process"
                )
        cmd = [str(spark_home() / "bin" / "spark-class"), daemon.main_class, *daemon.args]
        cmd += ["--properties-file", str(self.conf_file)]
        return daemon.launch(cmd, env=self._env(), cwd=self.home)

    def _wait(
        self,
        waiting: Callable[[], list[Daemon]],
        started: dict[Daemon, subprocess.Popen[bytes]],
        deadline: float,
        what: str,
    ) -> None:
        """Poll until `waiting` names no daemon; one we started dying, or the deadline, raises."""
        while left := waiting():
            for daemon, proc in started.items():
                if proc.poll() is not None:
                    raise daemon.failure(f"exited at start with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise left[0].failure(f"{what} in time")
            time.sleep(0.3)


def _registered(worker: Daemon) -> bool:
    """A worker's own web UI (/json/) names the master it registered with."""
    import httpx

    try:
        response = httpx.get(f"{worker.address}/json/", timeout=2.0)
        return response.status_code == 200 and bool(response.json().get("masterwebuiurl"))
    except (httpx.HTTPError, ValueError):
        return False
