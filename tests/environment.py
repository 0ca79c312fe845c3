"""The environment of a command a test starts "with no setting from outside": the caller's minus its
btcflow (MLflow, ...) settings, but with the suite's JVM options (BTCFLOW_JVM_OPTS, tests/conftest.py),
which say how every JVM of the suite runs, not what a command does."""

from __future__ import annotations

import os

from core import jvm


def without_settings(*prefixes: str) -> dict[str, str]:
    """os.environ without the variables whose names start with one of `prefixes`, BTCFLOW_JVM_OPTS kept."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) or k == jvm.ENV}
