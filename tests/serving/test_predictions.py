"""The prediction log on the session's real broker: every answered row arrives as one JSON message on a fresh
topic; with no broker behind the address, requests still answer at once and the rows are counted dropped; a
killed publisher process costs only the rows answered while it was gone, and is replaced."""

from __future__ import annotations

import json
import signal
import time

from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from services.processes import free_port
from serving import predictions
from serving.app import create_app
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store
from tests.serving.test_app import GET
from tests.serving.test_metrics import samples, value
from tests.waiting import wait_until


def app_client(store: Store, **settings: object) -> TestClient:
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600, **settings)
    gateway = Gateway(config)
    gateway.refresh()
    return TestClient(create_app(config, gateway))


def sent(client: TestClient) -> float:
    return value(samples(client.get("/metrics").text), "btcflow_prediction_log_sent_total")


def dropped(client: TestClient) -> float:
    return value(samples(client.get("/metrics").text), "btcflow_prediction_log_dropped_total")


def read_back(bootstrap: str, topic: str, wanted: int, timeout_s: float) -> list[dict]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=1000
    )
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < wanted and time.monotonic() < deadline:
            out += [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    return out


def test_each_answered_row_is_one_message_on_the_topic(store: Store, kafka_broker: str, topic: str) -> None:
    versions = store.template.versions
    rows = [{"open": 4.58 + i, "close": 4.6, "volume": 1.5} for i in range(3)]
    with app_client(store, prediction_topic=topic, kafka_bootstrap=kafka_broker) as client:
        close = client.get("/predict/close", params=GET["close"]).json()
        trend = client.post("/predict/trend", json={"rows": rows}).json()
        assert client.get("/predict/close", params={"timestamp": "x"}).status_code == 422  # not logged
        # the sender thread counts what the broker acknowledged
        wait_until(lambda: sent(client) >= 4, 30, lambda: f"4 rows sent, not {sent(client)}")
        found = samples(client.get("/metrics").text)
        assert value(found, "btcflow_prediction_log_sent_total") == 4
        assert value(found, "btcflow_prediction_log_dropped_total") == 0
    messages = read_back(kafka_broker, topic, 4, 30)
    assert len(messages) == 4  # the topic was created by the log (the broker creates none by itself)

    first, *posted = messages
    assert set(first) == {"time", "model", "inputs", "outputs"}
    assert first["model"] == close["model"] and first["model"]["version"] == versions["close"]
    assert first["inputs"] == GET["close"]
    assert first["outputs"] == {"predicted_close": close["predicted_close"]}
    assert first["time"].endswith("+00:00")
    assert [m["inputs"] for m in posted] == rows
    assert [m["outputs"] for m in posted] == trend["predictions"]
    assert {m["model"]["name"] for m in posted} == {"btc-trend"}


def test_an_unreachable_broker_never_holds_a_request_and_drops_are_counted(store: Store) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = app_client(store, prediction_topic="nowhere", kafka_bootstrap=closed, prediction_queue=5)
    requests = 20
    with client:
        started = time.monotonic()
        for _ in range(requests):
            assert client.get("/predict/close", params=GET["close"]).status_code == 200
        took = time.monotonic() - started
        assert took < 2.0, f"{requests} requests took {took:.2f}s with the broker down"
        # one connection attempt (2 s), then what it took is dropped
        wait_until(
            lambda: dropped(client) >= requests, 15, lambda: f"{requests} rows dropped, not {dropped(client)}"
        )
        found = samples(client.get("/metrics").text)
        assert value(found, "btcflow_prediction_log_dropped_total") == requests
        assert value(found, "btcflow_prediction_log_sent_total") == 0
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5.0, "stopping the log must not wait for an absent broker"


def test_a_killed_publisher_costs_only_what_it_held_and_is_replaced(
    store: Store, kafka_broker: str, topic: str
) -> None:
    """SIGKILL the publisher process: rows answered meanwhile are dropped and counted (none lost from the
    counts), and RESTART_S later a new publisher sends again."""
    client = app_client(store, prediction_topic=topic, kafka_bootstrap=kafka_broker)

    def counts(at_least: tuple[float, float], timeout_s: float) -> tuple[float, float]:
        """(sent, dropped) once both reach `at_least`: asserting them equal then also catches extra rows."""
        wait_until(
            lambda: sent(client) >= at_least[0] and dropped(client) >= at_least[1],
            timeout_s,
            lambda: f"(sent, dropped) to reach {at_least}, not {(sent(client), dropped(client))}",
        )
        return sent(client), dropped(client)

    with client:
        log = client.app.state.prediction_log  # type: ignore[attr-defined]
        for _ in range(3):
            client.get("/predict/close", params=GET["close"])
        assert counts((3, 0), 30) == (3, 0)
        first = log._publisher.proc
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        for _ in range(2):
            client.get("/predict/close", params=GET["close"])
        assert counts((3, 2), 10) == (3, 2)
        wait_until(
            lambda: log._publisher is not None and log._publisher.proc is not first,
            predictions.RESTART_S + 10,
            "a new publisher process",
        )
        for _ in range(2):
            client.get("/predict/close", params=GET["close"])
        assert counts((5, 2), 30) == (5, 2)
    assert len(read_back(kafka_broker, topic, 5, 30)) == 5
