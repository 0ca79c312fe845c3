"""The MLflow tracking server on PostgreSQL, for real: the CLI, train -> promote -> serve through it with
no access to its files, `mlflow run` through it, and a gateway that keeps serving while it restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.access import PASSWORD_VAR, USERNAME_VAR
from core.credentials import Credential
from services.mlflow_server import TrackingServer
from services.processes import free_port
from tests.environment import without_settings
from tests.tracking_server import credential, service_dir
from tests.training.conftest import minute_table, write_batches

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KINDS = ("close", "high_low", "trend")
NAMES = ("btc-close", "btc-high-low", "btc-trend")
QUERIES: dict[str, dict[str, float]] = {
    "close": {"timestamp": 1325500000},
    "high_low": {"open": 100.0, "volume": 3.0},
    "trend": {"open": 100.0, "close": 101.0, "volume": 3.0},
}


def client_env(uri: str, user: Credential | None = None, **extra: str) -> dict[str, str]:
    """This environment without any btcflow or MLflow setting, pointed at the server by http only, as
    `user` (default: the session's, its trainer)."""
    env = without_settings("BTCFLOW_", "MLFLOW_")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `mlflow run` calls `python`: this venv's
    login = {k: os.environ[k] for k in (USERNAME_VAR, PASSWORD_VAR) if k in os.environ}
    if user is not None:
        login = {USERNAME_VAR: user.username, PASSWORD_VAR: user.password}
    return {**env, **login, "MLFLOW_TRACKING_URI": uri, **extra}


def cli_env(server: TrackingServer) -> dict[str, str]:
    """`btcflow tracking ...` pointed at the session server's data dir and ports."""
    assert server.postgres is not None
    return client_env(
        server.uri,
        BTCFLOW_DATA_DIR=str(server.data_dir),
        BTCFLOW_TRACKING_PORT=str(server.port),
        BTCFLOW_POSTGRES_PORT=str(server.postgres.port),
    )


def btcflow(*args: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "btcflow.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- the CLI -------------------------------------------------------------------------------------------


def test_cli_start_status_stop_on_the_session_server(tracking_server: TrackingServer, tmp_path: Path) -> None:
    env = cli_env(tracking_server)
    first = tracking_server.process.pid

    started = btcflow("tracking", "start", env=env, cwd=tmp_path)  # idempotent: nothing new starts
    assert started.returncode == 0, started.stderr
    assert f"export MLFLOW_TRACKING_URI={tracking_server.uri}" in started.stdout
    assert tracking_server.process.pid == first

    status = btcflow("tracking", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "postgres" in status.stdout and tracking_server.uri in status.stdout
    assert status.stdout.count(" running") == 2
    assert f"authentication: basic-auth (admin credential in {tracking_server.admin_file})" in status.stdout

    try:
        stopped = btcflow("tracking", "stop", env=env, cwd=tmp_path)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        down = btcflow("tracking", "status", env=env, cwd=tmp_path)
        assert down.returncode == 3
        assert down.stdout.count("not running") == 2
    finally:
        again = btcflow("tracking", "start", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert tracking_server.process.pid not in (None, first)
    assert httpx.get(f"{tracking_server.uri}/health", timeout=5).status_code == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to the postgres user")
def test_cli_names_the_folder_postgres_cannot_enter(tmp_path: Path) -> None:
    """pytest's tmp folders are 0700 root: one line that says what to chmod, exit 3, nothing started."""
    env = client_env(
        "http://127.0.0.1:1",
        BTCFLOW_DATA_DIR=str(tmp_path / "data"),
        BTCFLOW_TRACKING_PORT=str(free_port()),
        BTCFLOW_POSTGRES_PORT=str(free_port()),
    )
    result = btcflow("tracking", "start", "--timeout", "10", env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "cannot enter" in result.stderr and "chmod" in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_store_uri_from_a_file_reaches_the_server_through_its_environment_only(tmp_path: Path) -> None:
    """--backend-store-uri-file: the password is in no command line (`ps`) and in nothing printed; the
    server gets the URI in its environment. No database listens, so the server keeps retrying and the start
    times out (exit 3) with its log's last error line."""
    secret = "s3cret-PW"
    uri = f"postgresql+psycopg2://btcflow:{secret}@127.0.0.1:{free_port()}/mlflow"
    uri_file = tmp_path / "store.uri"
    uri_file.write_text(f"{uri}\n")
    uri_file.chmod(0o600)
    port = free_port()
    env = client_env(
        "http://127.0.0.1:1",
        BTCFLOW_DATA_DIR=str(tmp_path / "data"),
        BTCFLOW_TRACKING_PORT=str(port),
        BTCFLOW_TRACKING_WORKERS="1",
    )
    server = TrackingServer(tmp_path / "data", port, backend_store_uri="from the file")
    try:
        done = btcflow(
            "tracking",
            "start",
            "--backend-store-uri-file",
            str(uri_file),
            "--timeout",
            "15",
            env=env,
            cwd=tmp_path,
        )
        pid = server.process.pid
        assert pid is not None, done.stderr  # still trying to reach the database
        assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"MLFLOW_BACKEND_STORE_URI={uri}\0".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        server.stop()
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "did not answer /health in time" in done.stderr
    logged = server.process.log_file.read_text()  # MLflow's own log too
    assert secret not in done.stdout + done.stderr + logged


# -- train -> promote -> serve through the server only ---------------------------------------------------


@dataclass(frozen=True)
class Trained:
    data: Path  # the data dir: batches only, no MLflow file
    versions: dict[str, str]  # registered name -> the version this module trained and promoted


def production_versions(uri: str) -> dict[str, str]:
    """Registered name -> its newest version (the session server may hold other tests' versions)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    return {
        m.name: str(max(int(v.version) for v in client.search_model_versions(f"name='{m.name}'")))
        for m in client.search_registered_models()
        if m.name in NAMES
    }


@pytest.fixture(scope="module")
def trained(tracking_server: TrackingServer) -> Iterator[Trained]:
    """All three models trained (batch 1 of two small ones) and the new version of each promoted, through
    the server by `btcflow` subprocesses."""
    work = service_dir("btcflow-train-")
    data = work / "data"
    write_batches(data / "batch", minute_table(600, seed=3), [300, 300])
    env = client_env(
        tracking_server.uri,
        BTCFLOW_DATA_DIR=str(data),
        BTCFLOW_SPARK_MASTER="local[1]",
        BTCFLOW_SPARK_DRIVER_MEMORY="1g",
        BTCFLOW_SPARK_PARTITIONS="2",
    )
    try:
        result = btcflow("train", "--model", "all", "--batches", "1", env=env, cwd=work, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        versions = production_versions(tracking_server.uri)
        for kind, name in zip(KINDS, NAMES, strict=True):
            promoted = btcflow("promote", "--model", kind, "--version", versions[name], env=env, cwd=work)
            assert promoted.returncode == 0, promoted.stderr
        assert not (work / "mlruns").exists()  # everything went to the server
        yield Trained(data, versions)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(tracking_server: TrackingServer, trained: Trained) -> Iterator[str]:
    """`btcflow serve` in an empty folder of its own, knowing only MLFLOW_TRACKING_URI=http://...; its URL
    once /ready answers. The registry is polled every second, so an outage shows at once."""
    cwd = service_dir("btcflow-gateway-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # as the reader, btcflow's role for the gateway
    env = client_env(tracking_server.uri, credential(tracking_server, "reader"), BTCFLOW_POLL_INTERVAL_S="1")
    log = cwd / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "btcflow.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready: {log.read_text()[-2000:]}"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        import shutil

        shutil.rmtree(cwd, ignore_errors=True)


def test_train_promote_serve_with_no_access_to_the_store_files(
    tracking_server: TrackingServer, trained: Trained, gateway: str
) -> None:
    from mlflow import MlflowClient

    models = httpx.get(f"{gateway}/models", timeout=10).json()
    cwd = Path(f"/proc/{models['pid']}/cwd").resolve()
    assert not tracking_server.artifacts.is_relative_to(cwd)
    assert not cwd.is_relative_to(tracking_server.data_dir)
    assert models["tracking_uri"] == tracking_server.uri
    client = MlflowClient(tracking_server.uri, tracking_server.uri)
    for loaded in models["models"]:
        assert loaded["version"] == trained.versions[loaded["name"]] and loaded["stage"] == "Production"
        assert client.get_run(loaded["run_id"]).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert any(tracking_server.artifacts.rglob("*.parquet"))  # the server holds the model files

    assert httpx.get(f"{gateway}/ready", timeout=10).status_code == 200
    for kind, query in QUERIES.items():
        answer = httpx.get(f"{gateway}/predict/{kind}", params=query, timeout=10)
        assert answer.status_code == 200, answer.text
        model = answer.json()["model"]
        assert model["version"] == trained.versions[model["name"]]


def test_gateway_keeps_serving_while_the_server_restarts(
    tracking_server: TrackingServer, trained: Trained, gateway: str
) -> None:
    answers: list[tuple[str, int, str | None]] = []
    expected = {(kind, 200, trained.versions[name]) for kind, name in zip(KINDS, NAMES, strict=True)}
    done = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gateway, timeout=10) as http:
            for i in range(20_000):  # bounded: the restart takes seconds, not this many requests
                if done.is_set():
                    return
                kind = KINDS[i % 3]
                r = http.get(f"/predict/{kind}", params=QUERIES[kind])
                answers.append((kind, r.status_code, r.json().get("model", {}).get("version")))
                if answers[-1] not in expected:
                    return
                time.sleep(0.01)  # the load's pace: steady requests through the restart, not a wait

    def registry_error() -> str | None:
        return httpx.get(f"{gateway}/models", timeout=10).json()["registry_error"]

    def wait_for(condition: bool, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while (registry_error() is not None) != condition:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        assert tracking_server.stop()
        assert wait_for(True, 30), "the gateway did not notice the server was down"
    finally:
        tracking_server.start(timeout_s=120)
    try:
        assert wait_for(False, 30), f"registry_error stayed: {registry_error()}"
    finally:
        done.set()
        thread.join(30)
    unexpected = [a for a in answers if a not in expected]
    assert answers and not unexpected, unexpected[:5]


@pytest.mark.slow
def test_mlflow_run_trains_through_the_server(tracking_server: TrackingServer, trained: Trained) -> None:
    from mlflow import MlflowClient

    before = MlflowClient(tracking_server.uri, tracking_server.uri).search_model_versions("name='btc-trend'")
    env = client_env(
        tracking_server.uri,
        BTCFLOW_DATA_DIR=str(trained.data),
        BTCFLOW_SPARK_MASTER="local[1]",
        BTCFLOW_SPARK_DRIVER_MEMORY="1g",
        BTCFLOW_SPARK_PARTITIONS="2",
    )
    project = ["run", ".", "-e", "train", "--env-manager", "local", "--experiment-name", "btcflow"]
    result = subprocess.run(
        [str(BIN / "mlflow"), *project, "-P", "model=trend", "-P", "batches=2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    after = MlflowClient(tracking_server.uri, tracking_server.uri).search_model_versions("name='btc-trend'")
    new = {v.version for v in after} - {v.version for v in before}
    assert len(new) == 1
    version = next(v for v in after if v.version in new)
    assert version.run_id is not None
    run = MlflowClient(tracking_server.uri).get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
