"""The input file cut into contiguous slices at line ends, with exact 1-based line numbers.

One slice is the whole file; several let producer processes each send a piece of the file to their
own partition, while a rejected row still reports its line number in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.rows import header_columns

READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Slice:
    """A contiguous piece of the file: bytes [start, end), whose first line has number `first_line`."""

    start: int
    end: int
    first_line: int
    partition: int  # explicit: kafka-python's pure-Python murmur2 partitioner costs as much as a send


def slices(path: Path, workers: int, partitions: int) -> tuple[bytes, list[Slice]]:
    """The header line and `workers` slices cut at line ends (1-based line numbers kept exact)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.readline()
        body = f.tell() if header_columns(header) is not None else 0
        cuts = [body]
        for i in range(1, workers):
            f.seek(max(body, size * i // workers))
            f.readline()  # move to the next line start
            cuts.append(max(f.tell(), cuts[-1]))
        cuts.append(size)
        first = 2 if body else 1
        result = []
        for i in range(workers):
            result.append(Slice(cuts[i], cuts[i + 1], first, i % partitions))
            first += _count_lines(f, cuts[i], cuts[i + 1])
    return header, result


def _count_lines(f: Any, start: int, end: int) -> int:
    f.seek(start)
    count, left = 0, end - start
    while left > 0:
        block = f.read(min(READ_BUFFER, left))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def lines(path: Path, part: Slice) -> Iterator[bytes]:
    """The slice's lines, read in big buffered blocks; only `part.end - part.start` bytes are ever read."""
    with path.open("rb", buffering=READ_BUFFER) as f:
        f.seek(part.start)
        left = part.end - part.start
        for line in f:
            if left <= 0:
                return
            left -= len(line)
            yield line
