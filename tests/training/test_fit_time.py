"""Training you can see: the run spans the fit, records its time and Spark application, and the terminal
shows a live line per fit."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from btcflow.cli.train import print_summary
from tests.training.conftest import minute_table, write_batches
from training.settings import TrainingSettings
from training.train import TrainResult, summary_rows, train_models


def test_the_run_spans_the_fit_and_records_its_time(
    spark, store_settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.ml import Pipeline

    write_batches(store_settings.batch_dir, minute_table(3000), [3000])
    fits: list[tuple[float, float]] = []
    fit = Pipeline.fit

    def timed(self, dataset, params=None):  # the real fit, its wall-clock start and end noted
        began = time.time()
        model = fit(self, dataset, params)
        fits.append((began, time.time()))
        return model

    monkeypatch.setattr(Pipeline, "fit", timed)
    (result,) = train_models(store_settings, ["close"], "1", spark=spark)
    ((began, ended),) = fits
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    # the run opened before the fit and closed after it: its Duration is the training time
    assert run.info.start_time <= began * 1000 and run.info.end_time >= int(ended * 1000)
    fit_seconds = run.data.metrics["fit_seconds"]
    assert fit_seconds == pytest.approx(result.fit_seconds)
    assert 0 < fit_seconds <= ended - began + 0.01  # pipeline.fit's own time (another clock: a little slack)
    assert (run.info.end_time - run.info.start_time) / 1000 >= fit_seconds
    assert result.seconds >= fit_seconds
    assert run.data.metrics["train_rows_per_s"] == pytest.approx(result.train_rows / fit_seconds)
    assert run.data.params["spark_app_id"] == spark.sparkContext.applicationId
    assert run.data.tags["btcflow.spark_app_id"] == spark.sparkContext.applicationId
    # tags only known after the split and the fit are there too
    assert float(run.data.tags["btcflow.train_max_ts"]) < float(run.data.tags["btcflow.test_min_ts"])
    # the fit's time is no model metric: the gate, the demo table and TrainResult.metrics keep them apart
    assert "fit_seconds" not in result.metrics and "train_rows_per_s" not in result.metrics


def test_a_failing_fit_leaves_a_failed_run_and_raises(spark, store_settings: TrainingSettings) -> None:
    """Spark checks regParam only when the fit hands it to the JVM: the error is the fit's, as before."""
    from pyspark.errors import IllegalArgumentException

    write_batches(store_settings.batch_dir, minute_table(1000), [1000])
    with pytest.raises(IllegalArgumentException, match="regParam"):
        train_models(store_settings, ["close"], "1", overrides={"reg_param": -1.0}, spark=spark)
    experiment = mlflow.get_experiment_by_name("btcflow")
    (run,) = MlflowClient().search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and run.info.run_name == "close-segment-b1"
    assert run.data.tags["btcflow.spark_app_id"] == spark.sparkContext.applicationId
    assert "fit_seconds" not in run.data.metrics
    assert not MlflowClient().search_model_versions("name='btc-close'")


@pytest.mark.parametrize("terminal", [True, False])
def test_train_shows_a_live_line_per_fit_on_a_terminal_only(
    terminal: bool, spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, btcflow
) -> None:
    write_batches(tmp_path / "data" / "batch", minute_table(2000), [1000, 1000])
    env = {
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m/mlflow.db",
        "BTCFLOW_SPARK_MASTER": "local[1]",
    }
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)  # the captured stream, as a terminal or not
    done = btcflow("train", "--model", "close", "--batches", "1-2", "--scheme", "cumulative", env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "close-cumulative-b" in line]
    if terminal:  # one kept line per fit, ending on its rows and the whole version's seconds
        for label in ("b1 ", "b1-2 "):
            assert any(f"close-cumulative-{label}" in line and "fit" in line for line in lines), lines
        assert any("done" in line and "1,600 rows" in line for line in lines), lines
    else:
        assert not lines, done.stderr
    assert "fit_s" in done.stdout  # the summary table's column


def test_the_summary_table_gains_the_fit_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    result = TrainResult(
        model="close",
        registered_name="btc-close",
        version="3",
        run_id="r" * 32,
        batches=[1, 2],
        scheme="cumulative",
        train_rows=1600,
        test_rows=400,
        metrics={"rmse": 1.5, "baseline_rmse": 2.5},
        seconds=20.0,
        fit_seconds=12.345,
    )
    (row,) = summary_rows([result])
    assert row["fit_s"] == 12.3 and list(row)[-2:] == ["fit_s", "stage"]
    print_summary([row])
    table = [
        re.split("[│┃]", line)[1:-1]
        for line in capsys.readouterr().out.splitlines()
        if "┃" in line or "│" in line
    ]
    header, values = ([cell.strip() for cell in line] for line in table)
    assert header[-2:] == ["fit_s", "stage"] and values[-2:] == ["12.3", "None"]
