"""API keys on a real `btcflow serve --workers 2`: a revoked key is refused within one poll interval by BOTH
worker processes (each re-reads the keys file itself), and no key, salt or hash reaches the gateway's output
(its start lines, info logs and access log, captured whole)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.processes import free_port
from serving import keys
from tests.environment import without_settings
from tests.serving.conftest import Store
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CLOSE = {"timestamp": 1325412060.0}
POLL_S = 1.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def probe(base: str, watcher: str, key: str) -> tuple[int, int]:
    """(worker pid, status of GET /predict/close with `key`), both on one new connection, so one worker:
    each worker listens on a socket of its own, and a connection stays with the one that accepted it."""
    with httpx.Client(base_url=base, timeout=5) as client:
        pid = client.get("/models", headers=bearer(watcher)).json()["pid"]
        return pid, client.get("/predict/close", params=CLOSE, headers=bearer(key)).status_code


def test_a_revoked_key_is_refused_by_every_worker_within_one_poll_interval(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "gateway" / "api-keys.json"
    alice, watcher = keys.create(path, "alice"), keys.create(path, "watcher")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = without_settings("BTCFLOW_", "MLFLOW_")
    env.update(
        MLFLOW_TRACKING_URI=store.uri,
        BTCFLOW_API_KEYS_FILE=str(path),
        BTCFLOW_POLL_INTERVAL_S=str(POLL_S),
        BTCFLOW_WEBHOOKS="off",
        BTCFLOW_LOG_LEVEL="info",
        BTCFLOW_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    log = tmp_path / "gateway.log"
    cmd = [
        sys.executable,
        "-m",
        "btcflow.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
        "--access-log",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        ready: dict[int, int] = {}

        def both_workers_answer_alice() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code != 200:
                    return False
                pid, status = probe(base, watcher, alice)
            except httpx.TransportError:
                return False
            ready[pid] = status
            return len(ready) == 2

        wait_until(both_workers_answer_alice, 120, "both workers ready", every_s=0.05)
        assert set(ready.values()) == {200}, ready
        for headers in ({}, bearer("btcflow_000000000000_" + "A" * 43)):
            answer = httpx.get(f"{base}/predict/close", params=CLOSE, headers=headers, timeout=5)
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        metrics = httpx.get(f"{base}/metrics", headers=bearer(watcher), timeout=5).text

        keys.revoke(path, "alice")
        revoked = time.monotonic()
        refused: dict[int, float] = {}
        after_refusal: list[tuple[int, int]] = []

        def both_workers_refuse_alice() -> bool:
            pid, status = probe(base, watcher, alice)
            if pid in refused:
                after_refusal.append((pid, status))
            elif status == 401:
                refused[pid] = time.monotonic() - revoked
            return set(refused) == set(ready)

        wait_until(
            both_workers_refuse_alice, POLL_S + 10, lambda: f"both workers to refuse, only {refused}", 0.02
        )
        print("refused after: " + ", ".join(f"pid {p}: {t:.2f}s" for p, t in refused.items()))
        # one interval, and the time of the request that finds it past (1 s of slack for a loaded machine)
        assert all(t < POLL_S + 1.0 for t in refused.values()), refused
        assert all(status == 401 for _, status in after_refusal), after_refusal  # never accepted again
        assert probe(base, watcher, watcher)[1] == 200  # the other key still works
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    printed = log.read_text()
    records = json.loads(path.read_text())["keys"]
    secrets = [alice, watcher, alice[len("btcflow_") + 13 :], watcher[len("btcflow_") + 13 :]]
    secrets += [r[field] for r in records for field in ("hash", "salt")]
    for text in secrets:
        assert text not in printed and text not in metrics
    assert "GET /predict/close" in printed and " 401" in printed  # the access log was on, and is captured
    assert "2 active (alice, watcher)" in printed and "1 active (watcher)" in printed  # names may show


def test_running_gateway_waits_and_calls_with_a_key_and_says_when_it_has_none(
    store: Store, tmp_path: Path
) -> None:
    """serving.launch (the demo's and scripts' way to run a gateway) passes the key file to the gateway and
    shows the key; without the key its wait stops at once with a line saying so, not at its timeout."""
    from serving.launch import GatewayDidNotStart, call_routes, running_gateway
    from serving.settings import ServingSettings

    path = tmp_path / "keys.json"
    key = keys.create(path, "demo")
    settings = ServingSettings(tracking_uri=store.uri, webhooks="off", api_keys_file=path)
    row = {"Timestamp": 1325412060.0, "Open": 4.58, "Close": 4.6, "Volume": 1.5}
    with running_gateway(settings, port=0, api_key=key) as base:
        answers = call_routes(base, row, api_key=key)
        assert [status for _, status, _ in answers] == [200, 200, 200]
        assert all(key not in curl and "$BTCFLOW_API_KEY" in curl for curl, _, _ in answers)
        assert {status for _, status, _ in call_routes(base, row)} == {401}
    started = time.monotonic()
    with pytest.raises(GatewayDidNotStart, match="needs an API key"), running_gateway(settings, port=0):
        pass
    assert time.monotonic() - started < 60
