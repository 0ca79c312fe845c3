"""One root exception for the training package; each carries the CLI exit status from the contract."""


class TrainingError(Exception):
    """Root of every error training and promotion raise on purpose."""

    exit_code = 2


class BadInput(TrainingError):
    """The user's input (a model, a batch SPEC, a version, the batch directory) cannot be used."""

    exit_code = 2


class TrackingUnavailable(TrainingError):
    """The MLflow tracking store cannot be reached; nothing was trained or changed."""

    exit_code = 3


class ServiceDidNotStart(TrainingError):
    """A service btcflow launches for training (PostgreSQL, the MLflow tracking server) did not come up."""

    exit_code = 3


class SparkUnavailable(ServiceDidNotStart):
    """A Spark daemon (master, worker, history server) did not start or does not answer."""
