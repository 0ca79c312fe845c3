"""`mlflow run` as MLflow users run it: the project's own environment, built by uv from python_env.yaml.

The environment goes to a temporary MLFLOW_ENV_ROOT (a user's default is ~/.mlflow/envs) and uv's cache
to the repository's git-ignored .cache/uv, beside the Kafka jars: a rerun links what it has there and
downloads nothing. pyspark comes from the wheel `make setup` keeps in .cache/wheels (PyPI has only its
456 MB source archive, which uv would download and build again for every new environment here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.environment import without_settings
from tests.training.conftest import minute_table, write_batches

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this venv's mlflow, and the uv it calls (found on PATH)
WHEELS = REPO / ".cache" / "wheels"


def project_env(tmp_path: Path) -> dict[str, str]:
    """This environment without btcflow, MLflow or uv settings, pointed at a temporary store and envs."""
    env = without_settings("BTCFLOW_", "MLFLOW_", "UV_")
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
        "UV_CACHE_DIR": str(REPO / ".cache" / "uv"),
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        "BTCFLOW_SPARK_MASTER": "local[1]",
        "BTCFLOW_SPARK_DRIVER_MEMORY": "1g",
        "BTCFLOW_SPARK_PARTITIONS": "2",
    }
    if WHEELS.is_dir():  # made by `make setup`; without it uv builds pyspark from its source archive
        env["UV_FIND_LINKS"] = str(WHEELS)
    return env


@pytest.mark.slow
def test_mlflow_run_builds_the_project_env_with_uv_and_trains(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    write_batches(tmp_path / "data" / "batch", minute_table(200), [100, 100])
    (tmp_path / "mlruns").mkdir()
    env = project_env(tmp_path)
    project = ["run", str(REPO), "-e", "train", "-P", "model=close", "-P", "batches=1"]
    try:
        result = subprocess.run(
            [str(BIN / "mlflow"), *project, "--env-manager", "uv", "--experiment-name", "btcflow"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        built = list((tmp_path / "envs").glob("mlflow-*/pyvenv.cfg"))
        assert len(built) == 1 and "uv = " in built[0].read_text()  # the env uv made, not this venv
    finally:
        shutil.rmtree(tmp_path / "envs", ignore_errors=True)  # 1.3 GB, linked from uv's cache

    store = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(store, registry_uri=store)  # not a registry URI an earlier test set globally
    project_run = client.search_runs(
        [client.get_experiment_by_name("btcflow").experiment_id],
        "tags.`mlflow.project.entryPoint` = 'train'",
    )
    assert len(project_run) == 1
    assert project_run[0].info.status == "FINISHED"
    assert project_run[0].data.tags["mlflow.project.env"] == "uv"
    (version,) = client.search_model_versions("name='btc-close'")
    trained = client.get_run(version.run_id)
    assert trained.info.status == "FINISHED"
    assert trained.data.tags["mlflow.parentRunId"] == project_run[0].info.run_id
