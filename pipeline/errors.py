"""The ingest's own errors, beside core.errors' shared kinds (BadInput, BrokerUnavailable)."""

from core.errors import BadInput, BtcflowError, Unavailable


class StorageFull(BtcflowError):
    """The batch folder's disk is full: nothing was written, the run stops so that space can be freed."""

    exit_code = 3


class StoreUnavailable(Unavailable):
    """The dataset's store failed a commit (HDFS down, an I/O error): the batch is claimed whole or not at
    all, its offsets are not committed, and a restart goes on exactly once."""


class OffsetMismatch(BadInput):
    """The dataset's resume offset no longer fits the topic (recreated, or cut by retention)."""
