"""core.access: which credential a command uses, and a refusal in one line (no server needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.access import PASSWORD_VAR, USERNAME_VAR, credentials_dir, refusal, use_kept_credential
from core.credentials import kept_credential

SERVER = "http://127.0.0.1:5000"


@pytest.fixture
def no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(USERNAME_VAR, raising=False)
    monkeypatch.delenv(PASSWORD_VAR, raising=False)


def test_the_kept_credential_of_the_role_fills_the_environment(tmp_path: Path, no_login: None) -> None:
    kept = kept_credential(credentials_dir(tmp_path) / "reader", "btcflow-reader")
    assert use_kept_credential("http://localhost:5000/", SERVER, tmp_path, "reader") == "btcflow-reader"
    assert (os.environ[USERNAME_VAR], os.environ[PASSWORD_VAR]) == (kept.username, kept.password)


def test_the_environment_wins_and_another_server_gets_nothing(
    tmp_path: Path, no_login: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept_credential(credentials_dir(tmp_path) / "trainer", "btcflow-trainer")
    assert use_kept_credential("http://10.0.0.9:5000", SERVER, tmp_path, "trainer") is None
    assert use_kept_credential("sqlite:///mlruns/mlflow.db", SERVER, tmp_path, "trainer") is None
    assert USERNAME_VAR not in os.environ
    monkeypatch.setenv(USERNAME_VAR, "alice")
    monkeypatch.setenv(PASSWORD_VAR, "pw")
    assert use_kept_credential(SERVER, SERVER, tmp_path, "trainer") == "alice"
    assert os.environ[PASSWORD_VAR] == "pw"


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_code, self.message = code, message


def test_refusals_name_user_server_and_what(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_VAR, "bob")
    monkeypatch.setenv(PASSWORD_VAR, "secret-pw")
    wrong = refusal(Refused("UNAUTHENTICATED", "... 401 != 200"), SERVER)
    assert str(wrong) == f"MLflow server {SERVER} refused user 'bob': wrong or missing password (HTTP 401)"
    message = "API request to endpoint /api/2.0/mlflow/runs/create failed with error code 403 != 200."
    may_not = refusal(Refused("PERMISSION_DENIED", message), SERVER)
    assert str(may_not) == (
        f"MLflow server {SERVER} refused user 'bob' the call runs/create: the user's role does not allow it "
        "(HTTP 403)"
    )
    assert may_not is not None and may_not.exit_code == 2 and "secret-pw" not in str(may_not)
    assert refusal(Refused("RESOURCE_DOES_NOT_EXIST", "gone"), SERVER) is None
    assert refusal(ConnectionError("refused"), SERVER) is None
