"""Models on minutes shaped like the real file's (pipeline.synth's eras, bad prints, outages, volume
shifts), 2012 to 2025: each cumulative high_low version must beat the naive candle on its own test rows.

The 7M-row file is thinned to every 70th minute (100k rows) so three cumulative versions fit in about a
minute; each row is still one real-shaped minute, and the batches cover the eras as the demo's do
(30% each: 2012-2016, 2016-2020, 2020-2024).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import csv

from pipeline.synth import synth
from tests.training.conftest import training_settings, write_batches
from training.train import train_models


@pytest.fixture(scope="module")
def era_minutes(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a pyarrow Table
    out = tmp_path_factory.mktemp("eras") / "minutes.csv"
    synth(7_000_000, out, seed=0)
    table = csv.read_csv(out)
    return table.take(list(range(0, table.num_rows, 70)))


def test_high_low_beats_the_naive_candle_on_every_cumulative_version_across_eras(
    spark, tmp_path: Path, era_minutes
) -> None:
    settings = training_settings(tmp_path)
    third = int(era_minutes.num_rows * 0.3)
    write_batches(settings.batch_dir, era_minutes, [third, third, third])
    results = train_models(settings, ["high_low"], "1-3", "cumulative", spark=spark)
    assert [r.batches for r in results] == [[1], [1, 2], [1, 2, 3]]
    for r in results:
        for target in ("high", "low"):
            rmse, naive = r.metrics[f"rmse_{target}"], r.metrics[f"baseline_rmse_{target}"]
            assert rmse < naive, (r.batches, target, rmse, naive)
        # the caps the labels were winsorised at are in the run, beside the quantile
        import mlflow

        params = mlflow.get_run(r.run_id).data.params
        assert float(params["high_spread_cap"]) > 0 and float(params["spread_quantile"]) == 0.999
