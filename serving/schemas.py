"""The documents the gateway reads and writes over HTTP, as pydantic models: they validate the requests and
describe every answer in the OpenAPI schema (/docs, and the schema schemathesis tests the app against).

A GET's query is read as numeric text, as query strings must be (`?open=true` is still refused: it is not
a number); a POST's rows are JSON numbers only (`true` and `"4.5"` are refused, 5 is a number). Both
refuse a field the model does not take: an input silently ignored would read as one the answer used.
Answers are serialised with orjson straight to bytes (JSONAnswer); the answer models document them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

TS_MIN, TS_MAX = 1230768000.0, 4102444800.0  # 2009-01-01 and 2100-01-01 UTC
# Far above any real price or minute volume, far below where a linear model's products overflow to inf/NaN.
VALUE_MAX = 1e15
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
QUERY = ConfigDict(extra="forbid")
BODY = ConfigDict(strict=True, extra="forbid")  # strict: a float field takes a JSON number, not true or "4.5"


class JSONAnswer(JSONResponse):
    """orjson instead of the standard library's json; a JSONResponse, so OpenAPI shows the answer models."""

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


class StatusAnswer(BaseModel):
    status: Literal["ok", "ready"]


class ErrorAnswer(BaseModel):
    """Every error the gateway answers (serving.errors): branch on `error`, show `message`."""

    error: str = Field(examples=["bad_input"])
    message: str = Field(examples=["open: Input should be greater than or equal to 0"])
    field: str | None = Field(None, description="bad_input: the field, `rows[3].open` in a batch")
    model: str | None = Field(None, description="model_unavailable: the model's registered name")
    missing: list[str] | None = Field(None, description="not_ready: the models not loaded yet")
    error_id: str | None = Field(None, description="internal_error: the id the gateway's log line carries")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may answer these error statuses, all in ErrorAnswer's shape."""
    return {status: {"model": ErrorAnswer, "description": ERROR_DOCS[status]} for status in statuses}


ERROR_DOCS = {
    401: "No API key, or one unknown or revoked (no admin token, on an open gateway's /admin/reload)",
    403: "Wrong admin token (an open gateway's /admin/reload)",
    413: "Body over BTCFLOW_MAX_BODY_BYTES, refused before it is parsed",
    422: "Bad input; `field` names it",
    500: "Unexpected error (a bug); `error_id` is in the gateway's log",
    503: "No Production version loaded; `model` names it",
}


# -- requests --------------------------------------------------------------------------------------
class CloseQuery(BaseModel):
    model_config = QUERY
    timestamp: Annotated[Timestamp, Field(description="Unix seconds of the minute, 2009..2100")]


class HighLowQuery(BaseModel):
    model_config = QUERY
    open: Annotated[Price, Field(description="Open price of the minute, USD")]
    volume: Annotated[Volume, Field(description="Volume of the minute, BTC")]


class TrendQuery(BaseModel):
    model_config = QUERY
    open: Annotated[Price, Field(description="Open price of the minute, USD")]
    close: Annotated[Price, Field(description="Close price of the minute, USD", examples=[4.6])]
    volume: Annotated[Volume, Field(description="Volume of the minute, BTC")]


class CloseRow(CloseQuery):
    model_config = BODY


class HighLowRow(HighLowQuery):
    model_config = BODY


class TrendRow(TrendQuery):
    model_config = BODY


QUERIES: dict[str, type[BaseModel]] = {"close": CloseQuery, "high_low": HighLowQuery, "trend": TrendQuery}
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


def batch_models(kind: str, max_rows: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request and answer models of a POST, with this app's row limit in the schema."""
    row, each = ROWS[kind], EACH[kind]
    example: dict[str, Any] = {"rows": [EXAMPLES[kind], EXAMPLES[kind]]}
    request = create_model(
        f"{row.__name__}s",
        __config__=ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [example]}),
        rows=(list[row], Field(min_length=1, max_length=max_rows, description=f"1 to {max_rows} rows")),  # type: ignore[valid-type]
    )
    answer = create_model(f"{each.__name__}s", predictions=(list[each], ...), model=(ModelRef, ...))  # type: ignore[valid-type]
    return request, answer
