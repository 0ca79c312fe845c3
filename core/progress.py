"""The live progress display of long runs, on stderr: rows, rows/s and elapsed time, or nothing.

One display for every command that shows one: the producer's bar (a total: bar and ETA, gone when it
ends), the consumer's open-ended line (a spinner and its counts, kept) and training's line per fit (its
stage and seconds, kept). rich is imported only when the display is on, so a run without a terminal
never pays for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RowProgress:
    """A context manager; `update` redraws. With `total` a bar and an ETA; `counts` are named integers
    shown beside the rows (the consumer's batches and rejected). Disabled, every call does nothing."""

    def __init__(
        self,
        enabled: bool,
        label: str,
        *,
        total: int | None = None,
        counts: tuple[str, ...] = (),
        transient: bool = False,
    ) -> None:
        self._progress: Any = None
        self._started = time.monotonic()
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[ProgressColumn] = [SpinnerColumn()] if total is None else []
        columns.append(TextColumn("{task.description:<9}"))
        if total is not None:
            columns.append(BarColumn())
        columns.append(TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>8,.0f} rows/s"))
        columns += [TextColumn(f"{{task.fields[{name}]}} {name}") for name in counts]
        columns.append(TimeElapsedColumn())
        if total is not None:
            columns += [TextColumn("ETA"), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=transient)
        self._task = self._progress.add_task(label, total=total, rows=0, rate=0.0, **dict.fromkeys(counts, 0))

    def __enter__(self) -> RowProgress:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, rows: int, *, done: int | None = None, label: str | None = None, **counts: int) -> None:
        """`rows` so far; `done` the bar's position when it counts something else (bytes read)."""
        if self._progress is None:
            return
        rate = rows / max(time.monotonic() - self._started, 1e-6)
        fields: dict[str, Any] = {"rows": rows, "rate": rate, **counts}
        if label is not None:
            fields["description"] = label
        self._progress.update(self._task, completed=rows if done is None else done, **fields)


class StageLine:
    """A context manager: one kept line for one step in stages (a model's split, fit, score, log): a
    spinner, the label, the stage, the seconds since the line began and the rows once known. rich redraws
    it from a thread of its own, so the seconds run on while a stage blocks (a Spark fit) and nothing
    else has to tick. Disabled (no terminal), each stage is one INFO record of `log` instead."""

    def __init__(
        self, enabled: bool, label: str, *, log: logging.Logger | None = None, console: Any = None
    ) -> None:
        self._label, self._log, self._stage = label, log, ""
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[stage]:<6}"),
            TextColumn("{task.elapsed:>7.1f} s"),
            TextColumn("{task.fields[rows]}"),
            console=console or Console(stderr=True),
        )
        self._task = self._progress.add_task(label, total=1, stage="", rows="")

    def __enter__(self) -> StageLine:
        if self._progress is not None:
            self._progress.reset(self._task)  # the seconds count from here
            self._progress.start()
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        if self._progress is not None:
            stage = f"{self._stage} failed" if failed else "done"
            self._progress.update(self._task, completed=0 if failed else 1, stage=stage)
            self._progress.stop()

    def stage(self, name: str, rows: int | None = None) -> None:
        """`name` starts now; `rows` once known (kept for the stages after)."""
        self._stage = name
        shown = "" if rows is None else f"{rows:,} rows"
        if self._progress is not None:
            self._progress.update(self._task, stage=name, **({"rows": shown} if shown else {}))
        elif self._log is not None:
            self._log.info("%s: %s%s", self._label, name, f" ({shown})" if shown else "")
