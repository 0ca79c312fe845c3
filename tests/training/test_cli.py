"""Bad input to `btcflow train` / `promote`: one line on stderr, exit 2 (input) or 3 (store down), fast."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import logging_kept, minute_table, write_batches


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def btcflow_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command in a child process: exit status and stderr exactly as a user sees them."""
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "btcflow.cli", *args], capture_output=True, text=True, env=full, timeout=60
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    write_batches(tmp_path / "data" / "batch", minute_table(200), [100, 100])
    return {
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m/mlflow.db",
    }


def test_in_process_runs_leave_logging_as_they_found_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the btcflow fixture relies on: after main() the session's logging is as before."""
    from btcflow.cli.main import main

    def state() -> tuple[list[int], int, list[logging.Handler]]:
        levels = [logging.getLogger(n).level for n in ("mlflow", "kafka", "training")]
        return levels, logging.root.level, list(logging.root.handlers)

    before = state()
    monkeypatch.setattr(sys, "argv", ["btcflow", "--verbose", "train", "--model", "price", "--batches", "1"])
    with logging_kept(), pytest.raises(SystemExit):
        main()
    assert state() == before
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "price", "--batches", "1"], "unknown model 'price'"),
        (["train", "--model", "close", "--batches", "1..2"], "bad batch SPEC '1..2'"),
        (["train", "--model", "close", "--batches", "2-3"], "batch 3 is not in the manifest"),
        (["promote", "--model", "close", "--version", "4"], "btc-close has no version 4"),
        (["promote", "--model", "close"], "exactly one of --version V, --best or --rollback"),
        (["promote", "--model", "close", "--best", "--rollback"], "exactly one of --version V, --best or"),
        (["promote", "--model", "close", "--version", "1", "--require-baseline"], "goes with --best"),
        (["history", "--model", "nope"], "unknown model 'nope'"),
        (["promote", "--model", "nope", "--best"], "unknown model 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, env: dict[str, str], btcflow) -> None:
    done = btcflow(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"btcflow: error: {done.stderr.split('error: ', 1)[1].strip()}"
    ]
    assert message in done.stderr


def test_no_manifest_exits_2(tmp_path: Path, btcflow) -> None:
    empty = {"BTCFLOW_DATA_DIR": str(tmp_path / "empty")}
    done = btcflow("train", "--model", "trend", "--batches", "all", env=empty)
    assert done.returncode == 2 and "no manifest" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batches", "1"], "--model"),  # the contract: `train --model M --batches SPEC`
        (["train", "--model", "close"], "give --batches SPEC"),
        (["train", "--model", "all"], "give --batches SPEC"),
    ],
)
def test_model_and_batches_are_required(args: list[str], message: str, env: dict[str, str], btcflow) -> None:
    """No silent default of every model on every batch: each is a choice the user writes down."""
    done = btcflow(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


@pytest.mark.parametrize(
    "command",
    [["train", "--model", "close", "--batches", "1"], ["promote", "--model", "close", "--version", "1"]],
)
def test_unreachable_tracking_store_exits_3(command: list[str], env: dict[str, str]) -> None:
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    done = btcflow_process(*command, env=down)
    assert done.returncode == 3, done.stderr
    assert "unreachable" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_history_and_rollback_commands(env: dict[str, str], btcflow) -> None:
    """Promotions by hand, the table and JSON of `history`, a rollback, then one with nothing before."""
    import json

    from mlflow import MlflowClient

    from training.settings import TrainingSettings
    from training.tracking import connect

    connect(TrainingSettings(data_dir=Path(env["BTCFLOW_DATA_DIR"]), tracking_uri=env["MLFLOW_TRACKING_URI"]))
    client = MlflowClient()
    client.create_registered_model("btc-close")
    for _ in range(2):
        client.create_model_version("btc-close", source="file:///nowhere", run_id=None)
    assert (
        btcflow("history", "--model", "close", env=env).stdout == "no promotion of btc-close recorded yet\n"
    )
    for version in ("1", "2"):
        assert btcflow("promote", "--model", "close", "--version", version, env=env).returncode == 0
    done = btcflow("history", "--model", "close", env=env)
    assert done.returncode == 0 and "when (UTC)" in done.stdout and "hand" in done.stdout
    rows = [line for line in done.stdout.splitlines() if "hand" in line]
    assert len(rows) == 2 and "v2" in rows[0] and "v2" not in rows[1]  # newest first
    done = btcflow("history", "--model", "close", "--json", "--limit", "1", env=env)
    [newest] = json.loads(done.stdout)
    assert (newest["by"], newest["from"], newest["to"]) == ("hand", "1", "2")

    done = btcflow("promote", "--model", "close", "--rollback", env=env)
    assert done.returncode == 0 and "v1 is Production again" in done.stdout
    done = btcflow("promote", "--model", "close", "--rollback", env=env)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no version of btc-close before v1 is recorded as Production; nothing changed" in done.stderr
