"""Where the CLI prints: a rich console that keeps tables whole when stdout is a file or a pipe."""

from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    """A terminal's own width; 120 columns off a terminal (rich would truncate tables at 80)."""
    return Console(width=None if sys.stdout.isatty() else 120)
