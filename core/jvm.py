"""Options added to every JVM btcflow starts: `BTCFLOW_JVM_OPTS` (unset by default).

Kafka nodes and their storage format, HDFS daemons, Spark's standalone daemons, and the Spark drivers
and executors of training, the serving tests and the gateway's Spark engine all append these options
after their own, so they win where both set one (the JVM keeps the last of a repeated flag). A process
environment variable like JAVA_HOME, read when a JVM is launched: the test suite sets it once for the
whole process tree (tests/conftest.py), where JVMs live seconds to minutes and C2's compilations never
pay back (`-XX:TieredStopAtLevel=1`); long production runs leave it unset and keep C2.

Not JAVA_TOOL_OPTIONS: the JVM prints "Picked up JAVA_TOOL_OPTIONS" on stderr, which btcflow's quiet
commands would show. Only the standard library is imported here.
"""

from __future__ import annotations

import os
import shlex

ENV = "BTCFLOW_JVM_OPTS"


def extra_options() -> list[str]:
    """The options of BTCFLOW_JVM_OPTS, split as a shell would (none when unset)."""
    return shlex.split(os.environ.get(ENV, ""))


def with_extra_options(options: str) -> str:
    """`options` (one string, as Spark's extraJavaOptions and SPARK_DAEMON_JAVA_OPTS take them) followed
    by BTCFLOW_JVM_OPTS."""
    extra = extra_options()
    return shlex.join([*shlex.split(options), *extra]) if extra else options
