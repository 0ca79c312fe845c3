"""Jars from Maven Central: the one way btcflow gets Kafka's, Hadoop's and the Spark-Kafka connector's.

Each service keeps a pom of what it needs; `copy_dependencies` resolves it (Maven's cache, then Central)
into a staging folder that the caller renames into place once whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Maven colours its output even with -B on some terminals


def copy_dependencies(pom: Path, staging: Path, *properties: str) -> str | None:
    """The pom's runtime dependencies into `staging` (emptied first); None when done, else why not.

    `properties` are `-Dname=value` arguments for the pom. The reason is one line: Maven missing, or
    Maven's first [ERROR] line (else its first line).
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        return "Maven (mvn) not found on PATH: it is needed once to resolve the jars"
    shutil.rmtree(staging, ignore_errors=True)
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            *properties,
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [ANSI.sub("", line).strip() for line in (done.stdout + done.stderr).splitlines()]
        errors = [line for line in lines if line.startswith("[ERROR]")] or [line for line in lines if line]
        return errors[0] if errors else "no output"
    return None
