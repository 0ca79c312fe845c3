"""Pure logic: batch SPECs, schemes, metrics and baselines, specs, settings. No Spark, no MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.errors import BadInput, RegistryUnavailable
from training import metrics
from training.data import parse_spec, read_manifest, selections
from training.settings import TrainingSettings
from training.specs import SPECS, get_spec, resolve_params
from training.train import describe_batches


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("2", [2]), ("1-3", [1, 2, 3]), ("1,3", [1, 3]), ("all", [1, 2, 3, 4]), (" 3-4,1 ", [1, 3, 4])],
)
def test_batch_specs(spec: str, expected: list[int]) -> None:
    assert parse_spec(spec, [1, 2, 3, 4]) == expected


@pytest.mark.parametrize("spec", ["", "x", "0", "3-1", "1-", "-2", "1;2"])
def test_bad_batch_specs(spec: str) -> None:
    with pytest.raises(BadInput, match="bad batch SPEC"):
        parse_spec(spec, [1, 2, 3])


def test_a_batch_not_in_the_manifest() -> None:
    with pytest.raises(BadInput, match="batch 5 is not in the manifest"):
        parse_spec("4-5", [1, 2, 3, 4])
    with pytest.raises(BadInput, match="no batch"):
        parse_spec("all", [])


def test_schemes() -> None:
    assert selections([1, 3, 4], "segment") == [[1], [3], [4]]
    assert selections([1, 3, 4], "cumulative") == [[1], [1, 3], [1, 3, 4]]
    with pytest.raises(BadInput):
        selections([1], "rolling")  # type: ignore[arg-type]


def test_describe_batches() -> None:
    assert describe_batches([1, 2, 3]) == "1-3"
    assert describe_batches([1, 3]) == "1,3"
    assert describe_batches([2]) == "2"


def test_no_manifest_is_bad_input_but_empty_when_watching(tmp_path) -> None:
    with pytest.raises(BadInput, match="no manifest"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path, required=False) == []
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BadInput, match="unreadable manifest"):
        read_manifest(tmp_path)


def test_manifest_fields_are_read(tmp_path) -> None:
    entry = {
        "batch": 1,
        "file": "batch_1.parquet",
        "rows": 3,
        "min_ts": 1.0,
        "max_ts": 3.0,
        "offsets": {"0": [0, 2]},
        "sha256": "ab",
        "closed_at": "2026-01-01T00:00:00+00:00",
        "new": 1,
    }
    (tmp_path / "manifest.json").write_text(json.dumps({"batches": [entry]}))
    [batch] = read_manifest(tmp_path)
    assert batch.offsets == {"0": [0, 2]} and batch.sha256 == "ab"


def test_regression_metrics() -> None:
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.regression(actual, actual) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}
    off = metrics.regression(actual, actual + 2)
    assert off["rmse"] == pytest.approx(2.0) and off["mae"] == pytest.approx(2.0)
    assert metrics.regression(actual, np.full(4, 2.5))["r2"] == pytest.approx(0.0)


def test_roc_auc() -> None:
    label = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(label, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(label, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.roc_auc(label, np.full(4, 0.5)) == 0.5
    assert metrics.roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])) == 0.5


def test_baselines_use_only_training_facts_and_inputs() -> None:
    test = pd.DataFrame(
        {
            "Open": [10.0, 12.0],
            "High": [11.0, 13.0],
            "Low": [9.0, 12.0],
            "Close": [10.5, 12.5],
            "label": [1.0, 1.0],
        }
    )
    close = metrics.baseline(SPECS["close"], {"last_close": 10.5}, test)
    assert close["baseline_mae"] == pytest.approx(1.0)
    high_low = metrics.baseline(SPECS["high_low"], {}, test)
    assert high_low["baseline_mae_high"] == pytest.approx(1.0) and high_low["baseline_mae_low"] == 0.5
    trend = metrics.baseline(SPECS["trend"], {"positive_rate": 0.3}, test)
    assert trend["baseline_accuracy"] == 0.0 and trend["baseline_roc_auc"] == 0.5  # majority: Down
    assert trend["baseline_log_loss"] == pytest.approx(-np.log(0.3))


def test_specs() -> None:
    assert {s.registered_name for s in SPECS.values()} == {"btc-close", "btc-high-low", "btc-trend"}
    assert get_spec("trend").features == ("Open", "Close", "Volume")
    assert get_spec("trend").better(0.6, 0.5) and get_spec("close").better(1.0, 2.0)
    with pytest.raises(BadInput, match="unknown model"):
        get_spec("price")
    params = resolve_params(SPECS["high_low"], {"num_trees": 3, "reg_param": 1.0, "max_depth": None})
    assert params["numTrees"] == 3 and "regParam" not in params and params["maxDepth"] == 6


def test_specs_import_without_pyspark() -> None:
    """Serving reads the specs and must not import Spark."""
    code = "import sys, training.specs; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BTCFLOW_DATA_DIR", str(tmp_path))
    settings = TrainingSettings()
    assert settings.batch_dir == tmp_path / "batch"
    assert settings.tracking_uri.startswith("sqlite:///") and settings.tracking_uri.endswith(
        "mlruns/mlflow.db"
    )
    assert settings.artifact_location.endswith("mlruns/artifacts")  # type: ignore[union-attr]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrainingSettings().tracking_uri == "http://127.0.0.1:5000"
    assert TrainingSettings().artifact_location is None


def test_unreachable_tracking_store_fails_fast() -> None:
    from training.tracking import connect

    settings = TrainingSettings(tracking_uri="http://127.0.0.1:9", tracking_timeout=2)
    with pytest.raises(RegistryUnavailable, match="unreachable") as error:
        connect(settings)
    assert error.value.exit_code == 3
