"""Which registered version is Production: the one rule training's promotion and the gateway share.

The contract records Production twice: the stage `Production` (deprecated in MLflow 3, still what the
UI and `models:/name/Production` show) and the alias `production`. Reading, the stage wins and the
alias is the fallback. Three outcomes, never confused:

- a version: the registry named one;
- None ("absent"): the registry answered that the model, the version or the alias does not exist;
- `AccessRefused` (core.errors, exit 2): the tracking server refused the caller (401, 403), named with
  its user and the server (core.access);
- `RegistryUnavailable` (core.errors): anything else (connection refused, a timeout, a 5xx, a proxy's
  404, a SQL error).
  Read as absence, a store hiccup would let `--best` promote blind or make the gateway stop serving.

It lives outside `training` and `serving` so neither imports the other, and it imports nothing heavy:
mlflow only inside the functions (the gateway process must stay free of pyspark, which it never imports).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from core.access import refusal
from core.errors import RegistryUnavailable

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

T = TypeVar("T")


PRODUCTION_STAGE = "Production"  # the contract's stage (deprecated in MLflow 3, still what the UI shows)
PRODUCTION_ALIAS = "production"  # and its alias, set on the same version


@dataclass(frozen=True)
class Production:
    """The Production version of one registered model, and how it was found."""

    name: str
    version: str
    run_id: str
    stage: str  # "Production", or "alias:production" when only the alias names it
    # MLflow's own record (tags, source...) for callers that need more; not part of the record's identity
    model_version: ModelVersion | None = field(default=None, compare=False, repr=False)


def is_absent(exc: BaseException) -> bool:
    """Whether an error is the registry answering that the model, version or alias does not exist.

    A missing model or version is RESOURCE_DOES_NOT_EXIST from every store. A missing alias is
    INVALID_PARAMETER_VALUE "Registered model alias <a> not found." from the SQL store, and the same
    code over REST (the server re-raises the store's error, prefixed with its code). Any other
    INVALID_PARAMETER_VALUE (a malformed name, say) is not absence; neither is ENDPOINT_NOT_FOUND (a
    proxy or wrong URL answering 404 without MLflow's JSON).
    """
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    message = str(getattr(exc, "message", exc))
    return code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Stages are deprecated in MLflow 3 but are part of our contract; do not warn users each time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def answer(call: Callable[[], T], server: str | None = None) -> T | None:
    """`call()`; None when the registry says what it asked for does not exist; AccessRefused when the
    server (`server`, else MLflow's current tracking URI) refused the caller; else RegistryUnavailable."""
    try:
        with quiet_deprecations():
            return call()
    except Exception as exc:  # MlflowException, and SQLAlchemy or connection errors that arrive untyped
        if is_absent(exc):
            return None
        if (refused := refusal(exc, server or current_server())) is not None:
            raise refused from None
        raise RegistryUnavailable(str(getattr(exc, "message", None) or exc) or type(exc).__name__) from exc


def current_server() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def production(client: MlflowClient | Any, name: str) -> Production | None:
    """The version in stage Production (the highest if several), else the one with alias `production`.

    None only when the registry answered that there is none; RegistryUnavailable when it could not say.
    """
    server = getattr(client, "tracking_uri", None)
    staged = answer(lambda: client.get_latest_versions(name, stages=[PRODUCTION_STAGE]), server)
    if staged:
        mv = max(staged, key=lambda v: int(v.version))
        return Production(name, str(mv.version), mv.run_id or "", PRODUCTION_STAGE, mv)
    if staged is None:  # no such registered model: no alias either
        return None
    mv = answer(lambda: client.get_model_version_by_alias(name, PRODUCTION_ALIAS), server)
    if mv is None:
        return None
    return Production(name, str(mv.version), mv.run_id or "", f"alias:{PRODUCTION_ALIAS}", mv)
