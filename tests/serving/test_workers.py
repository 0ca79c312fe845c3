"""`btcflow serve --workers 2` as real processes: every worker follows a promotion with no failed request,
and an MLflow webhook makes every worker swap at once (polling set to a minute, so only it can explain a
swap within seconds); a delivery with a bad signature is refused."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import httpx
import pytest

from bench import spark_models as sm
from services.mlflow_server import TrackingServer
from services.processes import free_port
from serving import webhooks
from serving.launch import running_gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store, Template
from tests.tracking_server import as_user, credential
from tests.waiting import wait_until

PARAMS = {"timestamp": 1325412060.0}


def worker_versions(base: str, wanted: int, until: float) -> dict[int, str | None]:
    """pid -> btc-close version, from /models over fresh connections (each may reach another worker),
    until `wanted` workers are seen or the deadline."""
    seen: dict[int, str | None] = {}
    while time.monotonic() < until:
        try:
            status = httpx.get(f"{base}/models", headers={"Connection": "close"}, timeout=5).json()
        except httpx.TransportError:  # a connection the kernel had queued on a killed worker's socket
            continue
        seen[status["pid"]] = next(m["version"] for m in status["models"] if m["kind"] == "close")
        if len(seen) >= wanted:
            break
        time.sleep(0.02)
    return seen


def until_every_worker_serves(base: str, pids: set[int], version: str, timeout_s: float) -> float:
    """Seconds until /models from each of `pids` says `version` (or the timeout, then fail)."""
    start = time.monotonic()
    swapped: dict[int, float] = {}

    def every_worker_swapped() -> bool:
        status = httpx.get(f"{base}/models", headers={"Connection": "close"}, timeout=5).json()
        close = next(m for m in status["models"] if m["kind"] == "close")
        if close["version"] == version:
            swapped.setdefault(status["pid"], time.monotonic() - start)
        return set(swapped) >= pids

    wait_until(
        every_worker_swapped,
        timeout_s,
        lambda: f"workers {pids} to serve version {version}, but only {set(swapped)} do",
        every_s=0.02,
    )
    print(f"first seen on version {version}: " + ", ".join(f"{t:.2f}s" for t in swapped.values()))
    return max(swapped.values())


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
            wait_until(lambda: len(answers) >= 50, 30, "answers under load before the promotion")
            store.promote("close_v2")
            took = until_every_worker_serves(base, pids, new, poll_s + 10)
            swapped = len(answers)
            wait_until(lambda: len(answers) >= swapped + 50, 30, "answers under load after the swap")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    assert len(answers) > 100
    assert {status for status, _ in answers} == {200}, "a request failed during the swap"
    assert {version for _, version in answers} == {old, new}
    assert took < poll_s + 10


def test_a_killed_worker_is_replaced_and_no_request_meets_it_unready(store: Store) -> None:
    """The supervisor starts a new worker for a killed one; it joins the port only once it has loaded
    the models, so no request, meanwhile spread over both sockets, gets a 503."""
    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=5.0)
    with running_gateway(settings, port=0, workers=2) as base:
        victim = next(iter(worker_versions(base, 2, time.monotonic() + 30)))
        answered: list[int] = []
        reset = 0  # connections queued on the killed worker's own socket die with it: not an answer
        stop = threading.Event()

        def client() -> None:
            nonlocal reset
            for _ in range(20_000):  # bounded; new connections reach either worker's socket
                if stop.is_set():
                    return
                try:
                    r = httpx.get(f"{base}/predict/close", params=PARAMS, headers={"Connection": "close"})
                    answered.append(r.status_code)
                except httpx.TransportError:
                    reset += 1

        thread = threading.Thread(target=client)
        thread.start()
        try:
            os.kill(victim, signal.SIGKILL)
            now: dict[int, str | None] = {}

            def replaced() -> bool:
                nonlocal now
                now = worker_versions(base, 2, time.monotonic() + 5)
                return len(now) == 2 and victim not in now and all(now.values())

            wait_until(replaced, 60, lambda: f"a ready worker in place of {victim}, seeing {now}", every_s=0)
            settled = len(answered)  # then the load goes on over both workers for a while
            wait_until(lambda: len(answered) >= settled + 50, 30, "answers after the replacement")
        finally:
            stop.set()
            thread.join(30)
        assert victim not in now and len(now) == 2 and all(now.values()), f"workers {now}, killed {victim}"
    assert len(answered) > 50
    assert set(answered) == {200}, f"{len(answered) - answered.count(200)} requests were not answered 200"
    assert reset <= 5, f"{reset} connections reset: more than the killed worker can have held"


# -- webhooks: the session's tracking server (PostgreSQL, proxied artifacts, webhooks to loopback) -------
EXPERIMENT = f"test-workers-{uuid.uuid4().hex[:12]}"  # this module's own, on a server the session shares


def register_over_http(uri: str, template: Template, keys: Iterable[str]) -> dict[str, str]:
    """Template models ("close", "close_v2", ...) as new versions on a tracking server, by HTTP only (no
    Spark): each one's model folder is logged as a run's artifacts, then registered from there; returns
    key -> the version the server numbered it (whatever versions of the same names it already held)."""
    from mlflow import MlflowClient

    template_uri = f"sqlite:///{template.root / 'mlflow.db'}"
    local = MlflowClient(tracking_uri=template_uri, registry_uri=template_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        experiment_id = client.create_experiment(EXPERIMENT)
    else:  # an earlier use deleted it: a deleted experiment keeps its name and takes no runs
        experiment_id = found.experiment_id
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    versions: dict[str, str] = {}
    for key in keys:
        name = sm.REGISTERED[key.split("_v")[0]]
        model_dir = local.get_model_version_download_uri(name, template.versions[key])
        run = client.create_run(experiment_id, run_name=key)
        client.log_artifacts(run.info.run_id, model_dir, "model")
        client.set_terminated(run.info.run_id)
        if not client.search_registered_models(f"name='{name}'"):
            client.create_registered_model(name)
        mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        versions[key] = str(mv.version)
    return versions


@pytest.fixture
def server_models(tracking_server: TrackingServer, template: Template) -> Iterator[dict[str, str]]:
    """close, close_v2, high_low and trend registered anew on the session tracking server, close, high_low
    and trend promoted; yields key -> server version.

    The names are fixed (the gateway serves them) and the server is shared. A name this fixture registered
    is deleted afterwards with its versions, so tests/training/test_tracking_server.py, which trains then
    promotes version 1, still finds its own there; under a name other tests registered first, our versions
    stay, Production."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_server.uri, registry_uri=tracking_server.uri)
    names = set(sm.REGISTERED.values())
    new_names = {n for n in names if not client.search_registered_models(f"name='{n}'")}
    try:
        versions = register_over_http(tracking_server.uri, template, [*sm.REGISTERED, "close_v2"])
        for kind in sm.REGISTERED:
            sm.promote(tracking_server.uri, kind, versions[kind])
        yield versions
    finally:
        for name in new_names:
            if client.search_registered_models(f"name='{name}'"):
                client.delete_registered_model(name)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None and experiment.lifecycle_stage == "active":
            client.delete_experiment(experiment.experiment_id)


def our_webhooks(uri: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return [h.name for h in client.list_webhooks() if h.name.startswith("btcflow-gateway-")]


def test_a_webhook_makes_every_worker_swap_at_once(
    tracking_server: TrackingServer, server_models: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow lets only an admin create webhooks: a gateway run as the reader follows by polling
    as_user(monkeypatch, credential(tracking_server, "admin"))
    uri = tracking_server.uri
    secret = uuid.uuid4().hex
    settings = ServingSettings(tracking_uri=uri, poll_interval_s=60, webhook_secret=secret)
    port = free_port()
    ours = f"btcflow-gateway-127.0.0.1-{port}"
    old, new = server_models["close"], server_models["close_v2"]
    with running_gateway(settings, port=port, workers=2) as base:
        # one webhook for the gateway, not one per worker (others' leftovers on the shared server aside)
        assert our_webhooks(uri).count(ours) == 1
        workers = worker_versions(base, 2, time.monotonic() + 30)
        assert len(workers) == 2 and set(workers.values()) == {old}

        # refused: a wrong secret, a stale timestamp, no signature at all; nothing changes
        event = {"name": "btc-close", "alias": "production", "version": new}
        body = json.dumps(
            {"entity": "model_version_alias", "action": "created", "timestamp": "", "data": event}
        ).encode()
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
        assert set(worker_versions(base, 2, time.monotonic() + 30).values()) == {old}

        promoted_at = time.monotonic()
        sm.promote(uri, "close", new)  # stage (no event), then alias: model_version_alias.created
        took = until_every_worker_serves(base, set(workers), new, timeout_s=10)
        print(f"every worker on v{new} {took:.2f}s after the promotion returned")
        assert time.monotonic() - promoted_at < 2.0, "only the webhook can explain a swap this soon"
    assert ours not in our_webhooks(uri)  # removed when the gateway stopped
