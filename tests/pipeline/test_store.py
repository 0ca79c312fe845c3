"""The batch store's one-writer rule: a second store (or consumer) on the same folder is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.consumer import consume
from pipeline.errors import BadInput
from pipeline.settings import PipelineSettings
from pipeline.store import COLUMNS, BatchStore, read_manifest


def one_row() -> pa.Table:
    return pa.table({name: [1325412060.0 if name == "Timestamp" else 1.0] for name in COLUMNS})


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = BatchStore(tmp_path)
    with pytest.raises(BadInput, match=f"another consumer writes {tmp_path}"):
        BatchStore(tmp_path)
    first.write_batch(one_row(), {0: (0, 0)})
    first.close()
    first.close()  # idempotent
    with pytest.raises(ValueError):
        first.write_batch(one_row(), {0: (1, 1)})  # a closed store no longer writes
    with BatchStore(tmp_path) as second:
        assert second.write_batch(one_row(), {0: (1, 1)}).batch == 2
    with BatchStore(tmp_path):  # the with block released it
        pass
    assert [e.batch for e in read_manifest(tmp_path)] == [1, 2]


def test_another_process_holding_the_folder_is_refused_and_its_death_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from pipeline.store import BatchStore; "
            "s = BatchStore(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BadInput):
            BatchStore(tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    BatchStore(tmp_path).close()  # the kernel dropped the dead process's lock


def test_consume_refuses_a_folder_another_consumer_writes(tmp_path: Path) -> None:
    settings = PipelineSettings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path)
    with BatchStore(tmp_path / "out"), pytest.raises(BadInput, match="another consumer"):
        consume(settings, tmp_path / "out", batch_rows=10, idle_timeout_s=1, progress=False)
