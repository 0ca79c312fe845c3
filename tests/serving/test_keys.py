"""Gateway API keys: the keys file and its check (pure), then the HTTP contract in process with TestClient.

Most tests need no model: the guard answers before any route runs, so a key that passes meets the route's
own answer (503, no Production version), which a 401 cannot be confused with. One test predicts for real.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving import keys
from serving.app import create_app
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store

CLOSE = {"timestamp": 1325412060.0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the file and the check ----------------------------------------------------------------------------


def test_the_file_keeps_a_salted_hash_not_the_key_and_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "gateway" / "api-keys.json"
    key = keys.create(path, "ci")
    assert key.startswith("btcflow_") and len(key) == len("btcflow_") + 12 + 1 + 43
    text = path.read_text()
    secret = key[len("btcflow_") + 13 :]
    assert key not in text and secret not in text
    record = json.loads(text)["keys"][0]
    assert set(record) == {"name", "id", "salt", "hash", "created_at", "revoked_at"}
    assert (
        record["name"] == "ci" and record["revoked_at"] is None and len(bytes.fromhex(record["salt"])) == 16
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["api-keys.json"]  # no temporary file left
    other = keys.create(path, "other")
    assert other != key and {k.name for k in keys.read_keys(path)} == {"ci", "other"}


def test_names_are_unique_among_active_keys_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys.create(path, "ci")
    with pytest.raises(keys.KeysError, match="exists already"):
        keys.create(path, "ci")
    for bad in ("", "a b", "x" * 65, "é"):
        with pytest.raises(keys.KeysError, match="key name"):
            keys.create(path, bad)
    assert keys.revoke(path, "ci") is True
    assert keys.revoke(path, "ci") is False  # again: nothing to do
    keys.create(path, "ci")  # the name is free again; the revoked record stays listed
    assert [k.active for k in keys.read_keys(path)] == [False, True]
    with pytest.raises(keys.KeysError, match="no key named nope") as err:
        keys.revoke(path, "nope")
    assert err.value.exit_code == 2


def test_the_keyring_knows_good_keys_and_sees_a_revocation_after_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    alice, bob = keys.create(path, "alice"), keys.create(path, "bob")
    clock = Clock()
    ring = keys.Keyring(path, interval_s=5.0, clock=clock)
    assert ring.verify(alice.encode()) == "alice" and ring.verify(bob.encode()) == "bob"
    wrong_secret = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    for wrong in (wrong_secret, "btcflow_000000000000_" + "A" * 43, "nonsense", "", alice + "x"):
        assert ring.verify(wrong.encode()) is None, wrong
    keys.revoke(path, "alice")
    clock.now = 4.9  # not looked at yet: the interval has not passed
    assert ring.verify(alice.encode()) == "alice"
    clock.now = 5.0
    assert ring.verify(alice.encode()) is None and ring.verify(bob.encode()) == "bob"


def test_a_keys_file_that_goes_missing_or_bad_refuses_every_key(tmp_path: Path, caplog) -> None:
    path = tmp_path / "keys.json"
    key = keys.create(path, "ci")
    clock = Clock()
    ring = keys.Keyring(path, interval_s=1.0, clock=clock)
    path.write_text("{not json")
    clock.now = 1.0
    assert ring.verify(key.encode()) is None
    assert "unusable" in caplog.text and key not in caplog.text
    path.unlink()
    clock.now = 2.0
    assert ring.verify(key.encode()) is None
    assert caplog.text.count("unusable") == 1  # said once, not on every look
    with pytest.raises(keys.KeysError, match="no such file"):
        keys.Keyring(path, interval_s=1.0)


def test_a_bearer_header_is_parsed_strictly() -> None:
    assert keys.key_from_header(b"Bearer abc") == b"abc"
    assert keys.key_from_header(b"bearer  abc ") == b"abc"
    for bad in (None, b"", b"Bearer", b"Bearer ", b"Basic abc", b"abc"):
        assert keys.key_from_header(bad) is None


# -- HTTP, in process ----------------------------------------------------------------------------------


def app_with_keys(tmp_path: Path, uri: str | None = None, **settings: object) -> tuple[TestClient, str]:
    path = tmp_path / "keys.json"
    key = keys.create(path, "ci")
    config = ServingSettings(
        tracking_uri=uri or f"sqlite:///{tmp_path / 'none.db'}",
        poll_interval_s=3600,
        webhooks="off",
        api_keys_file=path,
        **settings,
    )
    gateway = Gateway(config)
    if uri:
        gateway.refresh()
    return TestClient(create_app(config, gateway)), key


def check_401(answer, invalid: bool) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthorized" and set(answer.json()) == {"error", "message"}
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in answer.headers["www-authenticate"]) is invalid


ROUTES = [
    ("GET", "/predict/close", {"params": CLOSE}),
    ("GET", "/predict/high_low", {"params": {"open": 4.58, "volume": 1.5}}),
    ("GET", "/predict/trend", {"params": {"open": 4.58, "close": 4.6, "volume": 1.5}}),
    ("POST", "/predict/close", {"json": {"rows": [CLOSE]}}),
    ("POST", "/predict/high_low", {"json": {"rows": [{"open": 4.58, "volume": 1.5}]}}),
    ("POST", "/predict/trend", {"json": {"rows": [{"open": 4.58, "close": 4.6, "volume": 1.5}]}}),
    ("GET", "/models", {}),
    ("GET", "/metrics", {}),
]


def test_with_keys_every_route_but_health_and_ready_needs_a_good_key(tmp_path: Path) -> None:
    client, key = app_with_keys(tmp_path)
    for method, path, kwargs in ROUTES:
        check_401(client.request(method, path, **kwargs), invalid=False)
        check_401(
            client.request(method, path, headers={"Authorization": "Basic eDp5"}, **kwargs), invalid=False
        )
        for wrong in ("nope", key[:-1] + ("A" if key[-1] != "A" else "B")):
            check_401(
                client.request(method, path, headers={"Authorization": f"Bearer {wrong}"}, **kwargs), True
            )
        good = client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)
        if path.startswith("/predict/"):  # past the guard: the route's own answer, no model here
            assert good.status_code == 503 and good.json()["error"] == "model_unavailable", good.text
        else:
            assert good.status_code == 200, good.text
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503  # open, and not ready: no model
    assert client.get("/openapi.json").status_code == 200
    check_401(client.get("/no/such/route"), invalid=False)  # nothing said about what exists without a key
    key_text = key[len("btcflow_") + 13 :]
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
    assert key_text not in metrics and "btcflow_http_requests" in metrics


def test_an_unauthorized_body_is_never_read(tmp_path: Path) -> None:
    client, _ = app_with_keys(tmp_path, max_body_bytes=100)
    answer = client.post("/predict/close", content=b"x" * 1000, headers={"Content-Type": "application/json"})
    check_401(answer, invalid=False)  # not 413: the guard stands before the edge


def test_open_metrics_opens_metrics_and_models_only(tmp_path: Path) -> None:
    client, _ = app_with_keys(tmp_path, open_metrics=True)
    assert client.get("/metrics").status_code == 200 and client.get("/models").status_code == 200
    check_401(client.get("/predict/close", params=CLOSE), invalid=False)


def test_without_a_keys_file_the_gateway_is_open(tmp_path: Path) -> None:
    config = ServingSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'none.db'}", poll_interval_s=3600, webhooks="off"
    )
    client = TestClient(create_app(config, Gateway(config)))
    assert client.get("/predict/close", params=CLOSE).status_code == 503
    assert client.get("/models").status_code == 200
    assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]


def test_a_missing_keys_file_stops_the_gateway_at_its_start(tmp_path: Path) -> None:
    config = ServingSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'none.db'}", api_keys_file=tmp_path / "none.json"
    )
    with pytest.raises(keys.KeysError, match="btcflow keys create"):
        create_app(config)


def test_admin_reload_takes_a_key_or_the_old_token(tmp_path: Path) -> None:
    client, key = app_with_keys(tmp_path, admin_token="t0ken")
    check_401(client.post("/admin/reload"), invalid=False)
    check_401(client.post("/admin/reload", headers={"Authorization": "Bearer nope"}), invalid=True)
    check_401(client.get("/models", headers={"Authorization": "Bearer t0ken"}), invalid=True)  # admin only
    for credential in (key, "t0ken"):
        answer = client.post("/admin/reload", headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 200 and "models" in answer.json(), answer.text
    (tmp_path / "k2").mkdir()
    client, key = app_with_keys(tmp_path / "k2")  # keys, no token: the route exists and takes a key
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_a_good_key_gets_a_real_prediction(store: Store, tmp_path: Path) -> None:
    client, key = app_with_keys(tmp_path, uri=store.uri)
    answer = client.get("/predict/close", params=CLOSE, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json()["model"]["name"] == "btc-close"
    check_401(client.get("/predict/close", params=CLOSE), invalid=False)
