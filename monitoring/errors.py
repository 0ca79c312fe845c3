"""One root exception for the monitoring package; each carries the CLI exit status from the contract."""


class MonitoringError(Exception):
    """Root of every error the monitor raises on purpose."""

    exit_code = 2


class BadInput(MonitoringError):
    """An option or setting the monitor cannot use (a window, a challenger count)."""

    exit_code = 2


class RegistryUnavailable(MonitoringError):
    """The MLflow registry did not answer when the monitor started: nothing to score, exit 3."""

    exit_code = 3
