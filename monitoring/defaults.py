"""Defaults of the monitor's settings that `btcflow monitor --help` shows, as plain constants.

MonitorSettings declares its fields with them and the command line prints them, from one place,
without importing pydantic-settings (which alone costs `btcflow --help` ~0.15 s).
"""

GROUP = "btcflow-monitor"
HOST = "127.0.0.1"
PORT = 9464
WINDOWS = (60, 1440)  # minutes; the first one judges
CHALLENGERS = 2
MIN_MINUTES = 30
HOLD_MINUTES = 5
REFRESH_S = 30.0
LOG_INTERVAL_S = 5.0
