"""Authentication and authorization of the embedded cluster (`EmbeddedCluster(auth=True)`): who the users
are, where their credentials are kept, what each node's configuration says, and what each role may do.

Listeners. Clients and the brokers among themselves talk on one SASL_PLAINTEXT listener with SCRAM-SHA-512:
nodes may run on different hosts, so replication authenticates too (as `admin`, the super user). The
KRaft controller listener is SASL_PLAINTEXT as well, but with PLAIN: SCRAM credentials live in the metadata
log, which the controllers must first agree on (a vote happens before any log is read), so Kafka offers
no SCRAM there; PLAIN's one user (`admin`) is declared in the node's own JAAS line. Nothing stays
PLAINTEXT, so no connection is ever the ANONYMOUS principal. Without TLS the traffic is not encrypted:
SCRAM never sends a password, PLAIN on the controller port does (between the nodes only).

Users. `admin`, `producer`, `consumer`, `monitor`, `gateway`, each with one kept `user:password` file
(0600) in `<home>/credentials/<user>`. Every user is seeded into the storage when a node is formatted
(`kafka-storage format --add-scram`, given the salted password, so no password goes on a command line);
at every start the admin upserts the role users again (alter_user_scram_credentials), so a cluster
formatted before a role existed, or a kept file made anew, still matches its file.

Authorization. StandardAuthorizer, `super.users=User:admin`, no ACL means no access. `grant_roles` gives
each role only what btcflow's commands of that role do (see `role_acls`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError

from core.credentials import Credential, kept_credential, read_credential
from core.errors import BrokerUnavailable

ADMIN = "admin"
PRODUCER = "producer"
CONSUMER = "consumer"
MONITOR = "monitor"
GATEWAY = "gateway"
USERS = (ADMIN, PRODUCER, CONSUMER, MONITOR, GATEWAY)
ROLES = USERS[1:]  # the users that are not super users

MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 8192  # what Kafka's own tools use for SCRAM-SHA-512 (its minimum is 4096)
LISTENER = "SASL_PLAINTEXT"  # the client and inter-broker listener's name (and protocol)
PREDICTION_TOPIC = "btcflow-predictions"  # granted to the gateway when BTCFLOW_PREDICTION_TOPIC is unset


def credentials_dir(home: Path) -> Path:
    return home / "credentials"


def credential_file(home: Path, user: str) -> Path:
    """`<home>/credentials/<user>`: the one kept file of a user of the cluster in `home`."""
    return credentials_dir(home) / user


def kept_users(home: Path) -> dict[str, Credential]:
    """Every user's credential, made (a new random password) the first time; the files are 0600."""
    folder = credentials_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return {user: kept_credential(credential_file(home, user), user) for user in USERS}


def role_credential(home: Path, role: str) -> Credential | None:
    """The kept credential of `role` on the cluster in `home`; None when there is no such file."""
    return read_credential(credential_file(home, role))


def salted_scram(credential: Credential, mechanism: str = MECHANISM) -> str:
    """The `--add-scram` argument of kafka-storage format for this user, salted here (PBKDF2, as SCRAM's
    Hi()) so the password itself never appears on the storage tool's command line."""
    salt = secrets.token_bytes(32)
    digest = "sha512" if mechanism.endswith("512") else "sha256"
    salted = hashlib.pbkdf2_hmac(digest, credential.password.encode(), salt, ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{mechanism}=[name={credential.username},iterations={ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def node_security(admin: Credential) -> str:
    """The server.properties lines of an authenticating node (see the module's docstring)."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    user, password = admin.username, admin.password
    listener = LISTENER.lower()
    login = f'username="{user}" password="{password}"'
    return f"""\
inter.broker.listener.name={LISTENER}
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,{LISTENER}:SASL_PLAINTEXT
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
sasl.mechanism.controller.protocol=PLAIN
listener.name.{listener}.sasl.enabled.mechanisms={MECHANISM}
listener.name.{listener}.{MECHANISM.lower()}.sasl.jaas.config={scram} required {login};
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={plain} required {login} user_{user}="{password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{user}
allow.everyone.if.no.acl.found=false
"""


def upsert_users(admin: KafkaAdminClient, users: Iterable[Credential]) -> None:
    """(Re)set the SCRAM credential of each user to its kept password; idempotent."""
    sha512 = ScramMechanism.SCRAM_SHA_512
    upserts = [UserScramCredentialUpsertion(c.username, sha512, c.password, ITERATIONS) for c in users]
    try:
        result = admin.alter_user_scram_credentials(upserts)
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka refused the SCRAM users: {exc}") from exc
    failed = {user: why for user, why in result.items() if why}  # user -> error message, None when done
    if failed:
        raise BrokerUnavailable(f"Kafka refused the SCRAM users: {failed}")


@dataclass(frozen=True)
class Names:
    """What the roles work on: the ingest topic (its dead-letter topic is `<topic>.dlq`), the consumer
    group of `btcflow consume`, the group of `btcflow monitor`, and the gateway's prediction log."""

    topic: str
    consumer_group: str
    monitor_group: str
    prediction_topic: str = PREDICTION_TOPIC
    monitor_topics: tuple[str, ...] = ()  # topics the monitor reads besides `topic` (the demo's -live one)

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"


def role_acls(names: Names) -> list[ACL]:
    """Every ACL btcflow grants, all literal, all ALLOW, on any host:

    - producer: WRITE, DESCRIBE and CREATE on the topic and its DLQ (`produce` creates them when missing),
      READ on both (`produce --resume` reads where each ends; it joins no group);
    - consumer: READ and DESCRIBE on the topic, CREATE on it (`consume` creates a missing topic too),
      READ on its group;
    - monitor: READ and DESCRIBE on the topic (and `monitor_topics`), READ on its own group;
    - gateway: WRITE, DESCRIBE and CREATE on the prediction log topic only.

    Nothing on the cluster itself and nothing else: a role writing where it may not gets
    TopicAuthorizationFailed. (WRITE and READ imply DESCRIBE in Kafka; DESCRIBE is granted anyway so
    that the list says what each command needs.)
    """
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    grants: list[tuple[str, ResourceType, str, ACLOperation]] = []
    for name in (names.topic, names.dlq):
        for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE, ACLOperation.CREATE, ACLOperation.READ):
            grants.append((PRODUCER, topic, name, op))
    for op in (ACLOperation.READ, ACLOperation.DESCRIBE, ACLOperation.CREATE):
        grants.append((CONSUMER, topic, names.topic, op))
    grants.append((CONSUMER, group, names.consumer_group, ACLOperation.READ))
    for name in (names.topic, *names.monitor_topics):
        for op in (ACLOperation.READ, ACLOperation.DESCRIBE):
            grants.append((MONITOR, topic, name, op))
    grants.append((MONITOR, group, names.monitor_group, ACLOperation.READ))
    for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE, ACLOperation.CREATE):
        grants.append((GATEWAY, topic, names.prediction_topic, op))
    return [
        ACL(
            principal=f"User:{user}",
            host="*",
            operation=op,
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(kind, name, ACLResourcePatternType.LITERAL),
        )
        for user, kind, name, op in grants
    ]


def grant_roles(admin: KafkaAdminClient, names: Names) -> int:
    """Create the roles' ACLs for `names` (idempotent: Kafka keeps one of each); return how many."""
    acls = role_acls(names)
    try:
        result = admin.create_acls(acls)
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka refused the ACLs: {exc}") from exc
    failed = result.get("failed", []) if isinstance(result, dict) else []
    if failed:
        raise BrokerUnavailable(f"Kafka refused {len(failed)} ACL(s), the first: {failed[0]}")
    return len(acls)


def restrict(path: Path) -> None:
    """Make `path` readable by its owner only (a node's server.properties holds the admin's password)."""
    os.chmod(path, 0o600)
