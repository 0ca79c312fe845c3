"""Training's and promotion's own error, beside core.errors' shared kinds (BadInput, RegistryUnavailable)."""

from core.errors import BtcflowError


class TrainingError(BtcflowError):
    """Training or promotion cannot go on with what it has (nothing to compare versions on, no loadable
    challenger, a promotion that raced another): nothing was changed."""
