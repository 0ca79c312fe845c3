"""Who may call which route, when the gateway has API keys (BTCFLOW_API_KEYS_FILE set).

`KeyGuard` is a pure ASGI middleware, outside serving.edge: a request without a valid key is answered 401
before its body is read or any route runs, and costs the gateway one header scan, an HMAC and a dict lookup
(serving.keys). Everything needs a key except the `open` paths create_app gives: /health, /ready, the docs,
the MLflow webhook (which its own signature guards) and, with BTCFLOW_OPEN_METRICS, /metrics and /models.
POST /admin/reload takes a key too, or BTCFLOW_ADMIN_TOKEN when that is set (its older form).

The key's name goes into the request's scope state (`api_key`); neither the key nor its hash is logged or
answered.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from serving.edge import answer
from serving.errors import Unauthorized
from serving.keys import Keyring, key_from_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALWAYS_OPEN = ("/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
ADMIN = "/admin/"
MISSING = 'Bearer realm="btcflow"'
INVALID = 'Bearer realm="btcflow", error="invalid_token"'


class KeyGuard:
    """Answer 401 (the gateway's JSON error, `WWW-Authenticate: Bearer`) to a request without a valid key."""

    def __init__(
        self, app: ASGIApp, keyring: Keyring, open_paths: Iterable[str], admin_token: str | None = None
    ) -> None:
        self.app, self.keyring = app, keyring
        self.open = frozenset(open_paths)
        self.admin_token = admin_token.encode() if admin_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:  # ASGI header names are lower case
            if name == b"authorization":
                authorization = value
                break
        key = key_from_header(authorization)
        if key is None:
            error = Unauthorized(
                f"{scope['path']} needs Authorization: Bearer <API key> (btcflow keys create)"
            )
            await answer(error, {"WWW-Authenticate": MISSING})(scope, receive, send)
            return
        name = self.keyring.verify(key)
        if name is None and self.admin_token is not None and scope["path"].startswith(ADMIN):
            name = "admin-token" if hmac.compare_digest(key, self.admin_token) else None
        if name is None:
            error = Unauthorized("unknown or revoked API key")
            await answer(error, {"WWW-Authenticate": INVALID})(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = name
        await self.app(scope, receive, send)
