"""The gateway's edge, in process: strict bodies and lax queries, unknown fields refused, bodies over the
limit refused before they are parsed, and every error (404, 405, 413, 422, 500) in the one JSON shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.edge import Edge
from serving.models import Gateway, Loaded
from serving.settings import ServingSettings
from tests.serving.conftest import Store

ROW = {"open": 4.58, "close": 4.6, "volume": 1.5}
HIGH_LOW = {"open": 1, "volume": 1}


def client_for(uri: str, refresh: bool = True, **settings: Any) -> TestClient:
    config = ServingSettings(tracking_uri=uri, poll_interval_s=3600, **settings)
    gateway = Gateway(config)
    if refresh:
        gateway.refresh()
    return TestClient(create_app(config, gateway))


@pytest.fixture
def bare(tmp_path: Any) -> TestClient:
    """A gateway with no model loaded: enough for everything refused before a model is asked."""
    return client_for(f"sqlite:///{tmp_path / 'none.db'}", refresh=False, max_body_bytes=1000)


def check_error(answer: Any, status: int, error: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["error"] == error and body["message"], body
    return body


BAD_BODIES = [
    ("trend", {"rows": [{**ROW, "open": True}]}, "rows[0].open", "true/false"),
    ("trend", {"rows": [ROW, {**ROW, "volume": False}]}, "rows[1].volume", "true/false"),
    ("trend", {"rows": [{**ROW, "close": "4.5"}]}, "rows[0].close", "a string"),
    ("close", {"rows": [{"timestamp": "1325412060"}]}, "rows[0].timestamp", "a string"),
    ("high_low", {"rows": [HIGH_LOW, HIGH_LOW, {**HIGH_LOW, "foo": 2}]}, "rows[2].foo", "unknown field"),
    ("high_low", {"rows": [HIGH_LOW], "model": "btc-high-low"}, "model", "unknown field"),
    ("close", {"rows": [{"timestamp": 1325412060, "open": 4.5}]}, "rows[0].open", "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "body", "field", "said"), BAD_BODIES)
def test_a_body_takes_json_numbers_and_known_fields_only(
    bare: TestClient, kind: str, body: dict, field: str, said: str
) -> None:
    answer = check_error(bare.post(f"/predict/{kind}", json=body), 422, "bad_input")
    assert answer["field"] == field and said in answer["message"]


BAD_QUERIES = [
    ("high_low", "open=true&volume=1", "open"),
    ("trend", "open=4.5&close=4.6&volume=1.5&timestamp=1325412060", "timestamp"),
    ("close", "timestamp=1325412060&foo=1", "foo"),
]


@pytest.mark.parametrize(("kind", "query", "field"), BAD_QUERIES)
def test_a_query_refuses_true_and_unknown_parameters(
    bare: TestClient, kind: str, query: str, field: str
) -> None:
    answer = check_error(bare.get(f"/predict/{kind}?{query}"), 422, "bad_input")
    assert answer["field"] == field


def test_numeric_text_in_a_query_and_integers_in_a_body_are_numbers(store: Store) -> None:
    client = client_for(store.uri)
    text = client.get("/predict/trend?open=5&close=4.6E0&volume=1.5")
    assert text.status_code == 200, text.text
    posted = client.post("/predict/trend", json={"rows": [{"open": 5, "close": 4.6, "volume": 1.5}]})
    assert posted.status_code == 200, posted.text
    text_answer = text.json()
    assert posted.json()["predictions"] == [{k: v for k, v in text_answer.items() if k != "model"}]


def test_a_body_over_the_limit_is_413_before_it_is_parsed(bare: TestClient) -> None:
    big = b"{" + b" " * 2000  # not JSON: parsed, it would be a 422
    answer = bare.post("/predict/close", content=big, headers={"content-type": "application/json"})
    body = check_error(answer, 413, "body_too_large")
    assert "1,000 bytes" in body["message"] and answer.headers["connection"] == "close"
    json = {"content-type": "application/json"}
    chunked = bare.post("/predict/close", content=iter([b"{" + b" " * 600, b" " * 600]), headers=json)
    check_error(chunked, 413, "body_too_large")
    small = bare.post("/predict/close", content=iter([b'{"rows": [', b"]}"]), headers=json)
    assert check_error(small, 422, "bad_input")["field"] == "rows"  # within the limit: read and parsed


def test_the_default_limit_fits_max_rows_of_the_widest_row() -> None:
    import json

    config = ServingSettings(tracking_uri="sqlite://", max_rows=10_000)
    widest = {k: -1.2345678901234567e-300 for k in ROW}
    assert len(json.dumps({"rows": [widest] * config.max_rows}, indent=4)) < config.body_limit
    assert ServingSettings(tracking_uri="sqlite://", max_body_bytes=5).body_limit == 5


def run_edge(
    chunks: Sequence[bytes], headers: Mapping[bytes, bytes], limit: int
) -> tuple[int, list[str], int]:
    """Edge in front of an app that reads the whole body: (status, what reached the app, chunks taken)."""
    reached: list[str] = []
    taken = 0
    sent: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reached.append(body.decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        nonlocal taken
        taken += 1
        more = taken < len(chunks)
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": more}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": list(headers.items())}
    asyncio.run(Edge(app, limit)(scope, receive, send))
    return sent[0]["status"], reached, taken


def test_a_chunked_body_is_read_only_until_it_passes_the_limit() -> None:
    chunks = [b"x" * 100] * 50
    status, reached, taken = run_edge(chunks, {b"transfer-encoding": b"chunked"}, limit=1000)
    assert (status, reached, taken) == (413, [], 11)
    status, reached, taken = run_edge(chunks[:10], {b"transfer-encoding": b"chunked"}, limit=1000)
    assert (status, reached, taken) == (200, ["x" * 1000], 10)
    status, reached, taken = run_edge(chunks, {b"content-length": b"5000"}, limit=1000)
    assert (status, reached, taken) == (413, [], 0)  # refused on its length, not a byte read


def test_404_and_405_are_json_and_405_lists_every_method_of_the_path(bare: TestClient) -> None:
    check_error(bare.get("/predict/volume"), 404, "not_found")
    answer = bare.delete("/predict/close")
    body = check_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, POST" and "GET, POST" in body["message"]
    assert bare.put("/health").headers["allow"] == "GET"


class Broken(Gateway):
    """A gateway with a bug on its request path."""

    def predict(
        self, kind: str, rows: Mapping[str, Sequence[float]], single: bool = False
    ) -> tuple[Loaded, dict[str, list[Any]]]:
        raise RuntimeError("a bug in predict")


def test_an_unexpected_exception_is_500_json_with_the_id_the_log_carries(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServingSettings(tracking_uri=f"sqlite:///{tmp_path / 'none.db'}", poll_interval_s=3600)
    client = TestClient(create_app(config, Broken(config)))
    with caplog.at_level(logging.ERROR, logger="serving"):
        answer = client.get("/predict/close", params={"timestamp": 1325412060.0})
    body = check_error(answer, 500, "internal_error")
    error_id = body["error_id"]
    assert len(error_id) == 16 and int(error_id, 16) >= 0 and error_id in body["message"]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info and "a bug in predict" in str(logged[0].exc_info[1])
    assert "a bug in predict" not in answer.text  # the traceback stays in the log
    metrics = client.get("/metrics").text
    assert 'btcflow_http_errors_total{method="GET",route="/predict/close",status="500"} 1.0' in metrics
