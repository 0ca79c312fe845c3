"""Stage and alias kept in agreement, the promotion history and rollback, on real stores (no Spark: the
versions are registered without artifacts, which reading and moving Production never need)."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core.errors import BadInput
from services.mlflow_server import TrackingServer
from tests.training.conftest import training_settings
from training import history
from training.registry import production_state, promote_version, promotions, rollback
from training.settings import TrainingSettings
from training.specs import SPECS
from training.tracking import connect


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store, its schema created once (MLflow's migrations take seconds per new store)."""
    root = tmp_path_factory.mktemp("empty-store")
    connect(training_settings(root))
    return root / "mlruns" / "mlflow.db"


@pytest.fixture
def store_settings(tmp_path: Path, empty_db: Path) -> TrainingSettings:
    """conftest's store_settings, on a copy of the empty store."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_db, tmp_path / "mlruns" / "mlflow.db")
    return training_settings(tmp_path)


def _registered(settings: TrainingSettings, count: int, source: str = "file:///nowhere") -> MlflowClient:
    connect(settings)
    client = MlflowClient()
    name = SPECS["close"].registered_name
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, source=source, run_id=None)
    return client


def _both(client: MlflowClient) -> tuple[str | None, str | None]:
    state = production_state(client, SPECS["close"])
    return state.stage, state.alias


def test_promote_version_repairs_a_half_finished_promotion(store_settings: TrainingSettings) -> None:
    client = _registered(store_settings, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("btc-close", "2", "Production")  # the alias write never came
    assert _both(client) == ("2", None)
    fixed = promote_version(store_settings, "close", 2)
    assert fixed.repaired and not fixed.promoted and "(repaired)" in fixed.message
    assert "stage on v2, alias on no version" in fixed.message
    assert _both(client) == ("2", "2")
    assert promote_version(store_settings, "close", 2).message.endswith("already Production; nothing changed")

    client.set_registered_model_alias("btc-close", "production", "3")  # stage v2, alias v3: v2 is served
    moved = promote_version(store_settings, "close", 3)
    assert moved.promoted and moved.previous == "2" and moved.repaired
    assert "it was stage on v2, alias on v3, both records now agree" in moved.message
    assert _both(client) == ("3", "3")
    assert client.get_model_version("btc-close", "2").current_stage == "Archived"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("btc-close", "3", "None")  # alias only
    assert _both(client) == (None, "3")
    assert promote_version(store_settings, "close", 3).repaired
    assert _both(client) == ("3", "3")
    # repairs moved nothing the gateway serves: only the one real move is in the history
    assert [(r.by, r.previous, r.to) for r in promotions(store_settings, "close")] == [("hand", "2", "3")]


def test_history_is_newest_first_and_rollback_walks_it_back(store_settings: TrainingSettings) -> None:
    client = _registered(store_settings, 3)
    assert promotions(store_settings, "close") == []
    with pytest.raises(BadInput, match="btc-close has no Production version to roll back"):
        rollback(store_settings, "close")
    for version in (1, 2, 3):
        promote_version(store_settings, "close", version)
    records = promotions(store_settings, "close")
    assert [(r.by, r.previous, r.to) for r in records] == [
        ("hand", "2", "3"),
        ("hand", "1", "2"),
        ("hand", None, "1"),
    ]
    assert records[0].at > records[1].at > records[2].at and records[0].at.tzinfo is not None
    tags = client.get_registered_model("btc-close").tags
    assert all(key.startswith("btcflow.promotion.20") for key in tags)
    assert rollback(store_settings, "close").version == "2"
    assert rollback(store_settings, "close").version == "1"
    assert _both(client) == ("1", "1")
    assert [r.by for r in promotions(store_settings, "close")][:2] == ["rollback", "rollback"]

    promote_version(store_settings, "close", 3)  # 1 -> 3, then v1 is deleted: nothing to go back to
    client.delete_model_version("btc-close", "1")
    with pytest.raises(
        BadInput, match="btc-close v1, Production before v3, no longer exists; nothing changed"
    ):
        rollback(store_settings, "close")
    assert _both(client) == ("3", "3")


def test_a_record_is_compact_json_within_the_sql_column() -> None:
    record = history.Record(
        "12", "gate", "9", metric="rmse", values={str(v): 1 / 3 for v in range(400)}, baseline=0.5, rows=91000
    )
    text = record.to_json()
    assert len(text) <= history.MAX_VALUE and " " not in text
    back = history.Record.from_json(text)
    assert back is not None and (back.to, back.by, back.previous, back.rows) == ("12", "gate", "9", 91000)
    assert set(back.values) == {"12", "9"}  # too many to keep: the two that matter
    assert history.Record.from_json('{"to": 1}') is None  # edited by hand into something else: skipped
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert dataclasses.replace(record, at=at).key == "btcflow.promotion.20260102T030405.678901Z"


def test_history_and_rollback_through_mlflow_server(
    tracking_server: TrackingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REST and PostgreSQL: the tag keys pass the server's validation, the values fit its VARCHAR(5000),
    a missing alias reads as absent. A name of its own, so the session's other users never see it."""
    name = f"btc-close-history-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(SPECS, "close", dataclasses.replace(SPECS["close"], registered_name=name))
    settings = training_settings(tmp_path).model_copy(update={"tracking_uri_env": tracking_server.uri})
    connect(settings)
    client = MlflowClient()
    client.create_registered_model(name)
    try:
        for _ in range(2):
            client.create_model_version(name, source="s3://btcflow-test/model", run_id=None)
        assert promote_version(settings, "close", 1).promoted
        assert promote_version(settings, "close", 2).promoted
        back = rollback(settings, "close")
        assert back.version == "1" and back.previous == "2"
        records = promotions(settings, "close")
        assert [(r.by, r.previous, r.to) for r in records] == [
            ("rollback", "2", "1"),
            ("hand", "1", "2"),
            ("hand", None, "1"),
        ]
        with pytest.raises(BadInput, match="before v1 is recorded"):
            rollback(settings, "close")
    finally:
        client.delete_registered_model(name)
