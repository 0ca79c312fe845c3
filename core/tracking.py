"""Where the MLflow store is when MLFLOW_TRACKING_URI is unset: training writes there, the gateway and the
monitor read there, so the one default lives here (plain paths: no mlflow, nothing the gateway must avoid)."""

from __future__ import annotations

from pathlib import Path

MLRUNS_DIR = Path("mlruns")  # the embedded store's home, relative to the working directory


def default_tracking_uri(mlruns_dir: Path = MLRUNS_DIR) -> str:
    """SQLite in `<mlruns_dir>/mlflow.db`, absolute (artifacts go beside it, in `<mlruns_dir>/artifacts`)."""
    return f"sqlite:///{mlruns_dir.resolve() / 'mlflow.db'}"
