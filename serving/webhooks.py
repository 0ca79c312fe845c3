"""MLflow registry webhooks: the gateway registers one that points at itself, and verifies each delivery.

What MLflow 3.17 delivers (mlflow/webhooks/delivery.py; webhooks need a SQL-backed server, a file store
never delivers): a POST of the JSON `{"entity", "action", "timestamp", "data"}` with the headers
`X-MLflow-Delivery-Id` (a uuid4), `X-MLflow-Timestamp` (Unix seconds) and `X-MLflow-Signature`:
`v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<body>" keyed by the webhook's secret>`. MLflow
ships no verification helper (only the private signer), so `verify` follows its signing code; the tests
check it against MLflow's own signer.

For a promotion (training.registry: the stage moves, then the alias), only the alias fires:
`set_registered_model_alias` sends `model_version_alias.created` `{name, alias, version}`, and
`delete_registered_model_alias` sends `model_version_alias.deleted` `{name, alias}`.
`transition_model_version_stage` fires no event at all, so a stage moved by hand (UI, a script)
reaches the gateway only by polling, which stays on as the fallback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from serving.errors import Unauthorized
from serving.settings import ServingSettings

log = logging.getLogger("serving")

EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
ROUTE = "/webhooks/mlflow"
SIGNATURE_HEADER = "X-MLflow-Signature"  # the names of mlflow.webhooks.constants, without importing mlflow
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature header value MLflow sends for this delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: float, now: float | None = None
) -> None:
    """Unauthorized (401) unless the delivery is signed with `secret` and its timestamp is fresh.

    The timestamp is inside the signed content, so a captured delivery cannot be re-dated; refusing
    old ones stops it being replayed later.
    """
    delivery_id, timestamp = headers.get(DELIVERY_ID_HEADER), headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not (delivery_id and timestamp and given):
        raise Unauthorized(f"webhook delivery without {SIGNATURE_HEADER}, timestamp or delivery id")
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise Unauthorized("webhook timestamp is not Unix seconds") from None
    if age > tolerance_s:
        raise Unauthorized(f"webhook timestamp is {age:.0f}s away from now (at most {tolerance_s:.0f}s)")
    expected = sign(secret, delivery_id, timestamp, body).encode()
    # Standard Webhooks allows several space-separated signatures (secret rotation); MLflow sends one
    if not any(hmac.compare_digest(expected, s.encode()) for s in given.split()):
        raise Unauthorized("webhook signature does not match")


def changed_model(body: bytes, names: Collection[str]) -> str | None:
    """The registered model among `names` whose alias this (verified) delivery reports moving, else None."""
    try:
        event = json.loads(body)
        name = event["data"]["name"]
        kind = f"{event['entity']}.{event['action']}"
    except (ValueError, KeyError, TypeError):
        return None
    return name if kind in EVENTS and name in names else None


def wanted(settings: ServingSettings) -> bool:
    """Webhooks on, and a tracking server that can deliver them (http/https, not a local store)."""
    return settings.webhooks == "auto" and settings.tracking_uri.startswith(("http://", "https://"))


def url_for(settings: ServingSettings, host: str, port: int) -> str:
    """Where the MLflow server calls this gateway."""
    if settings.webhook_url:
        return settings.webhook_url
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.getfqdn()
    return f"http://{host}:{port}{ROUTE}"


def name_for(url: str) -> str:
    """A stable name per gateway address: a restart updates its webhook instead of adding one."""
    parts = urlsplit(url)
    return f"btcflow-gateway-{parts.hostname}-{parts.port or (443 if parts.scheme == 'https' else 80)}"


def register(tracking_uri: str, url: str, secret: str) -> str:
    """Create, or update by name, this gateway's webhook on the alias events; returns its id.

    Raises whatever MLflow raises (a server refusing private addresses or the http scheme, a store
    without webhooks): the caller logs it and keeps polling.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = name_for(url)
    events: list[Any] = list(EVENTS)  # MLflow's Literal event names
    description = "btcflow gateway: refresh the Production models when an alias moves"
    token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        for hook in page:
            if hook.name == name:
                client.update_webhook(
                    hook.webhook_id,
                    url=url,
                    events=events,
                    secret=secret,
                    status="ACTIVE",
                    description=description,
                )
                return str(hook.webhook_id)
        token = page.token
        if not token:
            break
    hook = client.create_webhook(name, url, events, description=description, secret=secret)
    return str(hook.webhook_id)


def unregister(tracking_uri: str, webhook_id: str) -> None:
    """Delete it when the gateway stops: the server would keep retrying a dead address on every event."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).delete_webhook(webhook_id)
    except Exception as exc:  # the server may be gone first; the next start updates it by name anyway
        log.warning("could not delete webhook %s: %s", webhook_id, exc)
