"""The one root of every error btcflow raises on purpose, and the kinds more than one package raises.

Each error carries the contract's exit status; the command line turns any `BtcflowError` into one line on
stderr and that status (btcflow.cli.main), in one place. A package adds small subclasses of its own
(pipeline's `StorageFull`, the gateway's HTTP errors, Spark's `SparkUnavailable`), never a second root.
"""


class BtcflowError(Exception):
    """Root of every error btcflow raises on purpose: one line for the user, and an exit status."""

    exit_code = 2


class BadInput(BtcflowError):
    """The user's input (a file, an option, a setting, a request value) cannot be used."""

    exit_code = 2


class AccessRefused(BtcflowError):
    """A server answered but refused the caller: no credential, a wrong one, or a role that may not do
    what was asked. The message names the user and the server, never the password."""

    exit_code = 2


class Unavailable(BtcflowError):
    """A service btcflow needs does not answer, or one it runs did not start."""

    exit_code = 3


class BrokerUnavailable(Unavailable):
    """Kafka cannot be reached, or the embedded broker cannot be started."""


class RegistryUnavailable(Unavailable):
    """The MLflow tracking store or registry did not answer (or answered with something other than
    "no such thing"): nothing was read as absent, and nothing was changed."""


class ServiceDidNotStart(Unavailable):
    """A service btcflow launches (a Kafka node, a Spark daemon, PostgreSQL, the MLflow server) did not
    come up; the message names its log."""
