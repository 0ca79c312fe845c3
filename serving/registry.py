"""The gateway's view of MLflow's registry: which version is Production, and its files.

Which version is Production, and what counts as "none" versus "the store did not answer", is
core.registry's rule, shared with training's promotion; here it only becomes the gateway's errors.
mlflow is imported on first use, never at import time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from core import registry
from core.errors import RegistryUnavailable
from core.registry import Production
from serving.evaluate import NumpyEvaluator


class Registry:
    """MLflow's registry, asked for Production versions and their files (imports mlflow on first use)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None

    def client(self) -> Any:
        """MLflow's client for this store, made on first use."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def production(self, name: str) -> Production | None:
        """The Production version; None when the registry answers there is none; else RegistryUnavailable."""
        try:
            return registry.production(self.client(), name)
        except RegistryUnavailable as exc:
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc}") from exc

    def download(self, name: str, version: str, dst: Path) -> Path:
        """Copy the version's MLflow model directory (MLmodel, sparkml/...) into `dst`."""
        import mlflow.artifacts

        source = self.client().get_model_version_download_uri(name, version)
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        )

    def numpy_evaluator(self, name: str, version: str) -> NumpyEvaluator:
        """The version read into the numpy engine (the gateway's and the monitor's), no file left behind."""
        tmp = Path(tempfile.mkdtemp(prefix=f"btcflow-{name}-v{version}-"))
        try:  # everything is read into memory: the download can go right after
            return NumpyEvaluator(self.download(name, version, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
