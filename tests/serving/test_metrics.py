"""GET /metrics: requests, errors and latency per route template, rows per model version; in process, then
summed over the two worker processes of `btcflow serve --workers 2`."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving.launch import running_gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store
from tests.serving.test_app import GET, client_for
from tests.serving.test_workers import worker_versions


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, sample: str, /, **labels: str) -> float:
    """The value of `sample` with exactly these labels, 0 when absent."""
    return found.get((sample, frozenset(labels.items())), 0.0)


def test_metrics_count_routes_errors_and_rows_per_model_version(store: Store) -> None:
    client, _ = client_for(store.uri)
    versions = store.template.versions
    for _ in range(3):
        assert client.get("/predict/close", params=GET["close"]).status_code == 200
    rows = [GET["high_low"]] * 5
    assert client.post("/predict/high_low", json={"rows": rows}).status_code == 200
    assert client.get("/predict/trend", params={"open": -1, "close": 1, "volume": 1}).status_code == 422
    assert client.get("/no/such/path").status_code == 404

    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    close = {"route": "/predict/close", "method": "GET"}
    assert value(found, "btcflow_http_requests_total", **close, status="200") == 3
    assert value(found, "btcflow_http_request_duration_seconds_count", **close) == 3
    assert 0 < value(found, "btcflow_http_request_duration_seconds_sum", **close) < 3
    assert value(found, "btcflow_http_request_duration_seconds_bucket", **close, le="+Inf") == 3
    assert value(found, "btcflow_http_requests_total", route="/predict/high_low", method="POST", status="200")
    trend = {"route": "/predict/trend", "method": "GET", "status": "422"}
    assert value(found, "btcflow_http_errors_total", **trend) == 1
    assert value(found, "btcflow_http_requests_total", **trend) == 1
    assert value(found, "btcflow_http_errors_total", route="unmatched", method="GET", status="404") == 1
    assert value(found, "btcflow_http_errors_total", **close, status="200") == 0
    assert value(found, "btcflow_predictions_total", name="btc-close", version=versions["close"]) == 3
    assert value(found, "btcflow_predictions_total", name="btc-high-low", version=versions["high_low"]) == 5
    assert value(found, "btcflow_predictions_total", name="btc-trend", version=versions["trend"]) == 0
    assert value(found, "btcflow_prediction_log_dropped_total") == 0  # no log: nothing dropped either

    off, _ = client_for(store.uri, metrics=False)
    assert off.get("/predict/close", params=GET["close"]).status_code == 200
    assert off.get("/metrics").status_code == 404


def test_two_workers_metrics_sum_both_processes(store: Store) -> None:
    """40 requests on new connections: the kernel spreads them over both workers' sockets (all on one:
    odds 2^-39), so a total of 40 from whichever worker answers /metrics is the sum of both."""
    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=60)
    requests = 40
    with running_gateway(settings, port=0, workers=2) as base:
        assert len(worker_versions(base, 2, time.monotonic() + 30)) == 2
        for _ in range(requests):
            answer = httpx.get(f"{base}/predict/close", params=GET["close"], headers={"Connection": "close"})
            assert answer.status_code == 200
        bad = httpx.get(f"{base}/predict/close", params={"timestamp": "x"}, headers={"Connection": "close"})
        assert bad.status_code == 422
        for _ in range(4):  # each scrape on a new connection: either worker answers the same sums
            found = samples(httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text)
            close = {"route": "/predict/close", "method": "GET"}
            assert value(found, "btcflow_http_requests_total", **close, status="200") == requests
            assert value(found, "btcflow_http_request_duration_seconds_count", **close) == requests + 1
            assert value(found, "btcflow_http_errors_total", **close, status="422") == 1
            version = store.template.versions["close"]
            assert value(found, "btcflow_predictions_total", name="btc-close", version=version) == requests
