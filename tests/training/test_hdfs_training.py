"""Training on a dataset on HDFS (BTCFLOW_BATCH_URI=hdfs://…): the batches are read where the consumer
group committed them, MLflow's lineage names that URI, and a file changed on HDFS since its commit stops
training with exit 2 naming it, found by HDFS's own file checksum (no byte of the file downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.storage import HdfsStorage
from tests.training.conftest import minute_table, write_batches

SIZES = [60, 60, 60]


@pytest.fixture
def dataset(hdfs_cluster) -> HdfsStorage:  # noqa: ANN001 - tests.hdfs_cluster's session cluster
    storage = HdfsStorage(f"{hdfs_cluster.address}/training-{uuid.uuid4().hex[:8]}")
    write_batches(storage, minute_table(sum(SIZES)), SIZES)  # type: ignore[arg-type]
    return storage


def _train(tmp_path: Path, dataset: HdfsStorage, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        "BTCFLOW_BATCH_URI": dataset.uri,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m/mlflow.db",
        "BTCFLOW_SPARK_MASTER": "local[1]",
        "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
    }
    return subprocess.run(
        [sys.executable, "-m", "btcflow.cli", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_training_reads_batches_on_hdfs_and_its_lineage_names_them(
    tmp_path: Path, dataset: HdfsStorage
) -> None:
    from mlflow import MlflowClient

    done = _train(tmp_path, dataset, "--model", "close", "--batches", "all")
    assert done.returncode == 0, done.stderr[-2000:]
    uri = f"sqlite:///{tmp_path}/m/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("btcflow").experiment_id])
    assert sorted(r.data.tags["lineage.batch_files"] for r in runs) == [
        "batch_1.parquet",
        "batch_2.parquet",
        "batch_3.parquet",
    ]
    for run in runs:
        [dataset_input] = run.inputs.dataset_inputs
        assert dataset.uri in dataset_input.dataset.source


def test_a_batch_changed_on_hdfs_stops_training_naming_it(tmp_path: Path, dataset: HdfsStorage) -> None:
    data = bytearray(dataset.read("batch_2.parquet"))
    data[len(data) // 2] ^= 0xFF  # same size, one byte off: only a checksum sees it
    dataset.write("batch_2.parquet", bytes(data))
    done = _train(tmp_path, dataset, "--model", "close", "--batches", "all")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"batch 2 ({dataset.location('batch_2.parquet')}) does not match its manifest checksum" in lines[0]


def test_a_batch_missing_on_hdfs_stops_training_naming_it(tmp_path: Path, dataset: HdfsStorage) -> None:
    dataset.delete("batch_3.parquet")
    done = _train(tmp_path, dataset, "--model", "close", "--batches", "3")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "batch 3 (hdfs://" in done.stderr and "is listed in its manifest but missing" in done.stderr
