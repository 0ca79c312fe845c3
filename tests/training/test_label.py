"""The trend label comes from the NEXT minute: the same-row label would be read off the inputs."""

from __future__ import annotations

from pyspark.sql import functions as F

from tests.training.conftest import minute_table, write_batches
from training.data import (
    LABEL_HORIZON,
    read_batches,
    read_manifest,
    time_cutoff,
    time_split,
    with_trend_label,
)
from training.specs import SPECS, build_pipeline


def _accuracy(df, label_df) -> float:
    cutoff = time_cutoff(label_df, 0.2)
    model = build_pipeline(SPECS["trend"], {"maxIter": 20}).fit(label_df.where(F.col("Timestamp") < cutoff))
    test = model.transform(label_df.where(F.col("Timestamp") >= cutoff))
    return test.where(F.col("prediction") == F.col("label")).count() / test.count()


def test_next_minute_label_has_no_leak_but_same_row_label_does(spark, tmp_path) -> None:
    write_batches(tmp_path, minute_table(3000, seed=7), [3000])
    df = read_batches(spark, tmp_path, read_manifest(tmp_path)).cache()
    ours = with_trend_label(df)
    leaky = df.withColumn("label", (F.col("Close") > F.col("Open")).cast("double"))
    assert _accuracy(df, leaky) > 0.95  # Close > Open is known from the inputs Open and Close
    assert _accuracy(df, ours) < 0.65  # a random walk's next step is not


def test_rows_without_a_next_minute_are_dropped(spark, tmp_path) -> None:
    table = minute_table(10)
    gap = table.filter([i != 5 for i in range(10)])  # minute 5 missing: minute 4 has no next minute
    write_batches(tmp_path, gap, [9])
    labelled = with_trend_label(read_batches(spark, tmp_path, read_manifest(tmp_path))).toPandas()
    start = table.column("Timestamp")[0].as_py()
    kept = sorted(((labelled["Timestamp"] - start) / 60).astype(int))
    assert kept == [0, 1, 2, 3, 6, 7, 8]  # 4 (gap) and 9 (last) dropped
    close = table.column("Close").to_pylist()
    for _, row in labelled.iterrows():
        i = int((row["Timestamp"] - start) / 60)
        assert row["label"] == float(close[i + 1] > close[i])


def test_no_training_label_is_read_off_a_test_row(spark, tmp_path) -> None:
    """The minute before the cutoff is labelled from the first test minute: it is in neither set."""
    write_batches(tmp_path, minute_table(50), [50])
    labelled = with_trend_label(read_batches(spark, tmp_path, read_manifest(tmp_path)))
    cutoff = time_cutoff(labelled, 0.2)
    train, test = time_split(labelled, cutoff, LABEL_HORIZON)
    train_ts = sorted(r.Timestamp for r in train.select("Timestamp").collect())
    test_ts = sorted(r.Timestamp for r in test.select("Timestamp").collect())
    assert train_ts[-1] + LABEL_HORIZON < test_ts[0] == cutoff
    assert len(train_ts) + len(test_ts) == 49 - 1  # the last minute has no label; the boundary one is out
    regression_train, _ = time_split(labelled, cutoff)  # a label inside its row: nothing left out
    assert regression_train.count() == len(train_ts) + 1
