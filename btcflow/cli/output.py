"""Where the CLI prints: a rich console that keeps tables whole when stdout is a file or a pipe."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
    """A terminal's own width; 120 columns off a terminal (rich would truncate tables at 80).

    rich is imported here, not at the top: `btcflow --help` imports every command module (the demo
    imports this one) and must not pay for what only a command's output needs."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)
