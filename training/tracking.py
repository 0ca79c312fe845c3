"""The MLflow tracking store: reached once per process, failing fast and in one line when it is down."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from core.access import refusal
from core.errors import RegistryUnavailable
from core.secrets import has_password, mask_uri
from training.settings import TrainingSettings
from training.specs import EXPERIMENT

log = logging.getLogger("training")
# The tag MLflow's UI reads to open an experiment in its model-training view (runs, metrics, models)
# rather than its GenAI traces page, which a new experiment gets by default and btcflow never fills.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# That tag does not decide the UI's mode: a browser that never chose one gets MLflow 3.17's GenAI overview
# (traces: 0) for every experiment. This URL parameter opens the model-training view whatever the browser
# chose: runs, charts, datasets (checked in headless Chromium against `mlflow ui` 3.17.2).
ML_VIEW = "workflowType=machine_learning"
UI_PORT = 5000  # where the printed `mlflow ui` command serves an embedded store


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
            raise RegistryUnavailable(mask_uri(f"MLflow tracking store {uri} unreachable: {exc}")) from None
    elif uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        except OSError as exc:
            raise RegistryUnavailable(
                mask_uri(f"cannot create the MLflow store folder for {uri}: {exc}")
            ) from None
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
        if (refused := refusal(exc, uri, f"using experiment {settings.experiment!r}")) is not None:
            raise refused from None
        raise RegistryUnavailable(mask_uri(f"MLflow tracking store {uri} unusable: {exc}")) from None
    return experiment_id


def ui_link(tracking_uri: str, experiment_id: str | None, port: int = UI_PORT) -> str:
    """Where a user compares runs: the MLflow UI's page of the experiment's runs, in its model-training view
    (the experiment list in that view while the experiment does not exist yet).

    An http(s) tracking server: its address (any user:password dropped: the browser asks). Any other store:
    the `mlflow ui` command that serves it, then the address. The command calls `mlflow` from PATH and names
    a SQLite file by its absolute path, so it works from any folder, inside an `mlflow run` environment too;
    a store URI with a password is named as "$MLFLOW_TRACKING_URI", never shown.
    """
    page = f"#/experiments/{experiment_id}/runs?{ML_VIEW}" if experiment_id else f"#/experiments?{ML_VIEW}"
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path.rstrip('/')}/{page}"
    store = tracking_uri
    if store.startswith("sqlite:///"):
        store = f"sqlite:///{Path(store.removeprefix('sqlite:///')).resolve()}"
    shown = '"$MLFLOW_TRACKING_URI"' if has_password(store) else shlex.quote(store)
    return f"mlflow ui --backend-store-uri {shown} --port {port}, then open http://127.0.0.1:{port}/{page}"


def runs_link(tracking_uri: str, experiment: str = EXPERIMENT) -> str:
    """`ui_link` for the experiment of that name in the store, found by asking the store."""
    return ui_link(tracking_uri, experiment_id(tracking_uri, experiment))


def experiment_id(tracking_uri: str, name: str) -> str | None:
    """The experiment's id; None when it does not exist yet, or the store does not answer (a link is no
    reason to fail a command). A SQLite store that does not exist is not created by asking."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None
    from mlflow import MlflowClient

    try:
        found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - unreachable, refused, unusable: the link opens the experiment list
        return None
    return str(found.experiment_id) if found is not None else None
