"""`btcflow serve --workers 2` as real processes: every worker follows a promotion with no failed request,
and an MLflow webhook makes every worker swap at once (polling set to a minute, so only it can explain a
swap within seconds); a delivery with a bad signature is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import webhooks
from serving.launch import free_port, running_gateway
from serving.settings import ServingSettings
from tests.serving import spark_models as sm
from tests.serving.conftest import Store, Template

PARAMS = {"timestamp": 1325412060.0}


def worker_versions(base: str, wanted: int, until: float) -> dict[int, str | None]:
    """pid -> btc-close version, from /models over fresh connections (each may reach another worker),
    until `wanted` workers are seen or the deadline."""
    seen: dict[int, str | None] = {}
    while time.monotonic() < until:
        status = httpx.get(f"{base}/models", headers={"Connection": "close"}, timeout=5).json()
        seen[status["pid"]] = next(m["version"] for m in status["models"] if m["kind"] == "close")
        if len(seen) >= wanted:
            break
        time.sleep(0.02)
    return seen


def until_every_worker_serves(base: str, pids: set[int], version: str, timeout_s: float) -> float:
    """Seconds until /models from each of `pids` says `version` (or the timeout, then fail)."""
    start = time.monotonic()
    swapped: dict[int, float] = {}
    while time.monotonic() - start < timeout_s:
        status = httpx.get(f"{base}/models", headers={"Connection": "close"}, timeout=5).json()
        close = next(m for m in status["models"] if m["kind"] == "close")
        if close["version"] == version:
            swapped.setdefault(status["pid"], time.monotonic() - start)
        if set(swapped) >= pids:
            print(f"first seen on version {version}: " + ", ".join(f"{t:.2f}s" for t in swapped.values()))
            return max(swapped.values())
        time.sleep(0.02)
    raise AssertionError(f"after {timeout_s}s only workers {set(swapped)} of {pids} serve version {version}")


def test_two_workers_follow_a_promotion_with_no_failed_request(store: Store) -> None:
    poll_s = 1.0
    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=poll_s)
    old, new = store.template.versions["close"], store.template.versions["close_v2"]
    with running_gateway(settings, port=0, workers=2) as base:
        pids = set(worker_versions(base, 2, time.monotonic() + 30))
        assert len(pids) == 2
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def client() -> None:
            for _ in range(200):  # bounded: at most 200 connections of 25 requests each
                with httpx.Client(base_url=base, timeout=5) as http:  # new connections spread the workers
                    for _ in range(25):
                        if stop.is_set():
                            return
                        try:
                            r = http.get("/predict/close", params=PARAMS)
                            version = r.json()["model"]["version"] if r.status_code == 200 else None
                            answers.append((r.status_code, version))
                        except httpx.HTTPError as exc:
                            answers.append((0, type(exc).__name__))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            store.promote("close_v2")
            took = until_every_worker_serves(base, pids, new, poll_s + 10)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    assert len(answers) > 100
    assert {status for status, _ in answers} == {200}, "a request failed during the swap"
    assert {version for _, version in answers} == {old, new}
    assert took < poll_s + 10


# -- webhooks: a real `mlflow server` on SQLite, as `btcflow tracking start` will configure it ----------
@pytest.fixture(scope="module")
def webhook_server(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a copy of the template registry, allowed to call a gateway on loopback over http.

    Local until tests/tracking_server.py's `tracking_server` fixture (PostgreSQL) lands; same settings.
    """
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("webhook-server")
    shutil.copy(template.root / "mlflow.db", root / "mlflow.db")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow server not up after 90s"
            time.sleep(0.3)
        sm.promote(uri, "close", template.versions["close"])
        for kind in ("high_low", "trend"):
            sm.promote(uri, kind, template.versions[kind])
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def our_webhooks(uri: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return [h.name for h in client.list_webhooks() if h.name.startswith("btcflow-gateway-")]


def test_a_webhook_makes_every_worker_swap_at_once(webhook_server: str, template: Template) -> None:
    secret = uuid.uuid4().hex
    settings = ServingSettings(tracking_uri=webhook_server, poll_interval_s=60, webhook_secret=secret)
    port = free_port()
    old, new = template.versions["close"], template.versions["close_v2"]
    sm.promote(webhook_server, "close", old)
    with running_gateway(settings, port=port, workers=2) as base:
        assert our_webhooks(webhook_server) == [f"btcflow-gateway-127.0.0.1-{port}"]
        workers = worker_versions(base, 2, time.monotonic() + 30)
        assert len(workers) == 2 and set(workers.values()) == {old}

        # refused: a wrong secret, a stale timestamp, no signature at all; nothing changes
        body = (
            b'{"entity": "model_version_alias", "action": "created", "timestamp": "", '
            b'"data": {"name": "btc-close", "alias": "production", "version": "2"}}'
        )
        now = int(time.time())
        for key, stamp in ((b"wrong", now), (secret.encode(), now - 3600)):
            headers = {
                webhooks.DELIVERY_ID_HEADER: "d1",
                webhooks.TIMESTAMP_HEADER: str(stamp),
                webhooks.SIGNATURE_HEADER: webhooks.sign(key.decode(), "d1", str(stamp), body),
            }
            answer = httpx.post(f"{base}{webhooks.ROUTE}", content=body, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
        assert httpx.post(f"{base}{webhooks.ROUTE}", content=body).status_code == 401

        promoted_at = time.monotonic()
        sm.promote(webhook_server, "close", new)  # stage (no event), then alias: model_version_alias.created
        took = until_every_worker_serves(base, set(workers), new, timeout_s=10)
        print(f"every worker on v{new} {took:.2f}s after the promotion returned")
        assert time.monotonic() - promoted_at < 2.0, "only the webhook can explain a swap this soon"
    assert our_webhooks(webhook_server) == []  # removed when the gateway stopped
