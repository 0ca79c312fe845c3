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
