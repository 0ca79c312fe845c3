"""The --best gate against a real store: the naive baseline, a champion the store cannot load, a promotion
that happens while the gate decides, and the history and rollback that follow.

Two close versions are trained once for the module (the expensive part); each test works on its own
copy of the SQLite registry, whose versions share the template's artifacts (only ever read).
"""

from __future__ import annotations

import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core.errors import BadInput, RegistryUnavailable
from core.registry import is_absent
from tests.training.conftest import minute_table, training_settings, write_batches
from training import gate
from training.data import read_batches, read_manifest
from training.gate import promote_best
from training.registry import PromotionConflict, production_state, promote_version, promotions, rollback
from training.settings import TrainingSettings
from training.specs import SPECS, build_pipeline, resolve_params
from training.tracking import connect

BAD = {"regParam": 1e6}  # ridge so strong the line is flat: the training mean, worse than the last Close


@dataclass(frozen=True)
class Template:
    root: Path  # data/ (the batches) and mlruns/ (the registry and the artifacts)
    unreachable: str  # v1's source: an artifact server on a port nothing listens on


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register(spark, settings: TrainingSettings, batches: int, params: dict[str, float]) -> None:
    """A close version as the gate sees one (a Spark model and the newest Timestamp it trained on), without
    train_one's plots, metrics and input example: the gate reads none of them, and they cost seconds."""
    import mlflow

    spec = SPECS["close"]
    manifest = read_manifest(settings.batch_dir)[:batches]
    rows = read_batches(spark, settings.batch_dir, manifest)
    train = rows.where(rows.Timestamp < manifest[-1].max_ts - 60 * 200)  # the last 200 minutes: its test rows
    fitted = build_pipeline(spec, resolve_params(spec, params)).fit(train)
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.spark.log_model(
            fitted, "model", registered_model_name=spec.registered_name, pip_requirements=["pyspark"]
        )
    newest = repr(float(train.agg({"Timestamp": "max"}).first()[0]))  # type: ignore[index]
    MlflowClient().set_model_version_tag(
        spec.registered_name, str(info.registered_model_version), "btcflow.train_max_ts", newest
    )


@pytest.fixture(scope="module")
def template(spark, tmp_path_factory: pytest.TempPathFactory) -> Template:
    """btc-close v1: registered by hand, artifacts behind a closed port; v2: flat (BAD) on batch 1;
    v3: a good fit on batches 1-2. Steady drift: a fitted line extrapolates, a flat one falls behind."""
    root = tmp_path_factory.mktemp("gate")
    settings = training_settings(root)
    write_batches(settings.batch_dir, minute_table(3000, drift=0.05, walk=0.02), [1000, 1000, 1000])
    connect(settings)
    client = MlflowClient()
    client.create_registered_model("btc-close")
    unreachable = f"http://127.0.0.1:{_closed_port()}/api/2.0/mlflow-artifacts/artifacts/0/model"
    client.create_model_version("btc-close", source=unreachable, run_id=None)
    _register(spark, settings, 1, BAD)
    _register(spark, settings, 2, {})
    return Template(root, unreachable)


@pytest.fixture
def store(template: Template, tmp_path: Path) -> TrainingSettings:
    """A copy of the template's registry for one test (batches and artifacts shared, read only)."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(template.root / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    settings = training_settings(tmp_path).model_copy(update={"data_dir": template.root / "data"})
    connect(settings)
    return settings


def _production(client: MlflowClient) -> tuple[str | None, str | None]:
    state = production_state(client, SPECS["close"])
    return state.stage, state.alias


def test_a_challenger_below_the_baseline_is_refused_only_when_asked(spark, store: TrainingSettings) -> None:
    client = MlflowClient()
    client.delete_model_version("btc-close", "3")  # left: v2, flat, and no Production to beat
    refused = promote_best(store, "close", spark, require_baseline=True)
    assert not refused.promoted and refused.beats_baseline is False and refused.baseline is not None
    assert "does not beat it" in refused.message and "does not beat the baseline" in refused.message
    assert "nothing changed" in refused.message
    assert _production(client) == (None, None) and promotions(store, "close") == []
    tags = client.get_model_version("btc-close", "2").tags
    assert tags["promotion.decision"] == "refused: below baseline"
    assert tags["promotion.baseline_from"] == "the last Close before the window"

    promoted = promote_best(store, "close", spark)
    assert promoted.promoted and "although it does not beat the baseline" in promoted.message
    assert promoted.baseline == pytest.approx(refused.baseline)
    assert promoted.compared["2"] > promoted.baseline  # rmse: lower is better
    assert _production(client) == ("2", "2")
    [record] = promotions(store, "close")
    assert (record.by, record.previous, record.to, record.metric) == ("gate", None, "2", "rmse")
    assert record.values == {"2": pytest.approx(promoted.compared["2"])}
    assert record.baseline == pytest.approx(promoted.baseline) and record.rows and record.rows > 1000
    assert f"on {record.rows:,} unseen rows" in promoted.message


def test_a_promotion_during_the_gate_aborts_it_then_rollback_follows_the_history(
    spark, store: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    promote_version(store, "close", 2)
    scores = gate._scores

    def meanwhile(*args: object, **kwargs: object) -> object:  # another user promotes while the gate scores
        found = scores(*args, **kwargs)  # type: ignore[arg-type]
        promote_version(store, "close", 3)
        return found

    monkeypatch.setattr(gate, "_scores", meanwhile)
    with pytest.raises(PromotionConflict, match=r"moved while .* \(v2, now v3\); nothing changed") as error:
        promote_best(store, "close", spark)
    assert error.value.exit_code == 2
    assert _production(client) == ("3", "3")  # the other promotion stands; the gate wrote nothing
    history = promotions(store, "close")
    assert [(r.by, r.previous, r.to) for r in history] == [("hand", "2", "3"), ("hand", None, "2")]

    back = rollback(store, "close")
    assert back.promoted and back.message == "btc-close rolled back: v2 is Production again; v3 archived"
    assert _production(client) == ("2", "2")
    assert client.get_model_version("btc-close", "3").current_stage == "Archived"
    newest = promotions(store, "close")[0]
    assert (newest.by, newest.previous, newest.to) == ("rollback", "3", "2")
    with pytest.raises(BadInput, match="no version of btc-close before v2 is recorded"):
        rollback(store, "close")  # v2 was the first Production: rollbacks do not toggle back to v3
    assert _production(client) == ("2", "2")


def test_a_champion_the_store_cannot_load_stops_the_gate(
    spark, store: TrainingSettings, template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused on the champion's artifacts is not "it no longer exists": exit 3, nothing moves."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient()
    assert client.get_model_version("btc-close", "1").source == template.unreachable
    promote_version(store, "close", 1)
    with pytest.raises(RegistryUnavailable, match="Production v1 of btc-close could not be loaded") as error:
        promote_best(store, "close", spark)
    assert error.value.exit_code == 3 and "nothing changed" in str(error.value)
    assert "\n" not in str(error.value)
    assert not is_absent(error.value.__cause__)  # type: ignore[arg-type]
    assert _production(client) == ("1", "1")
    assert "promotion.decision" not in client.get_model_version("btc-close", "3").tags
