"""Spark's Kafka source for Structured Streaming (`spark-sql-kafka-0-10`), resolved by Maven once.

Only the ingest benchmark uses it: its peer reads the same topic as btcflow's consumer group with Spark.
The jars go to Spark by `spark.jars` (local paths), not `spark.jars.packages`: Maven resolves from the
same cache as the Kafka and Hadoop jars, and nothing asks Ivy at run time. The connector is asked for at
pyspark's own version first; when Maven Central does not serve that one (pyspark 4.3.0's was not, on
2026-12-06), at `FALLBACK_VERSION`, the newest served of the same Scala line, and the caller is told which.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from services.maven import copy_dependencies

log = logging.getLogger("services")

POM = Path(__file__).parent / "pom.xml"
FALLBACK_VERSION = "4.2.0"
JAR = "spark-sql-kafka-0-10_2.13-{version}.jar"


class ConnectorUnavailable(RuntimeError):
    """Maven could not resolve the connector at any version tried."""


def setup_kafka_source(cache: Path, spark_version: str) -> tuple[str, list[Path]]:
    """(the connector's version, its jars), resolved into `cache/<version>` once per pom and version."""
    tried = []
    for version in dict.fromkeys((spark_version, FALLBACK_VERSION)):
        jars = _resolve(cache / version, version)
        if jars:
            if version != spark_version:
                log.warning("spark-sql-kafka %s is not served: using %s", spark_version, version)
            return version, jars
        tried.append(version)
    raise ConnectorUnavailable(f"Maven could not resolve spark-sql-kafka-0-10_2.13 at {', '.join(tried)}")


def _resolve(libs: Path, version: str) -> list[Path]:
    libs = libs.resolve()  # Maven resolves a relative path against the pom's folder
    stamp = libs / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes() + version.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and (libs / JAR.format(version=version)).is_file():
        return sorted(libs.glob("*.jar"))
    if shutil.which("mvn") is None:
        raise ConnectorUnavailable("Maven (mvn) not found on PATH: it is needed once to resolve the jars")
    staging = libs.with_name(libs.name + ".partial")
    log.info("resolving spark-sql-kafka %s with Maven into %s", version, libs)
    if failure := copy_dependencies(POM, staging, f"-Dspark.version={version}"):
        log.info("Maven could not resolve spark-sql-kafka %s: %s", version, failure[:300])
        return []
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(digest)
    return sorted(libs.glob("*.jar"))
