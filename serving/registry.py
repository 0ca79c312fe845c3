"""The gateway's view of MLflow's registry: which version is Production, and its files.

Which version is Production, and what counts as "none" versus "the store did not answer", is
btcflow.registry's rule, shared with training's promotion; here it only becomes the gateway's errors.
mlflow is imported on first use, never at import time.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btcflow import registry
from serving.errors import RegistryUnavailable
from serving.evaluate import NumpyEvaluator


@dataclass(frozen=True)
class Candidate:
    """What the registry says is Production now."""

    version: str
    run_id: str
    stage: str  # "Production", or "alias:production" when found by the alias only


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

    def production(self, name: str) -> Candidate | None:
        """The Production version; None when the registry answers there is none; else RegistryUnavailable."""
        try:
            found = registry.production(self.client(), name)
        except registry.StoreUnavailable as exc:
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc.detail}") from exc
        return Candidate(found.version, found.run_id, found.stage) if found else None

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
