"""A tracking URI with a password: GET /models, error answers and every line the gateway prints or logs
show it masked (`btcflow:***@`), never the password. No Spark, no model: the registry is a stub, or
refuses (an http store on a closed port, whose refusal MLflow words with the full URI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from core.errors import RegistryUnavailable
from core.registry import Production
from services.processes import free_port
from serving.app import create_app
from serving.errors import HTTPProblem
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.environment import without_settings

PASSWORD = "s3cret-PW"
REPO = Path(__file__).resolve().parents[2]


class StubRegistry:
    """Answers a Production version whose load fails naming the store; later, does not answer at all."""

    def __init__(self, uri: str) -> None:
        self.uri, self.down = uri, False

    def production(self, name: str) -> Production:
        if self.down:
            raise RegistryUnavailable(f"MLflow registry at {self.uri}: connection refused")
        return Production(name, "1", "r" * 32, "Production")

    def numpy_evaluator(self, name: str, version: str) -> object:
        raise OSError(f"cannot download models:/{name}/{version} from {self.uri}")


def test_models_answers_and_error_bodies_mask_the_password() -> None:
    uri = f"postgresql+psycopg2://btcflow:{PASSWORD}@127.0.0.1:5433/mlflow"
    settings = ServingSettings(tracking_uri=uri, poll_interval_s=3600, webhooks="off")
    registry = StubRegistry(uri)
    gateway = Gateway(settings, registry)  # type: ignore[arg-type]
    client = TestClient(create_app(settings, gateway))

    gateway.refresh()  # the registry answers; every load fails naming the store
    failed = client.get("/models").json()
    assert failed["tracking_uri"] == "postgresql+psycopg2://btcflow:***@127.0.0.1:5433/mlflow"
    assert all("btcflow:***@127.0.0.1" in m["last_error"]["message"] for m in failed["models"])

    registry.down = True
    gateway.refresh()
    down = client.get("/models")
    assert "btcflow:***@127.0.0.1:5433" in down.json()["registry_error"]
    assert PASSWORD not in repr(failed) + down.text

    body = HTTPProblem(503, "registry_unavailable", f"MLflow registry at {uri}: refused").body()  # any error
    assert body["message"] == f"MLflow registry at {failed['tracking_uri']}: refused"


def test_a_real_gateway_prints_logs_and_answers_no_password(tmp_path: Path) -> None:
    """`btcflow serve` on an http store with a password in its URI, at info level: its start line, the
    refused webhook, the registry's refusals (MLflow's text names the URI in full), GET /models."""
    store_port, port = free_port(), free_port()  # nothing listens on store_port: every call is refused
    uri = f"http://btcflow:{PASSWORD}@127.0.0.1:{store_port}"
    env = without_settings("BTCFLOW_", "MLFLOW_")
    env.update(
        MLFLOW_TRACKING_URI=uri,
        BTCFLOW_LOG_LEVEL="info",
        BTCFLOW_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "btcflow.cli", "serve", "--port", str(port), "--access-log"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        models = wait_for_registry_error(f"http://127.0.0.1:{port}", proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    printed = log.read_text()
    masked = f"http://btcflow:***@127.0.0.1:{store_port}"
    assert PASSWORD not in printed + models.text, printed
    assert models.json()["tracking_uri"] == masked
    assert masked in models.json()["registry_error"]
    assert f"registry {masked}" in printed  # the start line
    assert "webhook not registered" in printed and f"API request to {masked}/api/" in printed
    assert printed.count(masked) >= 3, printed  # start line, webhook line, the registry's warning


def wait_for_registry_error(base: str, proc: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        try:
            answer = httpx.get(f"{base}/models", timeout=5)
            if answer.status_code == 200 and answer.json()["registry_error"]:
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the gateway never reported the registry's refusal")
