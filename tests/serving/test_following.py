"""Pure logic of following the registry: when a model is dropped, the follower's triggers, webhook
signatures, and the spec check at load. No MLflow store, no Spark: fakes stand in for both."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import RegistryUnavailable
from core.registry import Production
from serving import specs, webhooks
from serving.errors import Unauthorized, UnsupportedModel
from serving.following import Follower, signal_change
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.waiting import wait_until

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


class SimClock:
    """Simulated time for a follower run in the test's own thread: `wait` returns at once, the time moved
    on to its timeout, or to the first scheduled action (run there, in that thread) that sets the event."""

    def __init__(self) -> None:
        self.now = 0.0
        self.actions: list[tuple[float, Callable[[], object]]] = []
        self.waits: list[float] = []

    def at(self, when: float, action: Callable[[], object]) -> None:
        self.actions = sorted([*self.actions, (when, action)], key=lambda a: a[0])

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        assert len(self.waits) < 100_000, "the follower never stopped"
        self.waits.append(timeout_s)
        end = self.now + timeout_s
        while not event.is_set() and self.actions and self.actions[0][0] <= end:
            when, action = self.actions.pop(0)
            self.now = max(self.now, when)
            action()
        if event.is_set():
            return True
        self.now = end
        return False


def test_the_follower_refreshes_on_its_interval_on_a_nudge_and_on_the_shared_file(tmp_path: Path) -> None:
    clock = SimClock()
    calls: list[float] = []
    follower = Follower(
        lambda: calls.append(clock.now), interval_s=60, run_dir=tmp_path, tick_s=0.25, clock=clock
    )
    clock.at(1.0, follower.nudge)  # this process heard the webhook: at once
    clock.at(2.1, lambda: signal_change(tmp_path))  # another worker heard it: seen at the next tick
    clock.at(150.0, follower.stop)
    follower.run()
    # at once on start, on the nudge, at the tick after the file moved, then every minute after the last
    assert calls == [0.0, 1.0, 2.25, 62.25, 122.25]
    assert max(clock.waits) == 0.25  # with a run folder it looks at the file every tick


def test_without_a_run_folder_the_follower_sleeps_out_its_interval() -> None:
    clock = SimClock()
    calls: list[float] = []
    follower = Follower(lambda: calls.append(clock.now), interval_s=0.25, clock=clock)
    clock.at(1.0, follower.stop)
    follower.run()
    assert calls == [0.0, 0.25, 0.5, 0.75]
    assert clock.waits == [0.25] * 4  # no ticks: nothing to look at between refreshes


def test_a_failing_refresh_never_stops_the_follower(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock()
    calls: list[float] = []

    def refresh() -> None:
        calls.append(clock.now)
        raise RuntimeError("boom")

    follower = Follower(refresh, interval_s=0.25, clock=clock)
    clock.at(1.0, follower.stop)
    follower.run()
    assert calls == [0.0, 0.25, 0.5, 0.75]
    assert [r.getMessage() for r in caplog.records] == ["registry check failed"] * 4


def test_the_follower_thread_refreshes_on_start_on_a_nudge_and_on_the_shared_file(tmp_path: Path) -> None:
    """The same triggers on the real clock, in the thread `start()` runs: waits on each refresh, no timing."""
    calls: list[float] = []
    follower = Follower(lambda: calls.append(time.monotonic()), interval_s=60, run_dir=tmp_path, tick_s=0.05)
    follower.start()
    thread = follower._thread
    try:
        wait_until(lambda: len(calls) == 1, 5, "the refresh on start", every_s=0.01)
        follower.nudge()
        wait_until(lambda: len(calls) == 2, 5, "a refresh on the nudge", every_s=0.01)
        signal_change(tmp_path)
        wait_until(lambda: len(calls) == 3, 5, "a refresh on the shared file", every_s=0.01)
    finally:
        follower.stop(5)
    assert thread is not None and not thread.is_alive() and len(calls) == 3


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
