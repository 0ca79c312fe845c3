"""core.logs: one level for the process tree; MLflow's lines and the JVM's output only when asked.

What `btcflow demo` prints at the default level is checked by tests/test_demo.py (its one run); here the
pieces, without Spark: the level's sources, MLflow's bare prints and records at each level (a real
registry in a child process, since configuring logging and importing MLflow are for a whole process),
and the fd-2 redirect a JVM launch inherits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import logs

REGISTER_TWICE = """
import logging, os, sys
from pathlib import Path
from core import logs

logs.configure(logs.level_from())  # as the CLI does before any command: BTCFLOW_LOG_LEVEL, before MLflow
import mlflow
from mlflow.utils import logging_utils

assert "MLFLOW_CONFIGURE_LOGGING" not in os.environ  # set for the import only: children configure MLflow
assert not logging.getLogger("mlflow").handlers  # its records go through the root handler
logging_utils.enable_logging()  # as MLflow's autologging helpers do on their way out, log_model's too
store, model = Path(sys.argv[1]), Path(sys.argv[1]) / "model"
model.mkdir()
mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
mlflow.register_model(model.as_uri(), "btc-logs-test")
print("--- now as --debug", file=sys.stderr, flush=True)
logs.configure(logs.level_from(debug=True))  # MLflow imported already: applied at once
logging.getLogger("mlflow.test").info("an INFO record of MLflow's")
mlflow.register_model(model.as_uri(), "btc-logs-test")
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No level or MLflow switch inherited from the shell or from a CLI run in this process."""
    for name in (logs.ENV, "MLFLOW_CONFIGURE_LOGGING", "BTCFLOW_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_env")
def test_the_level_is_the_most_talkative_of_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs.level_from() == logging.WARNING
    assert logs.level_from(verbose=True) == logging.INFO
    assert logs.level_from(debug=True, verbose=True) == logging.DEBUG
    monkeypatch.setenv(logs.ENV, "DEBUG")
    assert logs.level_from(verbose=True) == logging.DEBUG
    monkeypatch.setenv(logs.ENV, "info")
    assert logs.level_from() == logging.INFO
    assert logs.name_of(logs.level_from()) == "info"
    monkeypatch.setenv(logs.ENV, "loud")
    with pytest.raises(ValueError, match="BTCFLOW_LOG_LEVEL='loud': use one of debug, info, warning"):
        logs.level_from(debug=True)


@pytest.mark.usefixtures("clean_env")
def test_mlflow_prints_and_logs_nothing_by_default_and_everything_with_debug(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", REGISTER_TWICE, str(tmp_path)],
        env={**os.environ, logs.ENV: "warning"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    quiet, _, loud = done.stderr.partition("--- now as --debug\n")
    assert quiet == "", quiet  # no "Successfully registered model", no alembic or MLflow INFO lines
    assert "Registered model 'btc-logs-test' already exists" in loud
    assert "Created version '2' of model 'btc-logs-test'" in loud
    assert "INFO mlflow.test: an INFO record of MLflow's" in loud
    assert done.stdout == ""


def _child_writes_to_stderr(text: str) -> None:
    """A child that inherits fd 2, as pyspark's JVM does."""
    subprocess.run(["sh", "-c", f"echo {text} >&2"], check=True)


@pytest.mark.usefixtures("clean_env")
def test_a_child_started_in_jvm_output_writes_to_the_log_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with logs.jvm_output(tmp_path / "logs") as path:
        _child_writes_to_stderr("from-the-jvm")
    _child_writes_to_stderr("after-the-launch")
    assert path == logs.jvm_log(tmp_path / "logs")
    assert path.name.startswith("spark-") and path.name.endswith(f"-{os.getpid()}.log")
    assert path.read_text() == "from-the-jvm\n"
    assert capfd.readouterr().err == "after-the-launch\n"  # fd 2 is given back


@pytest.mark.usefixtures("clean_env")
def test_debug_and_no_log_dir_leave_the_jvm_output_on_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with logs.jvm_output(None) as path:
        _child_writes_to_stderr("no-dir")
    assert path is None
    monkeypatch.setenv(logs.ENV, "debug")
    with logs.jvm_output(tmp_path / "logs") as path:
        _child_writes_to_stderr("debug")
    assert path is None and not (tmp_path / "logs").exists()
    assert capfd.readouterr().err == "no-dir\ndebug\n"


@pytest.mark.usefixtures("clean_env")
def test_the_gateway_finds_the_log_folder_only_where_the_cli_set_a_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert logs.jvm_log_dir_from_env() is None  # a test or a notebook: the JVM's output stays where it was
    monkeypatch.setenv(logs.ENV, "warning")
    monkeypatch.setenv("BTCFLOW_DATA_DIR", "/srv/btc")
    assert logs.jvm_log_dir_from_env() == Path("/srv/btc/logs")
