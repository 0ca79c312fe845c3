"""core.credentials: kept `user:password` files, the environment first."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.credentials import from_environment, kept_credential, read_credential


def test_a_kept_credential_is_made_once_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "creds" / "trainer.credentials"
    first = kept_credential(path, "btcflow-trainer")
    assert first.username == "btcflow-trainer" and len(first.password) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_credential(path, "btcflow-trainer") == first == read_credential(path)
    assert first.password not in repr(first)


def test_a_missing_file_is_none_and_a_bad_one_names_the_file(tmp_path: Path) -> None:
    assert read_credential(tmp_path / "absent") is None
    bad = tmp_path / "bad"
    bad.write_text("no-colon-here\n")
    with pytest.raises(ValueError, match="bad"):
        read_credential(bad)


def test_the_environment_gives_a_credential_only_with_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_USER", "ann")
    monkeypatch.delenv("X_PASS", raising=False)
    assert from_environment("X_USER", "X_PASS") is None
    monkeypatch.setenv("X_PASS", "s3cret")
    cred = from_environment("X_USER", "X_PASS")
    assert cred is not None and (cred.username, cred.password) == ("ann", "s3cret")
