"""core.tracking: the one default MLflow store, the same for training, the gateway and the monitor."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.tracking import default_tracking_uri
from serving.settings import ServingSettings
from training.settings import TrainingSettings


def test_training_and_the_gateway_default_to_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert default_tracking_uri() == expected
    assert TrainingSettings().tracking_uri == expected  # the monitor reads training's
    assert ServingSettings().tracking_uri == expected


def test_a_store_of_its_own_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrainingSettings().tracking_uri == ServingSettings().tracking_uri == "http://127.0.0.1:5000"


# -- where to compare runs -----------------------------------------------------------------------------


def test_the_ui_link_opens_the_experiments_runs_in_the_model_training_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form checked in headless Chromium against `mlflow ui` 3.17.2: `#/experiments/<id>/runs` with
    `workflowType=machine_learning` opens the runs table even where the browser's mode is GenAI (the
    default, whose overview shows "Traces 0" for btcflow's experiment)."""
    from training.tracking import ui_link

    page = "#/experiments/7/runs?workflowType=machine_learning"
    assert ui_link("http://127.0.0.1:5000", "7") == f"http://127.0.0.1:5000/{page}"
    assert ui_link("https://btcflow:pw@mlflow.example/base/", "7") == f"https://mlflow.example/base/{page}"
    monkeypatch.chdir(tmp_path)  # a relative SQLite store is named absolutely: the command works anywhere
    assert ui_link("sqlite:///mlruns/mlflow.db", "7") == (
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db --port 5000, "
        f"then open http://127.0.0.1:5000/{page}"
    )
    assert ui_link("postgresql+psycopg2://btcflow:pw@db:5432/mlflow", None) == (
        'mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI" --port 5000, '
        "then open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    )


def test_the_link_names_the_btcflow_experiment_of_the_store(tmp_path: Path) -> None:
    import mlflow

    from training.tracking import runs_link

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runs_link(uri).endswith("/#/experiments?workflowType=machine_learning")  # nothing yet
    assert not (tmp_path / "mlflow.db").exists()  # asking created no store
    experiment_id = mlflow.MlflowClient(uri).create_experiment("btcflow")
    assert runs_link(uri).endswith(f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
