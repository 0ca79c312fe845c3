"""One root exception for the serving package; each carries its HTTP status and CLI exit status."""


class ServingError(Exception):
    """Root of every error the gateway raises on purpose."""

    exit_code = 2
    status_code = 500
