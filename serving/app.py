"""HTTP for the gateway: routes translate requests to `Gateway.predict` and answers back, nothing more.

`create_app(settings)` builds the app; the registry follower (and the prediction log's sender, when a topic is
set) starts with the app and stops with it. Requests are counted for GET /metrics by serving.metrics.
`app_from_env()` is the factory each worker process of `btcflow serve --workers N` calls. What the
requests and answers hold is serving.schemas; serving.edge bounds request bodies and gives every error,
expected or not, the one JSON shape of serving.errors. With BTCFLOW_API_KEYS_FILE, serving.guard asks every
request but /health, /ready and the docs for an API key (serving.keys) before anything else reads it.
"""

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from serving import edge, webhooks
from serving.errors import Forbidden, Unauthorized
from serving.evaluate import forbid_jvm_imports
from serving.following import signal_change
from serving.guard import ALWAYS_OPEN, KeyGuard
from serving.keys import Keyring
from serving.metrics import CONTENT_TYPE, Instrumented, Metrics
from serving.models import SPECS, Gateway, Loaded
from serving.predictions import PredictionLog
from serving.schemas import (
    DOCS,
    ONE,
    QUERIES,
    JSONAnswer,
    ModelsAnswer,
    StatusAnswer,
    batch_models,
    errors,
)
from serving.settings import ServingSettings

FIRST_CHECK_S = 120.0  # a worker beside others waits this long at most for its first registry check


def create_app(settings: ServingSettings, gateway: Gateway | None = None) -> FastAPI:
    """The gateway app. Give a `gateway` to share one (tests); else one is built from the settings."""
    # the keys file first: a gateway whose keys file is missing says so before it loads anything
    keyring = Keyring(settings.api_keys_file, settings.poll_interval_s) if settings.api_keys_file else None
    gw = gateway or Gateway(settings)
    metrics = Metrics() if settings.metrics else None
    prediction_log = None
    if settings.prediction_topic:
        prediction_log = PredictionLog(
            settings.prediction_topic,
            settings.kafka_bootstrap,
            settings.prediction_queue,
            metrics,
            settings.kafka_credential,
        )

    def answered(loaded: Loaded, inputs: dict[str, Any], outputs: dict[str, list[Any]], rows: int) -> None:
        """What every answered prediction costs the request path: a count and a queue append."""
        if metrics is not None:
            metrics.predicted(loaded.spec.name, loaded.version, rows)
        if prediction_log is not None:
            prediction_log.offer(loaded.ref(), inputs, outputs, rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.start()
        if prediction_log is not None:
            prediction_log.start()
        if settings.run_dir is not None:
            # one of several workers: uvicorn listens only after this, so a worker started (or restarted)
            # beside serving siblings takes connections once its models are loaded, never to answer 503
            await run_in_threadpool(gw.wait_checked, FIRST_CHECK_S)
        try:
            yield
        finally:
            if prediction_log is not None:
                await prediction_log.stop()
            gw.stop()

    app = FastAPI(
        title="btcflow gateway",
        description="Predictions from the MLflow registry's Production models, evaluated without a JVM.",
        version="1",
        lifespan=lifespan,
        default_response_class=JSONAnswer,
        responses=errors(500),  # any route, on a bug
    )
    app.state.gateway = gw
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    edge.install(app, settings.body_limit)
    if keyring is not None:  # outside the edge: a request without a key is refused before its body is read
        open_paths = [*ALWAYS_OPEN, webhooks.ROUTE] + (
            ["/metrics", "/models"] if settings.open_metrics else []
        )
        app.add_middleware(KeyGuard, keyring=keyring, open_paths=open_paths, admin_token=settings.admin_token)
    keyed = errors(401) if keyring is not None else {}  # the routes' docs list the 401 they may answer
    keyed_info = {} if settings.open_metrics else keyed
    if metrics is not None:  # outside the edge: its 413s and 500s are counted too
        app.add_middleware(Instrumented, metrics=metrics)

    def many(kind: str, rows: list[BaseModel]) -> JSONAnswer:
        fields = SPECS[kind].inputs
        inputs = {f: [getattr(r, f) for r in rows] for f in fields}
        loaded, answer = gw.predict(kind, inputs)
        answered(loaded, inputs, answer, len(rows))
        keys = list(answer)
        predictions = [dict(zip(keys, values, strict=True)) for values in zip(*answer.values(), strict=True)]
        return JSONAnswer({"predictions": predictions, "model": loaded.ref()})

    def single_route(kind: str, row_model: type[BaseModel]) -> Any:
        fields = list(SPECS[kind].inputs)

        def one(row: BaseModel) -> JSONAnswer:
            inputs = {f: [getattr(row, f)] for f in fields}
            loaded, answer = gw.predict(kind, inputs, single=True)
            answered(loaded, inputs, answer, 1)
            return JSONAnswer({**{k: v[0] for k, v in answer.items()}, "model": loaded.ref()})

        # numpy: one row takes microseconds, a threadpool hop would cost more than it saves; the spark
        # engine runs a Spark job per request, which must not stall the event loop (plain def: threadpool)
        async def get(row: Annotated[row_model, Query()]) -> Response:  # type: ignore[valid-type]
            return one(row)

        def get_blocking(row: Annotated[row_model, Query()]) -> Response:  # type: ignore[valid-type]
            return one(row)

        route = get_blocking if settings.serving_engine == "spark" else get
        route.__doc__ = DOCS[kind]
        return route

    for kind, query_model in QUERIES.items():
        route = app.get(
            f"/predict/{kind}",
            response_model=ONE[kind],
            responses={**keyed, **errors(422, 503)},
            tags=["predict"],
        )
        route(single_route(kind, query_model))

    def batch_route(kind: str, request_model: type[BaseModel]) -> Any:
        # plain def: up to max_rows rows of numpy (or a Spark job) run in the threadpool, so other
        # requests (single-row GETs, /health, /ready) are answered meanwhile
        def post(body: request_model) -> Response:  # type: ignore[valid-type]
            return many(kind, body.rows)  # type: ignore[attr-defined]

        post.__doc__ = f"{SPECS[kind].name} on a batch of rows, answered in row order."
        return post

    for kind in SPECS:
        request_model, answer_model = batch_models(kind, settings.max_rows)
        app.post(
            f"/predict/{kind}",
            response_model=answer_model,
            responses={**keyed, **errors(413, 422, 503)},
            tags=["predict"],
            name=f"{kind}_batch",
        )(batch_route(kind, request_model))

    @app.get("/models", response_model=ModelsAnswer, tags=["gateway"], responses=keyed_info)
    async def models() -> Response:
        """The loaded version of each model, its stage and load time, and the last failed load if any."""
        return JSONAnswer(gw.status())

    @app.get("/health", response_model=StatusAnswer, tags=["gateway"])
    async def health() -> Response:
        """200 while the process lives."""
        return JSONAnswer({"status": "ok"})

    @app.get("/ready", response_model=StatusAnswer, tags=["gateway"], responses=errors(503))
    async def ready() -> Response:
        """200 once all three Production models are loaded, else 503 naming those missing."""
        gw.ready()
        return JSONAnswer({"status": "ready"})

    if metrics is not None:
        exposition = metrics.exposition

        @app.get(
            "/metrics",
            tags=["gateway"],
            response_class=Response,
            responses={
                200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
                **keyed_info,
            },
        )
        def prometheus_metrics() -> Response:
            """Prometheus text: requests, errors and latency per route template, rows predicted per
            model name and version, the prediction log's sent/dropped counts and queue depth (all workers
            summed)."""
            return Response(exposition(), media_type=CONTENT_TYPE)

    if keyring is not None or settings.admin_token:
        token = settings.admin_token or ""

        def admin(authorization: Annotated[str | None, Header(description="Bearer <token>")] = None) -> None:
            if not authorization:
                raise Unauthorized("POST /admin/reload needs Authorization: Bearer <token>")
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
                raise Forbidden("wrong admin token")

        @app.post(
            "/admin/reload",
            response_model=ModelsAnswer,
            tags=["gateway"],
            dependencies=[] if keyring is not None else [Depends(admin)],  # with keys: the guard's
            responses=errors(401, 413) if keyring is not None else errors(401, 403, 413),
        )
        def reload() -> Response:
            """Check the registry now (retrying versions that failed before) and answer the new status.
            Needs an API key (or BTCFLOW_ADMIN_TOKEN) with keys configured, else BTCFLOW_ADMIN_TOKEN."""
            return JSONAnswer(gw.refresh(force=True))

    if settings.webhook_secret:
        secret, names = settings.webhook_secret, {spec.name for spec in SPECS.values()}

        @app.post(
            webhooks.ROUTE,
            tags=["gateway"],
            responses={**errors(413), 401: {**errors(401)[401], "description": "Bad or stale signature"}},
        )
        async def mlflow_webhook(request: Request) -> Response:
            """MLflow's registry webhook: an alias of one of our models moved, so every worker checks now."""
            body = await request.body()
            webhooks.verify(secret, request.headers, body, settings.webhook_tolerance_s)
            name = webhooks.changed_model(body, names)
            if name is not None:
                if settings.run_dir is not None:  # the other workers: they watch this file's mtime
                    signal_change(settings.run_dir)
                await run_in_threadpool(gw.nudge)  # this worker: at once
            return JSONAnswer({"model": name, "refresh": name is not None, "pid": os.getpid()})

    return app


def app_from_env() -> FastAPI:
    """The app of one gateway worker process, its settings read from the environment `btcflow serve` set.

    Each worker is a fresh interpreter (uvicorn spawns them), so the numpy engine's guard against
    importing pyspark is set here again, before anything imports mlflow.
    """
    settings = ServingSettings()
    if settings.serving_engine == "numpy":
        forbid_jvm_imports()
    return create_app(settings)
