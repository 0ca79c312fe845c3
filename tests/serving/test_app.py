"""The HTTP contract, in process: fields and types, every validation case, 503s, /models, the admin token."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.models import Gateway, Registry
from serving.settings import ServingSettings
from tests.serving.conftest import Store

GET = {
    "close": {"timestamp": 1325412060.0},
    "high_low": {"open": 4.58, "volume": 1.5},
    "trend": {"open": 4.58, "close": 4.6, "volume": 1.5},
}
NAMES = {"close": "btc-close", "high_low": "btc-high-low", "trend": "btc-trend"}


def client_for(uri: str, **settings: object) -> tuple[TestClient, Gateway]:
    config = ServingSettings(tracking_uri=uri, poll_interval_s=3600, **settings)
    gateway = Gateway(config)
    gateway.refresh()
    return TestClient(create_app(config, gateway)), gateway


@pytest.fixture
def client(store: Store) -> TestClient:
    return client_for(store.uri)[0]


def check_model(answer: dict, kind: str, version: str) -> None:
    assert answer["model"]["name"] == NAMES[kind]
    assert answer["model"]["version"] == version
    assert isinstance(answer["model"]["run_id"], str) and len(answer["model"]["run_id"]) == 32


def test_get_routes_answer_the_contract_fields(client: TestClient, store: Store) -> None:
    close = client.get("/predict/close", params=GET["close"]).json()
    assert set(close) == {"predicted_close", "model"} and isinstance(close["predicted_close"], float)
    high_low = client.get("/predict/high_low", params=GET["high_low"]).json()
    assert set(high_low) == {"predicted_high", "predicted_low", "model"}
    assert all(isinstance(high_low[k], float) for k in ("predicted_high", "predicted_low"))
    trend = client.get("/predict/trend", params=GET["trend"]).json()
    assert set(trend) == {"predicted_trend", "probability_up", "model"}
    assert trend["predicted_trend"] in ("Up", "Down") and 0.0 <= trend["probability_up"] <= 1.0
    assert (trend["predicted_trend"] == "Up") == (trend["probability_up"] > 0.5)
    for kind, answer in (("close", close), ("high_low", high_low), ("trend", trend)):
        check_model(answer, kind, store.template.versions[kind])


@pytest.mark.parametrize("kind", list(GET))
def test_post_answers_in_row_order_equal_to_single_rows(client: TestClient, store: Store, kind: str) -> None:
    rows = []
    for i in range(25):
        row = {k: v * (1 + i / 10) for k, v in GET[kind].items()}
        if kind == "close":
            row["timestamp"] = 1.4e9 + i * 1e7
        else:
            row["volume"] = float(i * 1000)
        rows.append(row)
    answer = client.post(f"/predict/{kind}", json={"rows": rows})
    assert answer.status_code == 200
    body = answer.json()
    check_model(body, kind, store.template.versions[kind])
    assert len(body["predictions"]) == len(rows)
    for row, prediction in zip(rows, body["predictions"], strict=True):
        single = client.get(f"/predict/{kind}", params=row).json()
        single.pop("model")
        assert prediction == single


def test_models_health_ready(client: TestClient, store: Store) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    status = client.get("/models").json()
    assert status["engine"] == "numpy" and status["pid"] == os.getpid()
    by_name = {m["name"]: m for m in status["models"]}
    for kind, name in NAMES.items():
        entry = by_name[name]
        assert entry["version"] == store.template.versions[kind]
        assert entry["stage"] == "Production" and entry["loaded_at"] and entry["last_error"] is None


def test_503_names_the_model_before_promotion_then_serves(empty_store: Store) -> None:
    client, gateway = client_for(empty_store.uri)
    for kind, name in NAMES.items():
        answer = client.get(f"/predict/{kind}", params=GET[kind])
        assert answer.status_code == 503
        assert answer.json()["model"] == name and name in answer.json()["message"]
        posted = client.post(f"/predict/{kind}", json={"rows": [GET[kind]]})
        assert posted.status_code == 503 and posted.json()["model"] == name
    ready = client.get("/ready")
    assert ready.status_code == 503 and set(ready.json()["missing"]) == set(NAMES.values())
    empty_store.promote("close")
    gateway.refresh()
    assert client.get("/predict/close", params=GET["close"]).status_code == 200
    assert client.get("/ready").json()["missing"] == ["btc-high-low", "btc-trend"]


BAD_GETS = [
    ("close", {}, "timestamp"),
    ("close", {"timestamp": "soon"}, "timestamp"),
    ("close", {"timestamp": "nan"}, "timestamp"),
    ("close", {"timestamp": "inf"}, "timestamp"),
    ("close", {"timestamp": 1000.0}, "timestamp"),  # 1970
    ("close", {"timestamp": 1230767999.0}, "timestamp"),  # the last second of 2008
    ("close", {"timestamp": 4102444801.0}, "timestamp"),  # after 2100
    ("high_low", {"volume": 1}, "open"),
    ("high_low", {"open": -0.01, "volume": 1}, "open"),
    ("high_low", {"open": 4, "volume": -1}, "volume"),
    ("high_low", {"open": "-inf", "volume": 1}, "open"),
    ("high_low", {"open": 4, "volume": "NaN"}, "volume"),
    ("trend", {"open": 4, "close": "x", "volume": 1}, "close"),
    ("trend", {"open": 4, "close": 4, "volume": ""}, "volume"),
    ("trend", {"open": 4, "close": -4, "volume": 1}, "close"),
    ("high_low", {"open": 1.0000001e15, "volume": 1}, "open"),
    ("high_low", {"open": 4, "volume": 2e15}, "volume"),
    ("trend", {"open": 1e308, "close": 1e308, "volume": 1}, "open"),
]


@pytest.mark.parametrize(("kind", "params", "field"), BAD_GETS)
def test_bad_get_is_422_naming_the_field(client: TestClient, kind: str, params: dict, field: str) -> None:
    answer = client.get(f"/predict/{kind}", params=params)
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "bad_input" and body["field"] == field and field in body["message"]


BAD_POSTS = [
    ("close", b'{"rows": []}', "rows"),
    ("close", b'{"rows": [{"timestamp": 1325412060.0}, {}]}', "rows[1].timestamp"),
    ("close", b'{"rows": [{"timestamp": NaN}]}', "rows[0].timestamp"),
    ("close", b'{"rows": [{"timestamp": Infinity}]}', "rows[0].timestamp"),
    ("close", b'{"rows": [{"timestamp": 1e400}]}', "rows[0].timestamp"),
    ("close", b'{"rows": [{"timestamp": 99}]}', "rows[0].timestamp"),
    ("high_low", b'{"rows": [{"open": "abc", "volume": 1}]}', "rows[0].open"),
    ("high_low", b'{"rows": [{"open": 1, "volume": -2}]}', "rows[0].volume"),
    ("high_low", b'{"rows": {"open": 1}}', "rows"),
    ("high_low", b'{"rows": [1, 2]}', "rows[0]"),
    ("trend", b'{"rows": [{"open": 1, "close": null, "volume": 0}]}', "rows[0].close"),
    ("trend", b"{not json", "body"),
    ("trend", b"", "body"),
    ("trend", b"[]", "body"),
    ("trend", b'{"row": []}', "rows"),
    (
        "trend",
        b'{"rows": [{"open": 1, "close": 1, "volume": 0}, {"open": 1e308, "close": 1e308, "volume": 1}]}',
        "rows[1].open",
    ),
    ("high_low", b'{"rows": [{"open": 1, "volume": 1e300}]}', "rows[0].volume"),
]


@pytest.mark.parametrize(("kind", "body", "field"), BAD_POSTS)
def test_bad_post_is_422_naming_the_field(client: TestClient, kind: str, body: bytes, field: str) -> None:
    answer = client.post(f"/predict/{kind}", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "bad_input" and answer.json()["field"] == field


def test_post_over_the_row_limit_is_422(store: Store) -> None:
    client, _ = client_for(store.uri, max_rows=5)
    assert client.post("/predict/close", json={"rows": [GET["close"]] * 5}).status_code == 200
    answer = client.post("/predict/close", json={"rows": [GET["close"]] * 6})
    assert answer.status_code == 422 and answer.json()["field"] == "rows"


def test_admin_reload_needs_the_token(store: Store) -> None:
    client, _ = client_for(store.uri, admin_token="s3cret")
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/admin/reload", headers={"Authorization": "s3cret"}).status_code == 403
    store.promote("close_v2")
    answer = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200
    close = next(m for m in answer.json()["models"] if m["name"] == "btc-close")
    assert close["version"] == store.template.versions["close_v2"]
    assert client.get("/predict/close", params=GET["close"]).json()["model"]["version"] == close["version"]


def test_admin_reload_absent_without_a_token(client: TestClient) -> None:
    assert client.post("/admin/reload", headers={"Authorization": "Bearer x"}).status_code in (404, 405)
    assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]


def test_a_failed_load_keeps_the_old_version_and_shows_in_models(store: Store) -> None:
    client, gateway = client_for(store.uri)
    before = client.get("/predict/close", params=GET["close"]).json()
    broken = store.promote("close_broken")
    status = gateway.refresh()
    close = next(m for m in status["models"] if m["name"] == "btc-close")
    assert close["version"] == store.template.versions["close"]
    assert close["last_error"]["version"] == broken
    assert "GeneralizedLinearRegressionModel" in close["last_error"]["message"]
    after = client.get("/predict/close", params=GET["close"]).json()
    assert after == before
    assert client.get("/models").json()["models"][0]["last_error"]["version"] == broken
    store.promote("close_v2")  # a good version after the broken one is picked up
    gateway.refresh()
    assert (
        client.get("/predict/close", params=GET["close"]).json()["model"]["version"]
        == (store.template.versions["close_v2"])
    )


def test_alias_alone_is_enough(empty_store: Store) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=empty_store.uri, registry_uri=empty_store.uri).set_registered_model_alias(
        "btc-trend", "production", empty_store.template.versions["trend"]
    )
    client, _ = client_for(empty_store.uri)
    answer = client.get("/predict/trend", params=GET["trend"])
    assert answer.status_code == 200
    assert next(m for m in client.get("/models").json()["models"] if m["kind"] == "trend")["stage"] == (
        "alias:production"
    )
    assert math.isfinite(answer.json()["probability_up"])


def test_spark_engine_answers_like_numpy(store: Store) -> None:
    """BTCFLOW_SERVING_ENGINE=spark: MLflow's Spark flavour in a JVM, same answers as the numpy engine."""
    numpy_client, _ = client_for(store.uri)
    spark_client, gateway = client_for(store.uri, serving_engine="spark")
    assert spark_client.get("/ready").status_code == 200, gateway.status()
    for kind in GET:
        rows = [GET[kind], {k: v * 2 for k, v in GET[kind].items()}]
        ours = numpy_client.post(f"/predict/{kind}", json={"rows": rows}).json()["predictions"]
        spark = spark_client.post(f"/predict/{kind}", json={"rows": rows}).json()["predictions"]
        for a, b in zip(ours, spark, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], float):
                    assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-12), (kind, key)
                else:
                    assert a[key] == b[key]


def test_a_model_no_longer_in_production_is_503(store: Store) -> None:
    """Archived and alias removed: the registry answers "none" twice, so the gateway stops serving it."""
    import warnings

    from mlflow import MlflowClient

    client, gateway = client_for(store.uri)
    assert client.get("/predict/close", params=GET["close"]).status_code == 200
    registry = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry.transition_model_version_stage("btc-close", store.template.versions["close"], "Archived")
    registry.delete_registered_model_alias("btc-close", "production")
    gateway.refresh()  # one answer "none" is not enough: it might be a promotion caught mid-way
    assert client.get("/predict/close", params=GET["close"]).status_code == 200
    gateway.refresh()
    answer = client.get("/predict/close", params=GET["close"])
    assert answer.status_code == 503 and answer.json()["model"] == "btc-close"
    assert client.post("/predict/close", json={"rows": [GET["close"]]}).status_code == 503
    assert client.get("/ready").json()["missing"] == ["btc-close"]
    assert client.get("/predict/trend", params=GET["trend"]).status_code == 200  # the others still serve
    store.promote("close_v2")
    gateway.refresh()
    assert (
        client.get("/predict/close", params=GET["close"]).json()["model"]["version"]
        == (store.template.versions["close_v2"])
    )


class FlakyRegistry(Registry):
    """The real registry, except that downloading `version` fails `failures` times first (a store hiccup)."""

    def __init__(self, uri: str, version: str, failures: int) -> None:
        super().__init__(uri)
        self.version, self.failures, self.calls = version, failures, 0

    def download(self, name: str, version: str, dst: Path) -> Path:
        if version == self.version:
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("artifact store briefly unreachable")
        return super().download(name, version, dst)


def test_a_transient_load_failure_is_retried_after_a_backoff(store: Store) -> None:
    new = store.template.versions["close_v2"]
    registry = FlakyRegistry(store.uri, new, failures=2)
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config, registry)
    gateway.refresh()
    client = TestClient(create_app(config, gateway))
    old = store.template.versions["close"]
    store.promote("close_v2")

    def serving() -> str:
        return client.get("/predict/close", params=GET["close"]).json()["model"]["version"]

    calls_and_versions = []
    for _ in range(6):
        gateway.refresh()
        calls_and_versions.append((registry.calls, serving()))
    # fails, skips 1 check, fails again, skips 2 checks, then loads it
    assert calls_and_versions == [(1, old), (1, old), (2, old), (2, old), (2, old), (3, new)]
    assert gateway.status()["models"][0]["last_error"] is None


def test_an_unsupported_version_is_not_retried_by_the_poller(store: Store) -> None:
    broken = store.template.versions["close_broken"]
    registry = FlakyRegistry(store.uri, broken, failures=0)
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config, registry)
    gateway.refresh()
    store.promote("close_broken")
    for _ in range(5):
        gateway.refresh()
    assert registry.calls == 1
    assert gateway.status()["models"][0]["last_error"]["retry"] == "only on POST /admin/reload"
    gateway.refresh(force=True)
    assert registry.calls == 2


@pytest.mark.parametrize("kind", ["high_low", "trend"])
def test_the_largest_accepted_values_answer_finite_numbers(client: TestClient, kind: str) -> None:
    row = {k: 1e15 for k in GET[kind]}
    for answer in (
        client.get(f"/predict/{kind}", params=row).json(),
        client.post(f"/predict/{kind}", json={"rows": [GET[kind], row]}).json()["predictions"][1],
    ):
        numbers = [v for k, v in answer.items() if k not in ("model", "predicted_trend")]
        assert numbers and all(isinstance(v, float) and math.isfinite(v) for v in numbers), answer


class NaNTrend:
    """A trend model whose probability overflows to NaN on the second row of a batch (and on a GET)."""

    def outputs(self, columns: dict) -> dict:
        n = len(columns["Open"])
        probability = [[0.5, 0.5]] * n
        probability[min(1, n - 1)] = [math.nan, math.nan]
        return {"prediction": [0.0] * n, "probability": probability}


def test_a_non_finite_model_output_is_a_clear_422_not_null(store: Store) -> None:
    import dataclasses

    client, gateway = client_for(store.uri)
    gateway._swap("trend", dataclasses.replace(gateway.model("trend"), evaluator=NaNTrend()))
    answer = client.get("/predict/trend", params=GET["trend"])
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "bad_input" and answer.json()["field"] == "query"
    assert "no finite answer" in answer.json()["message"]
    answer = client.post("/predict/trend", json={"rows": [GET["trend"]] * 3})
    assert answer.status_code == 422 and answer.json()["field"] == "rows[1]"


class HeldClose:
    """A close model that holds its caller until released: a stand-in for a 10,000-row batch."""

    def __init__(self, inner: object) -> None:
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def outputs(self, columns: dict) -> dict:
        if len(columns["Timestamp"]) > 1:
            self.entered.set()
            self.release.wait(20)
        return self.inner.outputs(columns)  # type: ignore[attr-defined]


def test_a_slow_post_does_not_stall_other_requests(store: Store) -> None:
    import dataclasses

    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config)
    gateway.refresh()
    held = HeldClose(gateway.model("close").evaluator)
    gateway._swap("close", dataclasses.replace(gateway.model("close"), evaluator=held))
    with TestClient(create_app(config, gateway)) as client:  # one event loop for every request
        posted: list[int] = []
        post = threading.Thread(
            target=lambda: posted.append(
                client.post("/predict/close", json={"rows": [GET["close"]] * 2}).status_code
            )
        )
        post.start()
        try:
            assert held.entered.wait(20)
            assert client.get("/health").status_code == 200
            assert client.get("/predict/close", params=GET["close"]).status_code == 200
            answered_while_held = not held.release.is_set() and post.is_alive()
        finally:
            held.release.set()
            post.join(30)
    assert answered_while_held and posted == [200]


def test_request_fields_cover_exactly_each_models_inputs() -> None:
    """Names and input columns come from training.specs; the request models must carry exactly those."""
    from serving.models import SPECS
    from serving.schemas import ROWS
    from training.specs import SPECS as MODEL_SPECS

    assert set(SPECS) == set(ROWS) == set(MODEL_SPECS)
    for kind, spec in SPECS.items():
        assert spec.name == MODEL_SPECS[kind].registered_name == NAMES[kind]
        assert sorted(spec.inputs.values()) == sorted(MODEL_SPECS[kind].features)
        assert set(ROWS[kind].model_fields) == set(spec.inputs)
