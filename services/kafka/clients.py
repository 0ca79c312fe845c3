"""How every btcflow Kafka client (producer, consumer, admin; the gateway's publisher too) connects: the
SASL options its credential gives, and the one line a refused or failed connection becomes.

A cluster that requires authentication (services.kafka.auth) answers a client without credentials, or with
a wrong password, by closing the connection: kafka-python retries it until its bootstrap timeout and then
reports NoBrokersAvailable, as for a broker that is down. Told apart here: the port answers, so it was
the authentication (BrokerAuthFailed, exit 3, naming the user and the broker). An authenticated user that
asks for what its role may not do gets an authorization error from the broker: AccessRefused (exit 2).
"""

from __future__ import annotations

import socket
from typing import Any

from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError

from core.credentials import Credential
from core.errors import AccessRefused, BrokerUnavailable

MECHANISM = "SCRAM-SHA-512"
AUTHORIZATION_ERRORS = (AuthorizationError,)  # topic, group, cluster, transactional id


class BrokerAuthFailed(BrokerUnavailable):
    """Kafka answered but did not accept the client's credential (none, an unknown user, a wrong password).
    Exit 3 as for an unreachable broker: the client cannot use the cluster at all."""


def sasl_options(credential: Credential | None) -> dict[str, Any]:
    """The kafka-python options of a client that logs in as `credential`; none for an open cluster."""
    if credential is None:
        return {}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": credential.username,
        "sasl_plain_password": credential.password,
    }


def who(credential: Credential | None) -> str:
    return f"user {credential.username}" if credential else "a client without credentials"


def connect_error(bootstrap: str, exc: BaseException, credential: Credential | None) -> BrokerUnavailable:
    """What a client that could not connect reports: the authentication failed (the broker's port answers,
    or Kafka said so), else Kafka is not reachable."""
    if isinstance(exc, SaslAuthenticationFailedError) or any_port_answers(bootstrap):
        hint = (
            "unknown user or wrong password"
            if credential
            else "the cluster requires authentication: set BTCFLOW_KAFKA_USERNAME and BTCFLOW_KAFKA_PASSWORD"
        )
        why = f"did not accept {who(credential)}: authentication failed ({hint})"
        return BrokerAuthFailed(f"Kafka at {bootstrap} {why}")
    return BrokerUnavailable(f"Kafka not reachable at {bootstrap} ({type(exc).__name__})")


def refused(bootstrap: str, exc: KafkaError, credential: Credential | None, what: str) -> AccessRefused:
    """An authorization error as one line naming the user, the broker and what was refused."""
    name = type(exc).__name__.removesuffix("Error")
    return AccessRefused(f"Kafka at {bootstrap} refused {who(credential)} {what} ({name})")


def any_port_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether some broker of `bootstrap` accepts a TCP connection (something listens there)."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
