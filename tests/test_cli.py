"""The `btcflow` command's own contract: one-line errors, exit statuses, external clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def btcflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btcflow.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("consume", "--batch-rows", "0"),
        ("train", "--model", "close", "--batches", "1", "--scheme", "sideways"),
        ("promote",),
        ("no-such-command",),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = btcflow(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: "), done.stderr


def test_help_explains_every_command() -> None:
    done = btcflow("--help")
    assert done.returncode == 0
    for command in ("broker", "data", "produce", "consume", "train", "promote", "serve", "demo"):
        assert command in done.stdout


def test_broker_start_with_an_external_cluster_starts_nothing(tmp_path) -> None:
    done = btcflow("broker", "start", BTCFLOW_KAFKA_BOOTSTRAP="127.0.0.1:9", BTCFLOW_DATA_DIR=str(tmp_path))
    assert done.returncode == 0
    assert done.stdout.strip() == "127.0.0.1:9"
    assert not (tmp_path / "kafka").exists()


HEAVY = (
    "pyspark",
    "mlflow",
    "kafka",
    "pandas",
    "numpy",
    "fastapi",
    "pydantic_settings",
    "pydantic",
    "pyarrow",
)

# Runs every command line's --help through btcflow.cli.main in one fresh interpreter and records, after
# each, the heavy packages loaded so far (the first command that loads one names the culprit). Last, a
# control: importing the pipeline's settings must show pydantic_settings, or the probe sees nothing.
HELP_PROBE = """
import contextlib, io, json, sys
from btcflow.cli.main import command_paths, main

heavy = set(sys.argv[1:])
loaded = lambda: sorted(m for m in sys.modules if m.partition(".")[0] in heavy)
report = {}
for path in command_paths():
    sys.argv, out, status = ["btcflow", *path, "--help"], io.StringIO(), None
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        status = exc.code
    usage = "Usage" in out.getvalue()
    report[" ".join(path) or "(root)"] = {"status": status, "usage": usage, "heavy": loaded()}
import pipeline.settings
report["(control)"] = {"status": 0, "usage": True, "heavy": loaded()}
print(json.dumps(report))
"""


def test_help_of_every_command_imports_nothing_heavy() -> None:
    """`btcflow [command ...] --help` must answer fast (bench/cli.py times it): the command modules import
    Kafka, Spark, MLflow, pandas, FastAPI and the settings classes only inside the commands."""
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *HEAVY], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(done.stdout.splitlines()[-1])
    control = report.pop("(control)")
    assert "pydantic_settings" in control["heavy"], control  # the probe does see an import
    assert {"(root)", "train", "broker start", "stack up", "monitor", "demo"} <= set(report)
    assert {path: r for path, r in report.items() if r["status"] != 0 or not r["usage"]} == {}
    assert {path: r["heavy"] for path, r in report.items() if r["heavy"]} == {}


# -- no password in argv or in an error line --------------------------------------------------------------

PASSWORD = "s3cret-PW"


def test_a_password_on_the_command_line_is_refused_in_one_line(tmp_path) -> None:
    uri = f"postgresql+psycopg2://btcflow:{PASSWORD}@127.0.0.1:1/mlflow"
    done = btcflow("tracking", "start", "--backend-store-uri", uri, BTCFLOW_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: --backend-store-uri: no password"), lines
    assert "BTCFLOW_TRACKING_BACKEND_STORE_URI" in lines[0] and "--backend-store-uri-file" in lines[0]
    assert PASSWORD not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_the_help_shows_no_password_form_and_names_the_safe_ways() -> None:
    from core.secrets import has_password

    done = btcflow("tracking", "start", "--help", COLUMNS="200")
    assert done.returncode == 0
    assert not has_password(done.stdout), done.stdout
    assert "--backend-store-uri-file" in done.stdout and "BTCFLOW_TRACKING_BACKEND_STORE_URI" in done.stdout


def test_an_unreadable_uri_file_is_one_line_naming_the_file(tmp_path) -> None:
    done = btcflow("tracking", "start", "--backend-store-uri-file", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(tmp_path / "missing") in done.stderr, done.stderr


def test_an_error_naming_the_store_shows_no_password(tmp_path) -> None:
    """Training's error when the store does not answer names it; the CLI's line masks it (exit 3)."""
    uri = f"http://btcflow:{PASSWORD}@127.0.0.1:1"
    done = btcflow("promote", "--model", "close", "--version", "1", MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        "btcflow: error: MLflow tracking store http://btcflow:***@127.0.0.1:1 unreachable: "
        "[Errno 111] Connection refused"
    ), done.stderr


# -- btcflow keys ----------------------------------------------------------------------------------------


def test_keys_create_prints_the_key_once_and_keeps_only_its_hash(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    done = btcflow("keys", "create", "ci", BTCFLOW_API_KEYS_FILE=str(keys_file))
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("btcflow_") and "\n" not in key  # stdout is the key alone
    assert key not in done.stderr and str(keys_file) in done.stderr
    assert "export" not in done.stderr  # the variable is set: no hint
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    assert key[len("btcflow_") + 13 :] not in keys_file.read_text()

    again = btcflow("keys", "create", "ci", BTCFLOW_API_KEYS_FILE=str(keys_file))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "ci" in again.stderr
    listed = btcflow("keys", "list", BTCFLOW_API_KEYS_FILE=str(keys_file))
    assert listed.returncode == 0 and "ci" in listed.stdout and "active" in listed.stdout
    record = json.loads(keys_file.read_text())["keys"][0]
    for secret in (key, record["hash"], record["salt"]):
        assert secret not in listed.stdout + listed.stderr


def test_keys_default_to_the_data_dir_and_say_how_to_point_the_gateway_at_them(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BTCFLOW_API_KEYS_FILE"}
    done = subprocess.run(
        [sys.executable, "-m", "btcflow.cli", "keys", "create", "ci"],
        env={**env, "BTCFLOW_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "gateway" / "api-keys.json"
    assert path.exists() and f"export BTCFLOW_API_KEYS_FILE={path}" in done.stderr


def test_keys_revoke_marks_the_key_and_an_unknown_name_is_one_line_and_exit_2(tmp_path) -> None:
    keys_file = str(tmp_path / "keys.json")
    assert btcflow("keys", "create", "ci", BTCFLOW_API_KEYS_FILE=keys_file).returncode == 0
    done = btcflow("keys", "revoke", "ci", BTCFLOW_API_KEYS_FILE=keys_file)
    assert done.returncode == 0 and "revoked" in done.stdout
    listed = btcflow("keys", "list", BTCFLOW_API_KEYS_FILE=keys_file).stdout
    assert "revoked" in listed and "active" not in listed
    unknown = btcflow("keys", "revoke", "nope", BTCFLOW_API_KEYS_FILE=keys_file)
    assert unknown.returncode == 2
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: no key named nope"), lines
