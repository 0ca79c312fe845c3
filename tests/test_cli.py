"""The `btcflow` command's own contract: one-line errors, exit statuses, external clusters."""

from __future__ import annotations

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
