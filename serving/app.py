"""HTTP for the gateway: routes translate requests to `Gateway.predict` and answers back, nothing more.

`create_app(settings)` builds the app; the registry follower (and the prediction log's sender, when a topic is
set) starts with the app and stops with it. Requests are counted for GET /metrics by serving.metrics.
`app_from_env()` is the factory each worker process of `btcflow serve --workers N` calls. Every
ServingError (and every request validation failure) leaves as the same JSON body with the error's status.
Answers are serialised with orjson straight to bytes: the response models below document them for /docs.
"""

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from serving import webhooks
from serving.errors import BadInput, Forbidden, ServingError, Unauthorized
from serving.evaluate import forbid_jvm_imports
from serving.following import signal_change
from serving.metrics import CONTENT_TYPE, Instrumented, Metrics
from serving.models import SPECS, Gateway, Loaded
from serving.predictions import PredictionLog
from serving.settings import ServingSettings

TS_MIN, TS_MAX = 1230768000.0, 4102444800.0  # 2009-01-01 and 2100-01-01 UTC
# Far above any real price or minute volume, far below where a linear model's products overflow to inf/NaN.
VALUE_MAX = 1e15
FIRST_CHECK_S = 120.0  # a worker beside others waits this long at most for its first registry check
Price = Annotated[
    float,
    Field(ge=0, le=VALUE_MAX, allow_inf_nan=False, description="USD, 0..1e15", examples=[42000.5]),
]
Volume = Annotated[
    float,
    Field(
        ge=0,
        le=VALUE_MAX,
        allow_inf_nan=False,
        description="BTC traded in the minute, 0..1e15",
        examples=[3.2],
    ),
]
Timestamp = Annotated[
    float,
    Field(
        ge=TS_MIN,
        le=TS_MAX,
        allow_inf_nan=False,
        description="Unix seconds, 2009..2100",
        examples=[1325412060.0],
    ),
]


class JSONAnswer(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# -- answers ---------------------------------------------------------------------------------------
class ModelRef(BaseModel):
    name: str = Field(examples=["btc-high-low"])
    version: str = Field(examples=["3"])
    run_id: str = Field(examples=["35c3f918a2064c04a0f206f7d3bb800f"])


class CloseAnswer(BaseModel):
    predicted_close: float = Field(examples=[4.61])
    model: ModelRef


class HighLowAnswer(BaseModel):
    predicted_high: float = Field(examples=[4.63])
    predicted_low: float = Field(examples=[4.55])
    model: ModelRef


class TrendAnswer(BaseModel):
    predicted_trend: Literal["Up", "Down"]
    probability_up: float = Field(ge=0, le=1, examples=[0.57])
    model: ModelRef


class ClosePrediction(BaseModel):
    predicted_close: float


class HighLowPrediction(BaseModel):
    predicted_high: float
    predicted_low: float


class TrendPrediction(BaseModel):
    predicted_trend: Literal["Up", "Down"]
    probability_up: float


class ModelStatus(BaseModel):
    kind: str
    name: str
    version: str | None
    stage: str | None = Field(description="Production, or alias:production when found by the alias only")
    run_id: str | None
    loaded_at: str | None
    last_error: dict[str, str] | None = Field(description="The last version that failed to load, and why")


class ModelsAnswer(BaseModel):
    pid: int = Field(description="The gateway worker process that answered (each follows the registry)")
    engine: str
    tracking_uri: str
    checked_at: str | None
    registry_error: str | None
    models: list[ModelStatus]


class ErrorAnswer(BaseModel):
    error: str = Field(examples=["bad_input"])
    message: str = Field(examples=["open: Input should be greater than or equal to 0"])
    field: str | None = Field(None, examples=["open"])
    model: str | None = Field(None, examples=["btc-close"])


# -- requests --------------------------------------------------------------------------------------
class CloseRow(BaseModel):
    timestamp: Annotated[Timestamp, Field(description="Unix seconds of the minute, 2009..2100")]


class HighLowRow(BaseModel):
    open: Annotated[Price, Field(description="Open price of the minute, USD")]
    volume: Annotated[Volume, Field(description="Volume of the minute, BTC")]


class TrendRow(BaseModel):
    open: Annotated[Price, Field(description="Open price of the minute, USD")]
    close: Annotated[Price, Field(description="Close price of the minute, USD", examples=[4.6])]
    volume: Annotated[Volume, Field(description="Volume of the minute, BTC")]


ROWS: dict[str, type[BaseModel]] = {"close": CloseRow, "high_low": HighLowRow, "trend": TrendRow}
EXAMPLES = {
    "close": {"timestamp": 1325412060.0},
    "high_low": {"open": 4.58, "volume": 1.5},
    "trend": {"open": 4.58, "close": 4.6, "volume": 1.5},
}
DOCS = {
    "close": "Predicted Close of the minute at `timestamp` (btc-close).",
    "high_low": "Predicted High and Low of a minute from its Open and Volume (btc-high-low).",
    "trend": "Whether the next minute closes higher (Up) or not (Down), with P(Up) (btc-trend).",
}
ONE = {"close": CloseAnswer, "high_low": HighLowAnswer, "trend": TrendAnswer}
EACH = {"close": ClosePrediction, "high_low": HighLowPrediction, "trend": TrendPrediction}
ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorAnswer, "description": "Bad input; `field` names it"},
    503: {"model": ErrorAnswer, "description": "No Production version loaded; `model` names it"},
}


def _batch_models(kind: str, max_rows: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request and answer models of a POST, with this app's row limit in the schema."""
    row, each = ROWS[kind], EACH[kind]
    example: dict[str, Any] = {"rows": [EXAMPLES[kind], EXAMPLES[kind]]}
    request = create_model(
        f"{row.__name__}s",
        __config__=ConfigDict(json_schema_extra={"examples": [example]}),
        rows=(list[row], Field(min_length=1, max_length=max_rows, description=f"1 to {max_rows} rows")),  # type: ignore[valid-type]
    )
    answer = create_model(f"{each.__name__}s", predictions=(list[each], ...), model=(ModelRef, ...))  # type: ignore[valid-type]
    return request, answer


def _field(loc: tuple[Any, ...]) -> str:
    """('query', 'open') -> 'open'; ('body', 'rows', 3, 'open') -> 'rows[3].open'; ('body',) -> 'body'."""
    parts = [p for p in loc[1:] if p != "__root__"] if len(loc) > 1 else list(loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _bad_input(exc: RequestValidationError) -> BadInput:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ("body",)))
    if first.get("type") == "json_invalid":
        return BadInput("body", "not a JSON document")
    if first.get("type") == "missing" and loc == ("body",):
        return BadInput("body", 'missing: send {"rows": [...]} as JSON')
    return BadInput(_field(loc), str(first.get("msg", "invalid")))


def create_app(settings: ServingSettings, gateway: Gateway | None = None) -> FastAPI:
    """The gateway app. Give a `gateway` to share one (tests); else one is built from the settings."""
    gw = gateway or Gateway(settings)
    metrics = Metrics() if settings.metrics else None
    prediction_log = None
    if settings.prediction_topic:
        prediction_log = PredictionLog(
            settings.prediction_topic, settings.kafka_bootstrap, settings.prediction_queue, metrics
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
    )
    app.state.gateway = gw
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    if metrics is not None:
        app.add_middleware(Instrumented, metrics=metrics)

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> Response:
        return JSONAnswer(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        bad = _bad_input(exc)
        return JSONAnswer(bad.body(), status_code=bad.status_code)

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

    for kind, row_model in ROWS.items():
        route = app.get(f"/predict/{kind}", response_model=ONE[kind], responses=ERRORS, tags=["predict"])
        route(single_route(kind, row_model))

    def batch_route(kind: str, request_model: type[BaseModel]) -> Any:
        # plain def: up to max_rows rows of numpy (or a Spark job) run in the threadpool, so other
        # requests (single-row GETs, /health, /ready) are answered meanwhile
        def post(body: request_model) -> Response:  # type: ignore[valid-type]
            return many(kind, body.rows)  # type: ignore[attr-defined]

        post.__doc__ = f"{SPECS[kind].name} on a batch of rows, answered in row order."
        return post

    for kind in SPECS:
        request_model, answer_model = _batch_models(kind, settings.max_rows)
        app.post(
            f"/predict/{kind}",
            response_model=answer_model,
            responses=ERRORS,
            tags=["predict"],
            name=f"{kind}_batch",
        )(batch_route(kind, request_model))

    @app.get("/models", response_model=ModelsAnswer, tags=["gateway"])
    async def models() -> Response:
        """The loaded version of each model, its stage and load time, and the last failed load if any."""
        return JSONAnswer(gw.status())

    @app.get("/health", tags=["gateway"])
    async def health() -> Response:
        """200 while the process lives."""
        return JSONAnswer({"status": "ok"})

    @app.get("/ready", tags=["gateway"], responses={503: {"model": ErrorAnswer}})
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
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
        )
        def prometheus_metrics() -> Response:
            """Prometheus text: requests, errors and latency per route template, rows predicted per
            model name and version, the prediction log's sent/dropped counts and queue depth (all workers
            summed)."""
            return Response(exposition(), media_type=CONTENT_TYPE)

    if settings.admin_token:
        token = settings.admin_token

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
            dependencies=[Depends(admin)],
            responses={401: {"model": ErrorAnswer}, 403: {"model": ErrorAnswer}},
        )
        def reload() -> Response:
            """Check the registry now (retrying versions that failed before) and answer the new status."""
            return JSONAnswer(gw.refresh(force=True))

    if settings.webhook_secret:
        secret, names = settings.webhook_secret, {spec.name for spec in SPECS.values()}

        @app.post(
            webhooks.ROUTE,
            tags=["gateway"],
            responses={401: {"model": ErrorAnswer, "description": "Bad or stale signature"}},
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
