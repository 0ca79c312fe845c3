"""Pure logic of following the registry: when a model is dropped, the follower's triggers, webhook
signatures, and the spec check at load. No MLflow store, no Spark: fakes stand in for both."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core.errors import RegistryUnavailable
from core.registry import Production
from serving import specs, webhooks
from serving.errors import Unauthorized, UnsupportedModel
from serving.following import Follower, signal_change
from serving.models import Gateway
from serving.settings import ServingSettings

NONE = object()  # a scripted "the registry answers: no Production version"


class ScriptedRegistry:
    """btc-close answers from a script (a version, NONE, or an exception); the other models have none."""

    def __init__(self, script: list[object]) -> None:
        self.script = list(script)

    def production(self, name: str) -> Production | None:
        if name != "btc-close":
            return None
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return None if step is NONE else Production(name, str(step), "r" * 32, "Production")


class FakeClose:
    """A btc-close evaluator of the right shape, or not (`inputs`, `prediction` given)."""

    def __init__(self, inputs: list[str] | None = None, prediction: object = 1.0) -> None:
        self.inputs = ["Timestamp"] if inputs is None else inputs
        self.prediction = prediction

    def outputs(self, columns: dict) -> dict:
        n = len(next(iter(columns.values())))
        return {"prediction": [self.prediction] * n}


class FakeGateway(Gateway):
    def _load(self, spec: specs.Spec, version: str) -> FakeClose:  # type: ignore[override]
        return FakeClose()


def serving(gateway: Gateway) -> str | None:
    return next(m["version"] for m in gateway.status()["models"] if m["kind"] == "close")


def test_a_model_is_dropped_only_after_two_none_answers_in_a_row_and_never_on_an_error() -> None:
    down = RegistryUnavailable("MLflow registry at http://x: connection refused")
    script = ["1", NONE, "1", NONE, down, down, NONE, "2"]
    gateway = FakeGateway(ServingSettings(tracking_uri="sqlite://"), ScriptedRegistry(script))  # type: ignore[arg-type]
    seen = []
    for _ in script:
        gateway.refresh()
        seen.append((serving(gateway), gateway.status()["registry_error"] is not None))
    assert seen == [
        ("1", False),
        ("1", False),  # one odd answer: still serving
        ("1", False),  # and the next one names it again: the count starts over
        ("1", False),
        ("1", True),  # the store did not answer: never a reason to unload
        ("1", True),
        (None, False),  # the second "none" answer in a row (errors are not answers): dropped, 503
        ("2", False),
    ]


def test_the_follower_refreshes_on_its_interval_on_a_nudge_and_on_the_shared_file(tmp_path: Path) -> None:
    calls: list[float] = []
    called = threading.Event()

    def refresh() -> None:
        calls.append(time.monotonic())
        called.set()

    def next_call(within_s: float) -> float:
        called.clear()
        start = time.monotonic()
        assert called.wait(within_s), "no refresh"
        return time.monotonic() - start

    follower = Follower(refresh, interval_s=60, run_dir=tmp_path, tick_s=0.05)
    follower.start()
    try:
        assert called.wait(5) and len(calls) == 1  # at once on start
        follower.nudge()
        assert next_call(1.0) < 0.5
        signal_change(tmp_path)  # another worker heard the webhook
        assert next_call(1.0) < 0.5
        time.sleep(0.3)
        assert len(calls) == 3  # nothing else: the interval is a minute
    finally:
        follower.stop()
    fast = Follower(refresh, interval_s=0.2)
    fast.start()
    try:
        before = len(calls)
        time.sleep(1.0)
        assert 3 <= len(calls) - before <= 7
    finally:
        fast.stop()


def test_a_failing_refresh_never_stops_the_follower() -> None:
    calls = []

    def refresh() -> None:
        calls.append(1)
        raise RuntimeError("boom")

    follower = Follower(refresh, interval_s=0.05)
    follower.start()
    time.sleep(0.5)
    follower.stop()
    assert len(calls) >= 3


# -- webhook signatures -----------------------------------------------------------------------------
BODY = (
    b'{"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00", '
    b'"data": {"name": "btc-close", "alias": "production", "version": "2"}}'
)


def mlflow_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers MLflow's own delivery code sends (its private signer, so ours cannot drift from it)."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    delivery = "0b0e7bd6-6a4f-4d5c-9f7e-3c2d1b0a9f8e"
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, str(timestamp), body.decode()),
    }


def test_a_delivery_signed_as_mlflow_signs_it_is_accepted() -> None:
    now = int(time.time())
    webhooks.verify("s3cret", mlflow_headers("s3cret", BODY, now), BODY, tolerance_s=300)
    assert webhooks.sign("s3cret", "d", "1", b"{}") == mlflow_headers_value("s3cret", "d", "1", "{}")


def mlflow_headers_value(secret: str, delivery: str, timestamp: str, body: str) -> str:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    return _generate_hmac_signature(secret, delivery, timestamp, body)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret", "does not match"),
        ("body changed", "does not match"),
        ("stale", "away from now"),
        ("re-dated", "does not match"),
        ("no signature", "without"),
        ("not a number", "Unix seconds"),
    ],
)
def test_a_bad_delivery_is_unauthorized(case: str, message: str) -> None:
    now = int(time.time())
    secret, body = "s3cret", BODY
    headers = mlflow_headers(
        "other" if case == "wrong secret" else secret, BODY, now - 600 * (case == "stale")
    )
    if case == "body changed":
        body = BODY.replace(b"btc-close", b"btc-trend")
    if case == "re-dated":  # a captured delivery sent again with a fresh timestamp
        headers = {**mlflow_headers(secret, BODY, now - 3600), "X-MLflow-Timestamp": str(now)}
    if case == "no signature":
        headers.pop("X-MLflow-Signature")
    if case == "not a number":
        headers["X-MLflow-Timestamp"] = "yesterday"
    with pytest.raises(Unauthorized, match=message) as refused:
        webhooks.verify(secret, headers, body, tolerance_s=300)
    assert refused.value.status_code == 401


def test_only_our_models_alias_events_ask_for_a_refresh() -> None:
    names = {"btc-close", "btc-trend"}
    assert webhooks.changed_model(BODY, names) == "btc-close"
    assert webhooks.changed_model(BODY.replace(b'"created"', b'"deleted"'), names) == "btc-close"
    assert webhooks.changed_model(BODY.replace(b"btc-close", b"example_model"), names) is None
    assert webhooks.changed_model(BODY.replace(b"model_version_alias", b"model_version_tag"), names) is None
    assert webhooks.changed_model(b"not json", names) is None


def test_the_webhook_name_is_stable_per_gateway_address() -> None:
    settings = ServingSettings(tracking_uri="http://127.0.0.1:5000")
    url = webhooks.url_for(settings, "127.0.0.1", 8000)
    assert url == "http://127.0.0.1:8000/webhooks/mlflow"
    assert webhooks.name_for(url) == "btcflow-gateway-127.0.0.1-8000"
    assert webhooks.wanted(settings)
    assert not webhooks.wanted(ServingSettings(tracking_uri="http://h:5000", webhooks="off"))
    assert not webhooks.wanted(ServingSettings(tracking_uri="sqlite:////tmp/x.db"))


# -- the spec check at load --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        (FakeClose(inputs=["Open"]), r"reads columns \['Open'\], but btc-close takes \['Timestamp'\]"),
        (FakeClose(inputs=["Timestamp", "Open"]), "reads columns"),
        (FakeClose(prediction=[1.0, 2.0]), "is not a number"),
        (FakeClose(prediction=None), "is not a number"),
    ],
)
def test_a_version_unlike_its_spec_is_unsupported(evaluator: FakeClose, message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        specs.check(specs.SPECS["close"], "7", evaluator)


def test_the_spec_check_knows_each_models_shape() -> None:
    specs.check(specs.SPECS["close"], "1", FakeClose())
    with pytest.raises(UnsupportedModel, match=r"not a \[high, low\] vector"):
        specs.check(specs.SPECS["high_low"], "1", FakeClose(inputs=["Open", "Volume"]))
    with pytest.raises(UnsupportedModel, match="probability"):
        specs.check(specs.SPECS["trend"], "1", FakeClose(inputs=["Open", "Close", "Volume"]))
