"""BTCFLOW_JVM_OPTS reaches the JVMs btcflow builds a command for, after their own options, so it wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import jvm
from services.hdfs.launcher import NAMENODE_CLASS, jvm_command


def test_unset_adds_nothing_and_keeps_the_options_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jvm.ENV, raising=False)
    assert jvm.extra_options() == []
    assert jvm.with_extra_options("-Dlog4j2.configurationFile=/a b") == "-Dlog4j2.configurationFile=/a b"


def test_set_options_come_last_split_and_quoted_as_a_shell_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jvm.ENV, "-XX:TieredStopAtLevel=1 '-Dx=a b'")
    assert jvm.extra_options() == ["-XX:TieredStopAtLevel=1", "-Dx=a b"]
    assert jvm.with_extra_options("-Dy=1") == "-Dy=1 -XX:TieredStopAtLevel=1 '-Dx=a b'"


def test_an_hdfs_daemon_runs_with_them_after_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(jvm.ENV, "-Xmx1g")
    cmd = jvm_command("java", tmp_path / "conf", tmp_path / "libs", "256m", NAMENODE_CLASS)
    assert cmd.index("-Xmx1g") > cmd.index("-Xmx256m")  # the JVM keeps the last of a repeated flag
    assert cmd.index("-Xmx1g") < cmd.index(NAMENODE_CLASS)
