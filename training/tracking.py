"""The MLflow tracking store: reached once per process, failing fast and in one line when it is down."""

from __future__ import annotations

import logging
import os

from core.errors import RegistryUnavailable
from training.settings import TrainingSettings

log = logging.getLogger("training")
# The tag MLflow's UI reads to open an experiment in its model-training view (runs, metrics, models)
# rather than its GenAI traces page, which a new experiment gets by default and btcflow never fills.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def connect(settings: TrainingSettings) -> str:
    """Point MLflow at the store, check it answers, make sure the experiment exists; its id.

    An HTTP store is probed with one short request (MLflow's own client retries for minutes); a
    SQLite store gets its folder created. Anything else that fails here means the store is unusable.
    """
    import httpx
    import mlflow
    from mlflow.exceptions import MlflowException

    if not log.isEnabledFor(logging.INFO):  # MLflow's own INFO lines (DB migrations, DFS copies) are noise
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    # with a tracking server MLflow writes two "View run/experiment at" lines to stdout per run;
    # btcflow's own summary says where the runs are, once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=settings.tracking_timeout)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"MLflow tracking store {uri} unreachable: {exc}") from None
    elif uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        except OSError as exc:
            raise RegistryUnavailable(f"cannot create the MLflow store folder for {uri}: {exc}") from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry lives in the same store; never one set earlier in the process
    try:
        experiment = mlflow.get_experiment_by_name(settings.experiment)
        key, kind = EXPERIMENT_KIND
        if experiment is None:
            experiment_id = mlflow.create_experiment(
                settings.experiment, artifact_location=settings.artifact_location, tags={key: kind}
            )
        else:
            experiment_id = experiment.experiment_id
            if key not in experiment.tags:  # made before btcflow set it; a kind chosen by hand is kept
                mlflow.MlflowClient().set_experiment_tag(experiment_id, key, kind)
        mlflow.set_experiment(experiment_id=experiment_id)
    except MlflowException as exc:
        raise RegistryUnavailable(f"MLflow tracking store {uri} unusable: {exc}") from None
    return experiment_id
