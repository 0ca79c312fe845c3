"""The embedded cluster with authentication (SASL/SCRAM-SHA-512) and ACLs: one real single-node cluster
for this file, a fresh topic and groups per test, the roles granted on them by the admin."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import TopicAuthorizationFailedError

from core.credentials import Credential
from core.dataset import read_manifest
from core.errors import BadInput
from pipeline.broker import ensure_topic
from pipeline.settings import PipelineSettings
from services.kafka import auth
from services.kafka.admin import admin_client
from services.kafka.clients import BrokerAuthFailed, sasl_options
from services.kafka.cluster import EmbeddedCluster
from services.kafka.launcher import free_port_pair
from serving.publisher import connect
from tests.environment import without_settings

BTCFLOW = [sys.executable, "-m", "btcflow.cli"]
ROWS = 3000


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A single-node cluster that requires authentication (512m heap), started once for this file."""
    home = tmp_path_factory.mktemp("kafka-auth")
    cluster = EmbeddedCluster(
        home, PipelineSettings().kafka_jars, port=free_port_pair(), heap="512m", auth=True
    )
    started = time.monotonic()
    try:
        cluster.start(timeout_s=120)
        print(f"auth cluster started in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class Granted:
    cluster: EmbeddedCluster
    names: auth.Names

    def credential(self, role: str) -> Credential:
        found = self.cluster.credential(role)
        assert found is not None
        return found


@pytest.fixture
def granted(secured: EmbeddedCluster) -> Granted:
    """A fresh topic, groups and prediction topic, with the roles' ACLs on them."""
    tag = uuid.uuid4().hex[:10]
    names = auth.Names(
        topic=f"auth-{tag}",
        consumer_group=f"batcher-{tag}",
        monitor_group=f"monitor-{tag}",
        prediction_topic=f"predictions-{tag}",
    )
    assert secured.grant(names) == len(auth.role_acls(names))
    return Granted(secured, names)


@pytest.fixture
def minutes(tmp_path: Path) -> Path:
    out = tmp_path / "minutes.csv"
    subprocess.run(
        [*BTCFLOW, "data", "synth", "--rows", str(ROWS), "--out", str(out)],
        check=True,
        env=env(),
        capture_output=True,
    )
    return out


def env(**extra: str) -> dict[str, str]:
    base = without_settings("BTCFLOW_")
    return {**base, **extra}


def run(
    g: Granted, tmp_path: Path, args: list[str], login: Credential | None, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`btcflow ARGS` against the cluster as `login` (none: no BTCFLOW_KAFKA_USERNAME); (result, seconds)."""
    extra = {
        "BTCFLOW_KAFKA_BOOTSTRAP": g.cluster.bootstrap,
        "BTCFLOW_TOPIC": g.names.topic,
        "BTCFLOW_CONSUMER_GROUP": g.names.consumer_group,
        "BTCFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    if login is not None:
        extra |= {"BTCFLOW_KAFKA_USERNAME": login.username, "BTCFLOW_KAFKA_PASSWORD": login.password}
    started = time.monotonic()
    done = subprocess.run(
        [*BTCFLOW, *args], env=env(**extra), capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def producer(g: Granted, role: str) -> KafkaProducer:
    """A plain producer (no idempotence: its refusal is the topic's, not the producer id's) as `role`."""
    return KafkaProducer(
        bootstrap_servers=g.cluster.bootstrap,
        enable_idempotence=False,
        max_block_ms=10_000,
        **sasl_options(g.credential(role)),
    )


# -- without a broker -----------------------------------------------------------------------------------


def test_every_acl_is_literal_and_only_for_the_roles() -> None:
    names = auth.Names("bitcoin-topic", "btcflow-batcher", "btcflow-monitor", "btcflow-predictions")
    acls = auth.role_acls(names)
    held = {(a.principal, a.resource_pattern.resource_name, a.operation.name) for a in acls}
    assert {a.principal for a in acls} == {f"User:{r}" for r in auth.ROLES}
    assert ("User:producer", "bitcoin-topic.dlq", "WRITE") in held
    assert ("User:consumer", "btcflow-batcher", "READ") in held
    assert ("User:gateway", "btcflow-predictions", "WRITE") in held
    writers = {p for p, _, op in held if op == "WRITE"}
    assert writers == {"User:producer", "User:gateway"}
    assert {n for p, n, op in held if p == "User:gateway"} == {"btcflow-predictions"}
    assert all(a.resource_pattern.pattern_type.name == "LITERAL" for a in acls)


def test_the_storage_tool_gets_a_salted_password_never_the_password() -> None:
    argument = auth.salted_scram(Credential("admin", "s3cret-password"))
    assert argument.startswith("SCRAM-SHA-512=[name=admin,iterations=8192,salt=")
    assert "s3cret-password" not in argument


# -- against the authenticating cluster -----------------------------------------------------------------


def test_credentials_and_the_node_config_are_owner_only(secured: EmbeddedCluster) -> None:
    for user in auth.USERS:
        path = auth.credential_file(secured.home, user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text().startswith(f"{user}:")
    config = secured.members[0].config_file
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "allow.everyone.if.no.acl.found=false" in config.read_text()
    assert secured.status().auth
    assert "SASL/SCRAM-SHA-512 and ACLs required" in secured.status().describe()


def test_an_open_start_of_the_secured_home_is_refused(secured: EmbeddedCluster) -> None:
    open_again = EmbeddedCluster(secured.home, secured.jars_dir, port=secured.port)
    with pytest.raises(BadInput, match="requires authentication"):
        open_again.start(timeout_s=5)


def test_embedded_settings_log_in_as_the_role_s_kept_credential(secured: EmbeddedCluster) -> None:
    settings = PipelineSettings(broker_dir=secured.home, broker_port=secured.port)
    assert settings.kafka_credential(auth.PRODUCER) == secured.credential(auth.PRODUCER)
    assert settings.kafka_credential(auth.CONSUMER).username == "consumer"  # type: ignore[union-attr]
    named = PipelineSettings(broker_dir=secured.home, kafka_username="someone", kafka_password="pw")
    assert named.kafka_credential(auth.PRODUCER) == Credential("someone", "pw")  # the environment wins


@pytest.mark.parametrize("command", ["produce", "consume"])
@pytest.mark.parametrize("login", ["none", "wrong password"])
def test_no_or_a_wrong_login_is_one_line_and_exit_3(
    granted: Granted, tmp_path: Path, minutes: Path, command: str, login: str
) -> None:
    who = None if login == "none" else Credential("producer", "not-the-password")
    args = (
        ["produce", "--input", str(minutes), "--no-progress"]
        if command == "produce"
        else ["consume", "--batch-rows", "100", "--idle-timeout", "3", "--no-progress"]
    )
    done, seconds = run(granted, tmp_path, args, who)
    assert done.returncode == 3, done.stderr
    line = one_line(done)
    assert "authentication failed" in line and granted.cluster.bootstrap in line
    assert ("user producer" in line) if who else ("without credentials" in line)
    assert seconds < 30  # the client's 5 s bootstrap timeout, not a hang


def test_the_producer_produces_and_resumes_and_the_consumer_group_batches(
    granted: Granted, tmp_path: Path, minutes: Path
) -> None:
    as_producer = granted.credential(auth.PRODUCER)
    done, _ = run(granted, tmp_path, ["produce", "--input", str(minutes), "--no-progress"], as_producer)
    assert done.returncode == 0, done.stderr
    assert f"sent {ROWS:,} rows" in done.stdout
    again, _ = run(
        granted, tmp_path, ["produce", "--input", str(minutes), "--no-progress", "--resume"], as_producer
    )
    assert again.returncode == 0, again.stderr
    assert f"skipped {ROWS:,} rows" in again.stdout and "sent 0 rows" in again.stdout

    as_consumer = granted.credential(auth.CONSUMER)
    args = ["consume", "--batch-rows", "1000", "--idle-timeout", "3", "--no-progress"]
    consumed, _ = run(granted, tmp_path, args, as_consumer)
    assert consumed.returncode == 0, consumed.stderr
    entries = read_manifest(tmp_path / "data" / "batch")
    assert [e.rows for e in entries] == [1000, 1000, 1000]

    # the consumer user in another group than its own: refused, exit 2
    other = Granted(granted.cluster, auth.Names(granted.names.topic, "not-granted", "x", "y"))
    refused, _ = run(other, tmp_path / "other", args, as_consumer)
    assert refused.returncode == 2, refused.stderr
    assert "refused user consumer" in one_line(refused) and "GroupAuthorizationFailed" in refused.stderr


@pytest.mark.parametrize("role", [auth.CONSUMER, auth.MONITOR, auth.GATEWAY])
def test_only_the_producer_writes_the_topic(granted: Granted, role: str) -> None:
    ensure_topic(granted.cluster.bootstrap, granted.names.topic, 1, granted.credential(auth.ADMIN))
    writer = producer(granted, role)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            writer.send(granted.names.topic, b"not yours").get(timeout=10)
    finally:
        writer.close(timeout=0)


def test_the_consumer_user_s_produce_is_refused_with_exit_2(
    granted: Granted, tmp_path: Path, minutes: Path
) -> None:
    done, _ = run(
        granted,
        tmp_path,
        ["produce", "--input", str(minutes), "--no-progress"],
        granted.credential("consumer"),
    )
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert "refused user consumer" in line and "AuthorizationFailed" in line


def test_the_monitor_reads_the_topic_in_its_own_group(granted: Granted) -> None:
    ensure_topic(granted.cluster.bootstrap, granted.names.topic, 1, granted.credential(auth.PRODUCER))
    writer = producer(granted, auth.PRODUCER)
    writer.send(granted.names.topic, b"minute").get(timeout=10)
    writer.close()
    reader = KafkaConsumer(
        granted.names.topic,
        bootstrap_servers=granted.cluster.bootstrap,
        group_id=granted.names.monitor_group,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        **sasl_options(granted.credential(auth.MONITOR)),
    )
    try:
        assert next(reader).value == b"minute"
    finally:
        reader.close()


def test_the_gateway_writes_the_prediction_log_only(granted: Granted) -> None:
    log, partitions, why = connect(
        granted.names.prediction_topic, granted.cluster.bootstrap, granted.credential("gateway")
    )
    assert log is not None, why
    assert partitions == [0]
    log.send(granted.names.prediction_topic, b'{"model": "btc-close"}').get(timeout=10)
    log.close()
    denied, _, why = connect(granted.names.topic, granted.cluster.bootstrap, granted.credential("gateway"))
    assert denied is None and "TopicAuthorization" in why
    nobody, _, why = connect(granted.names.prediction_topic, granted.cluster.bootstrap, None)
    assert nobody is None and "authentication failed" in why


def test_the_admin_client_without_login_fails_fast_as_authentication(secured: EmbeddedCluster) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerAuthFailed, match="without credentials: authentication failed"):
        admin_client(secured.bootstrap, timeout_s=3.0)
    assert time.monotonic() - started < 10
