"""Nothing a client sends can produce a 500: schemathesis generates requests from the app's own OpenAPI
schema, both fitting it and violating it (bounded), and every answer must be a deliberate status, every
prediction a number (never null)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from serving.app import create_app
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store

EXAMPLES = 300


def check_no_500(app: object, examples: int = EXAMPLES) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    strategy = st.one_of(
        [op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode]
    )

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call()
        what = f"{case.method} {case.path} {case.query} {case.body!r}: {response.text}"
        assert response.status_code < 500 or response.status_code == 503, what
        if response.status_code == 200 and case.path.startswith("/predict/"):  # never a null prediction
            body = response.json()
            for row in body.get("predictions", [body]):
                assert None not in row.values(), what
        if response.status_code == 422:
            body = response.json()
            assert body["error"] == "bad_input" and body["field"], what

    run()


def test_no_request_makes_a_500(store: Store) -> None:
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600, admin_token="t0ken", max_rows=50)
    gateway = Gateway(config)
    gateway.refresh()
    check_no_500(create_app(config, gateway))
