"""The ingest's own errors, beside core.errors' shared kinds (BadInput, BrokerUnavailable)."""

from core.errors import BadInput, BtcflowError


class StorageFull(BtcflowError):
    """The batch folder's disk is full: nothing was written, the run stops so that space can be freed."""

    exit_code = 3


class OffsetMismatch(BadInput):
    """The dataset's resume offset no longer fits the topic (recreated, or cut by retention)."""
