"""The gateway's edge: what a request passes before any route, and what every error leaves as.

`Edge` is a pure ASGI middleware (no task or memory stream per request, like serving.metrics.Instrumented):
- A body over the limit is answered 413 before any route reads or parses it: at once from its
  Content-Length (the server delivers no more bytes than that), or, for a chunked body, which declares no
  length, as soon as the bytes read here pass the limit. A chunked body within it is handed on whole.
  A request without a body (every GET) passes after a look at its headers.
- An exception nothing handled (a bug) is answered 500 `internal_error` with an id that the log line of
  its traceback carries, instead of the server's plain-text "Internal Server Error".
`install()` adds it, and the handlers that give every ServingError and the framework's own errors (404,
405, request validation, a body it could not read) the one JSON shape of serving.errors.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Route

from serving.errors import (
    BadField,
    BodyTooLarge,
    HTTPProblem,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServingError,
)
from serving.schemas import JSONAnswer

log = logging.getLogger("serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def answer(error: ServingError, headers: Mapping[str, str] | None = None) -> Response:
    return JSONAnswer(error.body(), status_code=error.status_code, headers=headers)


class Edge:
    """Refuse a body over `max_body_bytes` before the app reads it; answer an unhandled exception as JSON."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:  # ASGI header names are lower case
            if name == b"content-length":
                if not value.isdigit():
                    chunked = True  # no length to trust (the server refuses these anyway): count the bytes
                elif int(value) > self.limit:
                    await self._too_large(scope, receive, send)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if chunked:
            body = await self._read(receive)
            if body is None:  # the client left
                return
            if len(body) > self.limit:
                await self._too_large(scope, receive, send)
                return
            receive = _replay(body, receive)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            error_id = secrets.token_hex(8)
            log.exception("internal error %s on %s %s", error_id, scope["method"], scope["path"])
            if started:  # too late for an answer of our own: the server closes the connection
                raise
            await answer(InternalError(error_id))(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or what was read once it passed the limit; None if the client disconnected."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.limit or not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the client may still be sending the body nobody will read: the connection ends with this answer
        response = answer(BodyTooLarge(self.limit), {"Connection": "close"})
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then whatever the server says next (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


# -- the one JSON shape for the framework's errors -------------------------------------------------
def install(app: FastAPI, max_body_bytes: int) -> None:
    """Add the Edge and the handlers; before any outer middleware (Instrumented counts what it answers)."""
    app.add_middleware(Edge, max_body_bytes=max_body_bytes)
    app.add_exception_handler(ServingError, _serving_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]


async def _serving_error(request: Request, exc: ServingError) -> Response:
    return answer(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return answer(bad_input(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """404 and 405 from the router, 400 from FastAPI for a body it could not read: the same JSON shape.

    A body that is not even text is bad input like any other that is not JSON (422, field `body`).
    """
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return answer(NotFound(f"no route {where}; GET /docs lists them"))
    if exc.status_code == 405:
        # each route knows only its own methods; the path's are all those of the routes on it
        allowed = sorted({m for r in request.app.router.routes if _on_path(r, request) for m in r.methods})
        error = MethodNotAllowed(f"{where}: this path takes {', '.join(allowed)}")
        return answer(error, {"Allow": ", ".join(allowed)})
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):  # not UTF-8: FastAPI's 400
        return answer(BadField("body", "not a JSON document"))
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return answer(HTTPProblem(exc.status_code, code, str(exc.detail)), exc.headers)


def _on_path(route: object, request: Request) -> bool:
    return (
        isinstance(route, Route)
        and route.methods is not None
        and (route.matches(request.scope)[0] is not Match.NONE)
    )


def _field(loc: tuple[Any, ...]) -> str:
    """('query', 'open') -> 'open'; ('body', 'rows', 3, 'open') -> 'rows[3].open'; ('body',) -> 'body'."""
    parts = [p for p in loc[1:] if p != "__root__"] if len(loc) > 1 else list(loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def bad_input(exc: RequestValidationError) -> BadField:
    """The first validation error, as BadField naming its field the way the client wrote it."""
    first = exc.errors()[0]
    loc, kind = tuple(first.get("loc", ("body",))), first.get("type")
    if kind == "json_invalid":
        return BadField("body", "not a JSON document")
    if loc == ("body",) and kind in ("missing", "model_type", "model_attributes_type", "dict_type"):
        return BadField("body", 'send {"rows": [...]} as JSON, with Content-Type: application/json')
    if kind == "extra_forbidden":
        return BadField(_field(loc), "unknown field (refused rather than ignored)")
    if kind == "float_type" and isinstance(first.get("input"), bool | str):  # strict: a POST's rows
        given = "true/false" if isinstance(first.get("input"), bool) else "a string"
        return BadField(_field(loc), f"should be a JSON number, not {given}")
    return BadField(_field(loc), str(first.get("msg", "invalid")))
