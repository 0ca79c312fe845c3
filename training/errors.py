"""One root exception for the training package; each carries the CLI exit status from the contract."""


class TrainingError(Exception):
    """Root of every error training and promotion raise on purpose."""

    exit_code = 2
