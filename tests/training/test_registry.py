"""Promotion by version and by the champion/challenger gate, on a real MLflow store."""

from __future__ import annotations

import json
import warnings

import pytest
from mlflow import MlflowClient

from core.errors import BadInput, RegistryUnavailable
from tests.training.conftest import minute_table, write_batches
from training.data import read_manifest
from training.gate import promote_best
from training.registry import production_version, promote_version
from training.settings import TrainingSettings
from training.specs import SPECS
from training.tracking import connect
from training.train import train_selection

BAD = {"reg_param": 1e6}  # ridge so strong the line is flat: it predicts the training mean


def _production(client: MlflowClient) -> tuple[str, list[str]]:
    alias = str(client.get_model_version_by_alias("btc-close", "production").version)
    staged = [
        str(v.version)
        for v in client.search_model_versions("name='btc-close'")
        if v.current_stage == "Production"
    ]
    return alias, staged


def test_champion_challenger_gate_and_promotion_by_version(spark, store_settings: TrainingSettings) -> None:
    # A steady drift: a fitted line extrapolates well, a flat one (BAD) falls further behind every minute.
    write_batches(store_settings.batch_dir, minute_table(3000, drift=0.05, walk=0.02), [1000, 1000, 1000])
    batches = read_manifest(store_settings.batch_dir)
    connect(store_settings)
    client = MlflowClient()
    spec = [SPECS["close"]]

    [v1] = train_selection(spark, store_settings, spec, batches[:1], "cumulative", BAD)
    first = promote_best(store_settings, "close", spark)
    assert first.promoted and first.version == "1" and first.previous is None
    assert _production(client) == ("1", ["1"])

    [v2] = train_selection(spark, store_settings, spec, batches[:2], "cumulative")
    second = promote_best(store_settings, "close", spark)
    assert second.promoted and second.version == "2" and second.previous == "1", second.message
    assert _production(client) == ("2", ["2"])
    assert client.get_model_version("btc-close", "1").current_stage == "Archived"
    tags = client.get_model_version("btc-close", "2").tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.champion"] == "1"
    compared = json.loads(tags["promotion.compared"])
    assert compared["2"] < compared["1"] and tags["promotion.metric"] == "rmse"
    # the window starts after the newest training row of both versions: v2's test rows and batch 3
    newest = float(client.get_run(v2.run_id).data.tags["btcflow.train_max_ts"])
    assert tags["promotion.window"].startswith(f"Timestamp {newest:.0f} < ts")

    train_selection(spark, store_settings, spec, batches, "cumulative", BAD)
    third = promote_best(store_settings, "close", spark)
    assert not third.promoted and "does not beat" in third.message
    assert _production(client) == ("2", ["2"])
    assert client.get_model_version("btc-close", "3").tags["promotion.decision"] == "kept v2"

    by_hand = promote_version(store_settings, "close", 3)
    assert by_hand.promoted and by_hand.previous == "2" and "v2 archived" in by_hand.message
    assert _production(client) == ("3", ["3"])
    assert not promote_version(store_settings, "close", 3).promoted  # already Production
    with pytest.raises(BadInput, match="no version 9"):
        promote_version(store_settings, "close", 9)
    assert v1.version == "1"


def test_best_without_any_version_is_bad_input(store_settings: TrainingSettings) -> None:
    write_batches(store_settings.batch_dir, minute_table(100), [100])
    with pytest.raises(BadInput):
        promote_best(store_settings, "trend")


def _registered(settings: TrainingSettings, count: int) -> MlflowClient:
    """`btc-close` with `count` versions (no artifacts needed to read stages and aliases)."""
    connect(settings)
    client = MlflowClient()
    client.create_registered_model("btc-close")
    for _ in range(count):
        client.create_model_version("btc-close", source="file:///nowhere", run_id=None)
    return client


def test_production_is_the_stage_first_then_the_alias(store_settings: TrainingSettings) -> None:
    """Like the gateway: a registry edited by hand (stage v1, alias v2) serves v1, so the gate compares v1."""
    client = _registered(store_settings, 3)
    spec = SPECS["close"]
    assert production_version(client, spec) is None
    client.set_registered_model_alias("btc-close", "production", "2")
    assert str(production_version(client, spec).version) == "2"  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("btc-close", "1", "Production")
    assert str(production_version(client, spec).version) == "1"  # type: ignore[union-attr]
    assert production_version(client, SPECS["trend"]) is None  # never registered


@pytest.mark.parametrize("stage", [True, False])
def test_a_registry_that_does_not_answer_is_not_no_champion(
    store_settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch, stage: bool
) -> None:
    """Store down (here: nothing listens) is exit 3, never None: --best must not promote blind."""
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    if stage:
        down = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    else:  # the stage lookup answers "none", then the alias lookup fails
        client = _registered(store_settings, 1)

        def fail(*_: object) -> None:
            raise MlflowException("database is locked", error_code="TEMPORARILY_UNAVAILABLE")

        monkeypatch.setattr(client, "get_model_version_by_alias", fail)
        down = client
    with pytest.raises(RegistryUnavailable, match="unusable") as error:
        production_version(down, SPECS["close"])
    assert error.value.exit_code == 3


class Answers:
    """A registry client whose stage and alias lookups raise (or return) what a store would."""

    def __init__(self, staged: object, alias: object) -> None:
        self.staged, self.alias = staged, alias

    @staticmethod
    def _give(what: object) -> object:
        if isinstance(what, BaseException):
            raise what
        return what

    def get_latest_versions(self, name: str, stages: list[str]) -> object:
        return self._give(self.staged)

    def get_model_version_by_alias(self, name: str, alias: str) -> object:
        return self._give(self.alias)


def _mlflow_error(code: str, message: str) -> Exception:
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import ErrorCode

    if message.startswith("REST "):  # as the REST store raises it: the server's JSON, code prefixed
        return RestException({"error_code": code, "message": message[5:]})
    return MlflowException(message, error_code=ErrorCode.Value(code))


NO_MODEL = ("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=btc-close not found")
NO_ALIAS_SQL = ("INVALID_PARAMETER_VALUE", "Registered model alias production not found.")
NO_ALIAS_REST = ("INVALID_PARAMETER_VALUE", "REST Registered model alias production not found.")


@pytest.mark.parametrize(
    ("staged", "alias"),
    [
        (NO_MODEL, None),  # never registered: no alias lookup at all
        ([], NO_ALIAS_SQL),  # registered, nothing staged, no alias: the SQL store's answer
        ([], NO_ALIAS_REST),  # the same through `mlflow server` (measured on MLflow 3.17: same code)
        ([], ("RESOURCE_DOES_NOT_EXIST", "REST alias production not found")),  # a registry that says 404
    ],
)
def test_the_registry_answering_none_is_absent(staged: object, alias: object) -> None:
    from core import registry

    def given(x: object) -> object:
        return _mlflow_error(*x) if isinstance(x, tuple) else x

    assert registry.production(Answers(given(staged), given(alias)), "btc-close") is None


@pytest.mark.parametrize(
    "error",
    [
        (
            "INVALID_PARAMETER_VALUE",
            "Invalid name: 'btc close'",
        ),  # INVALID_PARAMETER_VALUE is not always absence
        ("ENDPOINT_NOT_FOUND", "API request to endpoint failed with error code 404 != 200"),  # a proxy's 404
        ("INTERNAL_ERROR", "REST (psycopg2.OperationalError) server closed the connection unexpectedly"),
        ("TEMPORARILY_UNAVAILABLE", "database is locked"),
        "connection",
        "sql",
    ],
)
def test_anything_else_is_the_store_unavailable(error: object) -> None:
    from core import registry

    if error == "connection":
        exc: Exception = ConnectionError("Connection refused")
    elif error == "sql":
        from sqlalchemy.exc import OperationalError

        exc = OperationalError("SELECT 1", {}, Exception("disk I/O error"))
    else:
        exc = _mlflow_error(*error)  # type: ignore[misc]
    for client in (Answers(exc, None), Answers([], exc)):
        with pytest.raises(RegistryUnavailable):
            registry.production(client, "btc-close")


def test_the_gateway_and_training_share_the_rule_and_map_its_errors() -> None:
    from serving.registry import Registry
    from training.registry import production_version

    down = Answers([], _mlflow_error("INTERNAL_ERROR", "REST boom"))
    with pytest.raises(RegistryUnavailable, match="unusable"):
        production_version(down, SPECS["close"])  # type: ignore[arg-type]
    gateway_registry = Registry("http://127.0.0.1:9")
    gateway_registry._client = down
    with pytest.raises(RegistryUnavailable, match="127.0.0.1:9") as error:
        gateway_registry.production("btc-close")
    assert error.value.exit_code == 3
    gateway_registry._client = Answers([], _mlflow_error(*NO_ALIAS_REST))
    assert gateway_registry.production("btc-close") is None
