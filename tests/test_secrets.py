"""core.secrets: passwords masked in every URI shown and log record; kept secrets created whole, once."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.secrets import has_password, kept_secret, mask_log_records, mask_uri

PASSWORD = "s3cret-PW"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("shown", "masked"),
    [
        (
            f"postgresql://btcflow:{PASSWORD}@127.0.0.1:5433/mlflow",
            "postgresql://btcflow:***@127.0.0.1:5433/mlflow",
        ),
        (
            f"postgresql+psycopg2://btcflow:{PASSWORD}@db.example:5432/mlflow?sslmode=require",
            "postgresql+psycopg2://btcflow:***@db.example:5432/mlflow?sslmode=require",
        ),
        (  # a raw '@' and '/' in the password: nothing of it shown
            "mysql://u:p@ss/w0rd@host/db",
            "mysql://u:***@host/db",
        ),
        (  # embedded in an exception's text, as MLflow words a refused request
            f"MLflow registry at http://btcflow:{PASSWORD}@127.0.0.1:1: API request to "
            f"http://btcflow:{PASSWORD}@127.0.0.1:1/api/2.0/mlflow/registered-models/get failed",
            "MLflow registry at http://btcflow:***@127.0.0.1:1: API request to "
            "http://btcflow:***@127.0.0.1:1/api/2.0/mlflow/registered-models/get failed",
        ),
        (f"'postgresql://u:{PASSWORD}@h/db'", "'postgresql://u:***@h/db'"),
        (f"postgresql://h/db?user=u&password={PASSWORD}", "postgresql://h/db?user=u&password=***"),
    ],
)
def test_a_password_is_masked_wherever_the_uri_is(shown: str, masked: str) -> None:
    assert mask_uri(shown) == masked
    assert mask_uri(masked) == masked  # masking twice changes nothing
    assert has_password(shown) and not has_password(masked.replace("***", ""))


@pytest.mark.parametrize(
    "plain",
    [
        "http://127.0.0.1:5000",
        "sqlite:////tmp/mlruns/mlflow.db",
        "postgresql+psycopg2://btcflow@127.0.0.1:5433/mlflow",
        "hdfs://127.0.0.1:9000/btcflow/batch",
        "mlflow-artifacts:/1/abc/artifacts",
        "btc-close version 3 not loaded: a = b",
    ],
)
def test_text_without_a_password_is_left_alone(plain: str) -> None:
    assert mask_uri(plain) == plain and not has_password(plain)


# -- every log record ------------------------------------------------------------------------------------


def test_no_log_record_carries_a_password_whatever_logger_handler_or_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Message, %-arguments (an exception naming the store), exception text, a logger with its own handler."""
    mask_log_records()
    mask_log_records()  # idempotent: configure runs once per command, tests call it again
    uri = f"postgresql://btcflow:{PASSWORD}@127.0.0.1:5433/mlflow"
    own = logging.getLogger("uvicorn.test-secrets")  # as uvicorn's loggers: own handler, no propagation
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(logging.Formatter("%(message)s").format(record))

    own.addHandler(Keep())
    own.propagate = False
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("serving").warning("%s", RuntimeError(f"MLflow registry at {uri}: refused"))
            logging.getLogger("training").warning("store %s, %d runs", uri, 3)
            logging.getLogger("mlflow").warning(f"f-string {uri}")
            try:
                raise ConnectionError(f"cannot reach {uri}")
            except ConnectionError:
                logging.getLogger("monitoring").exception("lost the store")
            own.error("worker failed: %(uri)s", {"uri": uri})
    finally:
        own.handlers.clear()
    shown = caplog.text + "\n".join(seen)
    assert PASSWORD not in shown
    assert shown.count("btcflow:***@127.0.0.1:5433") == 5, shown
    assert "store postgresql://btcflow:***@127.0.0.1:5433/mlflow, 3 runs" in caplog.text


def test_the_cli_configures_the_masking_in_every_process(tmp_path: Path) -> None:
    """core.logs.configure, as every command and every gateway worker calls it, installs the masking."""
    script = textwrap.dedent(
        f"""
        import logging
        from core import logs
        logs.configure(logging.INFO)
        logging.getLogger("serving").warning("registry at %s", "http://u:{PASSWORD}@127.0.0.1:1")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )
    assert "registry at http://u:***@127.0.0.1:1" in done.stderr and PASSWORD not in done.stderr


# -- kept secrets ----------------------------------------------------------------------------------------


def test_a_secret_is_made_once_0600_and_read_after(tmp_path: Path) -> None:
    path = tmp_path / "tracking" / "postgres.password"
    made = kept_secret(path, lambda: "first")
    assert made == "first" and path.read_text() == "first\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert kept_secret(path, lambda: "second") == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["postgres.password"]  # no temporary file left


def test_a_failure_between_create_and_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the value is written: no empty or half-written secret for the next start to read."""
    path = tmp_path / "postgres.password"

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space left"):
            kept_secret(path, lambda: "lost")
    assert list(tmp_path.iterdir()) == []  # neither the secret nor the temporary file
    assert kept_secret(path, lambda: "next") == "next"  # the next start makes a whole one
    assert kept_secret(path, lambda: "other") == "next"


@pytest.mark.parametrize("left", ["", "\n", "  \n", "\x00\x00\x00\x00"])
def test_a_file_left_empty_by_the_old_bug_is_set_aside_and_replaced(tmp_path: Path, left: str) -> None:
    """Empty, blank or NUL-filled: it never served as a secret (initdb and mlflow refuse an empty one)."""
    path = tmp_path / "webhook-secret.key"
    path.write_text(left)
    assert kept_secret(path, lambda: "fresh") == "fresh"
    assert path.read_text() == "fresh\n"
    assert (tmp_path / "webhook-secret.key.invalid").read_text() == left  # kept for a look, never read


def test_two_concurrent_first_starts_agree_threads(tmp_path: Path) -> None:
    """Eight callers all find no file and all make a value before any of them links: one value wins."""
    path = tmp_path / "postgres.password"
    barrier = threading.Barrier(8)
    results: list[str] = []

    def start(n: int) -> None:
        def make() -> str:
            barrier.wait(10)  # everyone has seen no file and made a value
            return f"value-{n}"

        results.append(kept_secret(path, make))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and len(set(results)) == 1
    assert path.read_text() == f"{results[0]}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postgres.password"]


FIRST_START = """
import sys, time
from pathlib import Path
from core.secrets import kept_secret

folder, n = Path(sys.argv[1]), sys.argv[2]

def make():
    (folder / f"ready-{n}").touch()  # this process found no secret and is about to write its own
    while not (folder / "go").exists():
        time.sleep(0.01)
    return f"process-{n}"

print(kept_secret(folder / "secret" / "postgres.password", make))
"""


def test_two_concurrent_first_starts_agree_processes(tmp_path: Path) -> None:
    """Two processes, both past "no file yet" before either writes: both print the winner's value."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_START, str(tmp_path), str(n)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{n}").exists() for n in (1, 2)):
            assert time.monotonic() < deadline, "the two starts did not both reach make()"
            time.sleep(0.02)
        (tmp_path / "go").touch()
        values = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert values[0] == values[1] and values[0] in ("process-1", "process-2")
    assert (tmp_path / "secret" / "postgres.password").read_text() == f"{values[0]}\n"
