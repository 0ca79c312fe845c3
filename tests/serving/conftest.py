"""Serving fixtures: real Spark pipelines of the three shapes, logged in a real temporary MLflow store.

The session builds one template store (about a minute: Spark local[1]); each test gets its own copy of the
registry database, so promotions in one test never leak into another (artifacts are shared, read-only).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import spark_models as sm


@dataclass
class Template:
    root: Path
    spark: object  # the SparkSession, for parity checks against Spark's own transform
    models: dict[str, object]  # (kind or "close_v2") -> fitted PipelineModel
    versions: dict[str, str]  # "close", "high_low", "trend", "close_v2", "close_broken" -> registered version
    frame: object  # the pandas training frame


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("mlflow-template")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    spark = sm.spark_session()
    frame = sm.synthetic_minutes(3000, seed=0)
    models, versions = {}, {}
    for kind in sm.REGISTERED:
        models[kind] = sm.fit(spark, kind, frame)
        versions[kind] = sm.log_and_register(models[kind], kind, frame, uri)
    # a second close version, fitted on a different stretch, to promote during the hot-swap test
    frame2 = sm.synthetic_minutes(3000, seed=7)
    frame2["Timestamp"] += 86400.0 * 400
    models["close_v2"] = sm.fit(spark, "close", frame2)
    versions["close_v2"] = sm.log_and_register(models["close_v2"], "close", frame2, uri)
    versions["close_broken"] = register_broken_close(uri, versions["close"], root)
    yield Template(root, spark, models, versions, frame)


def register_broken_close(uri: str, good_version: str, root: Path) -> str:
    """A btc-close version whose regression stage is a class the numpy engine does not know."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    good = client.get_model_version("btc-close", good_version)
    src = Path(client.get_model_version_download_uri("btc-close", good_version))
    dst = root / "broken-close-model"
    shutil.copytree(src, dst)
    for meta in (dst / "sparkml" / "stages").glob("1_*/metadata/part-*"):
        record = json.loads(meta.read_text())
        record["class"] = "org.apache.spark.ml.regression.GeneralizedLinearRegressionModel"
        meta.write_text(json.dumps(record) + "\n")
    mv = client.create_model_version("btc-close", str(dst), run_id=good.run_id)
    return str(mv.version)


@dataclass
class Store:
    uri: str
    template: Template

    def promote(self, key: str) -> str:
        """Promote a template version ("close", "close_v2", ...) in this test's copy; returns it."""
        kind = key.split("_v")[0].split("_broken")[0]
        version = self.template.versions[key]
        sm.promote(self.uri, kind, version)
        return version


@pytest.fixture
def empty_store(template: Template, tmp_path: Path) -> Store:
    """This test's copy of the registry: every version registered, none promoted."""
    shutil.copy(template.root / "mlflow.db", tmp_path / "mlflow.db")
    return Store(f"sqlite:///{tmp_path / 'mlflow.db'}", template)


@pytest.fixture
def store(empty_store: Store) -> Store:
    """This test's copy of the registry with version 1 of each model in Production."""
    for kind in sm.REGISTERED:
        empty_store.promote(kind)
    return empty_store


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
