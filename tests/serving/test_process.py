"""The gateway as a real process: hot swap under load on a real uvicorn, and no JVM bridge imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serving.launch import GatewayDidNotStart, call_routes, running_gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store
from tests.waiting import wait_until

POLL_S = 1.0
PARAMS = {"timestamp": 1325412060.0}


def test_hot_swap_under_load_has_no_errors_and_moves_to_the_new_version(store: Store) -> None:
    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=POLL_S)
    with running_gateway(settings, port=0) as base:
        row = {"Timestamp": 1325412060.0, "Open": 4.58, "High": 4.6, "Low": 4.5, "Close": 4.6, "Volume": 1.5}
        demo = call_routes(base, row)  # the demo's recipe
        assert [status for _, status, _ in demo] == [200, 200, 200]
        assert demo[1][0].startswith(f"curl '{base}/predict/high_low?open=4.58&volume=1.5'")
        answers: list[tuple[float, int, str | None, float | None]] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=base, timeout=5) as http:
                for _ in range(100_000):  # bounded; the test stops it far earlier
                    if stop.is_set():
                        return
                    r = http.get("/predict/close", params=PARAMS)
                    body = r.json() if r.status_code == 200 else {}
                    answers.append(
                        (
                            time.monotonic(),
                            r.status_code,
                            body.get("model", {}).get("version"),
                            body.get("predicted_close"),
                        )
                    )

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(answers) >= 50, 30, "answers under load before the promotion")
            promoted_at = time.monotonic()
            new = store.promote("close_v2")
            wait_until(lambda: any(a[2] == new for a in answers[-20:]), 30, f"answers from version {new}")
            first_new = min(a[0] for a in answers if a[2] == new)
            # the load goes on past the half second in which an old answer may still be in flight
            wait_until(
                lambda: sum(a[0] > first_new + 0.5 for a in answers) >= 50, 30, "answers after the swap"
            )
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    old = store.template.versions["close"]
    assert len(answers) > 100
    assert {a[1] for a in answers} == {200}, "a request failed during the swap"
    assert {a[2] for a in answers} == {old, new}
    # wholly old or wholly new: each version always gives its own answer
    assert len({a[3] for a in answers if a[2] == old}) == 1
    assert len({a[3] for a in answers if a[2] == new}) == 1
    first_new = min(a[0] for a in answers if a[2] == new)
    assert not [a for a in answers if a[2] == old and a[0] > first_new + 0.5], "old version came back"
    # within the poll interval, plus the load of the new version on a busy machine
    assert first_new - promoted_at < POLL_S + 10


SCRIPT = """
import json, sys, time
from serving.evaluate import forbid_jvm_imports
forbid_jvm_imports()  # what `btcflow serve` does for the numpy engine
if sys.argv[1:] == ["cheat"]:  # the control run: something really imports pyspark after all
    del sys.modules["pyspark"], sys.modules["py4j"]
    import pyspark
    import training.errors
from fastapi.testclient import TestClient
from serving.app import create_app
from serving.settings import ServingSettings
answers = {}
with TestClient(create_app(ServingSettings())) as client:
    for _ in range(300):
        if client.get("/ready").status_code == 200:
            break
        time.sleep(0.2)  # a bounded wait on /ready of the child's own: it imports nothing of tests/
    answers["close"] = client.get("/predict/close", params={"timestamp": 1.4e9}).status_code
    rows = {"rows": [{"open": 5, "volume": 0}]}
    answers["high_low"] = client.post("/predict/high_low", json=rows).status_code
    answers["trend"] = client.get("/predict/trend", params={"open": 5, "close": 6, "volume": 1}).status_code
markers = {m: repr(sys.modules.get(m, "absent")) for m in ("pyspark", "py4j")}
loaded = [m for m, v in sys.modules.items() if m.split(".")[0] in ("pyspark", "py4j") and v is not None]
mlflow = "mlflow" in sys.modules
ours = [m for m in sys.modules if m.split(".")[0] in ("pipeline", "training")]
print(json.dumps({"answers": answers, "markers": markers, "loaded": loaded, "mlflow": mlflow, "ours": ours}))
"""


def run_gateway_script(store: Store, *args: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["answers"] == {"close": 200, "high_low": 200, "trend": 200}
    return result


def test_the_numpy_engine_process_imports_no_pyspark_py4j_pipeline_or_training_code(store: Store) -> None:
    result = run_gateway_script(store)
    # the "not importable" markers are still there: nothing removed them and imported the real package
    assert result["markers"] == {"pyspark": "None", "py4j": "None"}
    assert result["mlflow"] and result["loaded"] == []
    # of training only its specs (plain data), of pipeline nothing
    assert sorted(result["ours"]) == ["training", "training.specs"]


def test_the_import_check_sees_a_real_pyspark_import(store: Store) -> None:
    """The control: the same checks fail when the process does import pyspark."""
    result = run_gateway_script(store, "cheat")
    assert result["markers"]["pyspark"] != "None"
    assert "pyspark" in result["loaded"]
    assert "training.errors" in result["ours"]


def test_a_chatty_gateway_does_not_block_on_its_stderr(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONVERBOSE makes the child write megabytes to stderr while it starts: a pipe nobody reads
    would fill and block it before /ready."""
    monkeypatch.setenv("PYTHONVERBOSE", "1")
    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=60)
    with running_gateway(settings, port=0, ready_timeout_s=90) as base:
        assert httpx.get(f"{base}/predict/close", params=PARAMS, timeout=10).status_code == 200


def test_a_gateway_that_cannot_start_says_why_in_one_line(store: Store) -> None:
    import socket

    settings = ServingSettings(tracking_uri=store.uri, poll_interval_s=60)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(GatewayDidNotStart) as failed,
            running_gateway(settings, port=port, ready_timeout_s=90),
        ):
            pass
    message = str(failed.value)
    assert "exited with" in message and "address already in use" in message.lower() and "\n" not in message
