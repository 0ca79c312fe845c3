"""What running HDFS on this machine takes: Hadoop's jars, a Java, and the JVM command of a daemon.

The jars are Apache Hadoop's own, resolved from Maven Central by `services/hdfs/pom.xml` at the version of
the Hadoop client pyspark ships, so Spark and the daemons speak the same protocol. Each daemon reads its
`core-site.xml` and `hdfs-site.xml` from its own conf folder, put first on its classpath: no HADOOP_HOME,
no shell scripts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from core import jvm
from core.errors import Unavailable
from services.maven import copy_dependencies

log = logging.getLogger("services")

HDFS_DIR = Path(__file__).parent
POM = HDFS_DIR / "pom.xml"
LOG4J_CONFIG = HDFS_DIR / "log4j.properties"

NAMENODE_CLASS = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_CLASS = "org.apache.hadoop.hdfs.server.datanode.DataNode"
HDFS_MARKER = b"org.apache.hadoop.hdfs.server."  # in the command line of both daemons


class HdfsUnavailable(Unavailable):
    """The HDFS NameNode does not answer, or a daemon btcflow runs (NameNode, DataNode) did not start."""


def setup_jars(jars_dir: Path) -> Path:
    """Resolve the Hadoop jars with Maven into `jars_dir/libs`, once per version of the pom."""
    libs, stamp = jars_dir / "libs", jars_dir / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and any(libs.glob("hadoop-hdfs-*.jar")):
        return libs
    staging = jars_dir / "libs.partial"
    log.info("resolving Hadoop jars with Maven into %s", libs)
    if failure := copy_dependencies(POM, staging):
        raise HdfsUnavailable(f"could not resolve the Hadoop jars: {failure}")
    _keep_webapps_only(staging)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(digest)
    return libs


def _keep_webapps_only(libs: Path) -> None:
    """Replace Hadoop's test jar, taken for its web UI alone, by a jar of its `webapps/` (a few hundred KB):
    Jetty scans the whole jar its web app comes from, which took 2 s of the NameNode's start."""
    for tests_jar in libs.glob("hadoop-hdfs-*-tests.jar"):
        with zipfile.ZipFile(tests_jar) as src, zipfile.ZipFile(libs / "hadoop-hdfs-webapps.jar", "w") as dst:
            for item in src.infolist():
                if item.filename.startswith("webapps/"):
                    dst.writestr(item, src.read(item))
        tests_jar.unlink()


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise HdfsUnavailable("Java not found (set JAVA_HOME or put java 17+ on PATH)")
    return java


def jvm_command(java: str, conf_dir: Path, libs: Path, heap: str, main_class: str, *args: str) -> list[str]:
    """The command of one daemon (or of the NameNode's format): its conf folder first on the classpath,
    its temporary files (Jetty unpacks the web UI there at each start) in its own folder, not /tmp."""
    tmp = conf_dir.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return [
        java,
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",  # a daemon of a few hundred MB: no GC threads to feed on 2 cores
        # C1 only: half the CPU to start (the format, 2.2 s of CPU, takes 1.0 s); a daemon's hot paths
        # are I/O and CRC32C, an intrinsic in C1 too
        "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv4Stack=true",  # as Hadoop's own scripts start it
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration={LOG4J_CONFIG.as_uri()}",
        f"-Dhadoop.log.dir={conf_dir.parent}",
        f"-Djava.io.tmpdir={tmp}",
        *jvm.extra_options(),
        "-cp",
        f"{conf_dir}{os.pathsep}{libs}/*",
        main_class,
        *args,
    ]


def site_xml(properties: dict[str, str]) -> str:
    """A Hadoop configuration file (core-site.xml, hdfs-site.xml) holding `properties`."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Written by btcflow at every start of this daemon; edit services/hdfs/node.py instead. -->",
        "<configuration>",
    ]
    lines += [
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>"
        for k, v in properties.items()
    ]
    return "\n".join([*lines, "</configuration>", ""])
