"""The app against its own OpenAPI schema, with every check schemathesis has: for each operation, its
examples, its coverage cases (boundaries, missing and wrong-typed parameters, undeclared methods) and
generated requests fitting the schema and violating it. No 500; every status, content type and answer
as documented; every request the schema refuses refused, every one it admits answered; 405 with Allow.
Our own check on top: every error is the one JSON shape, and a 422 names its field.
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from bench import spark_models as sm
from serving.app import create_app
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store, Template

EXAMPLES = 20  # generated per operation and mode, beside the examples and coverage cases
SETTINGS = {"poll_interval_s": 3600, "admin_token": "t0ken", "max_rows": 50}

# the schema depends on the settings only (row limit, admin route), not on the store: read it at import,
# as schemathesis' pytest plugin needs it to make one test per operation; the fixture's app answers
schema = schemathesis.openapi.from_dict(
    create_app(ServingSettings(tracking_uri="sqlite://", **SETTINGS)).openapi()  # type: ignore[arg-type]
)


@pytest.fixture(scope="module")
def app(template: Template, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """One gateway for every operation, serving the template's three models."""
    root = tmp_path_factory.mktemp("fuzz-store")
    shutil.copy(template.root / "mlflow.db", root / "mlflow.db")
    store = Store(f"sqlite:///{root / 'mlflow.db'}", template)
    for kind in sm.REGISTERED:
        store.promote(kind)
    config = ServingSettings(tracking_uri=store.uri, **SETTINGS)  # type: ignore[arg-type]
    gateway = Gateway(config)
    gateway.refresh()
    return create_app(config, gateway)


def one_error_shape(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: object) -> None:
    """Any error (405s to undeclared methods included) is JSON with `error` and `message`; a 422 a field."""
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == ["application/json"], response.text
    body = response.json()
    assert isinstance(body, dict) and body["error"] and body["message"], response.text
    if response.status_code == 422:
        assert body["error"] == "bad_input" and body["field"], response.text


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_schemathesis_check_holds(case: schemathesis.Case, app: FastAPI) -> None:
    case.call_and_validate(app=app, additional_checks=[one_error_shape])
