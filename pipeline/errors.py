"""One root exception for the ingest package; each carries the CLI exit status from the contract."""


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    exit_code = 2


class BadInput(PipelineError):
    """The user's input (a file, an option, a setting) cannot be used."""

    exit_code = 2


class BrokerUnavailable(PipelineError):
    """Kafka cannot be reached, or the embedded broker cannot be started."""

    exit_code = 3


class StorageFull(PipelineError):
    """The batch folder's disk is full: nothing was written, the run stops so that space can be freed."""

    exit_code = 3


class OffsetMismatch(PipelineError):
    """The dataset's resume offset no longer fits the topic (recreated, or cut by retention)."""

    exit_code = 2
