"""Training trusts only what it checked: each refusal of `btcflow train` (and of the gate and the watch)
is one line on stderr and exit 2, before the tracking store records anything and before Spark starts.

No Spark here: starting it fails the test (the `no_spark` fixture), which is what each test asserts.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from core import dataset
from core.dataset import BatchEntry
from core.errors import BadInput
from tests.training.conftest import minute_table, training_settings, write_batches
from training import data
from training.settings import TrainingSettings
from training.specs import SPECS
from training.train import train_models
from training.watch import watch

SIZES = [40, 40, 40]


@pytest.fixture(autouse=True)
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check here must come before Spark: starting it fails the test (exit 1 through the CLI)."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("Spark was started")

    monkeypatch.setattr(data, "session", started)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the tests that need one (watch, gate): each new SQLite store costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns')}/mlflow.db"


def dataset_at(root: Path, sizes: list[int], store: str | None = None) -> dict[str, str]:
    """Batches of `sizes` rows under root/data/batch, written by the real store; the CLI's environment
    (a store under root/m that the refusals must never create, unless `store` is given)."""
    write_batches(root / "data" / "batch", minute_table(sum(sizes)), sizes)
    uri = store or f"sqlite:///{root}/m/mlflow.db"
    return {"BTCFLOW_DATA_DIR": str(root / "data"), "MLFLOW_TRACKING_URI": uri}


def settings_for(env: dict[str, str]) -> TrainingSettings:
    return TrainingSettings(data_dir=Path(env["BTCFLOW_DATA_DIR"]), tracking_uri=env["MLFLOW_TRACKING_URI"])


def one_line(done: object) -> str:
    """The refusal's single stderr line, after checking the exit status is 2."""
    assert done.returncode == 2, (done.stdout, done.stderr)  # type: ignore[attr-defined]
    lines = done.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: "), lines
    return lines[0]


def change_one_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 100)


def replace_with_another_batch(path: Path) -> None:
    shutil.copy(path.with_name("batch_1.parquet"), path)  # a valid parquet of the same schema


TAMPER: dict[str, Callable[[Path], None]] = {
    "changed": change_one_byte,
    "truncated": truncate,
    "replaced": replace_with_another_batch,
}


@pytest.mark.parametrize("how", list(TAMPER))
def test_a_tampered_batch_is_refused_naming_it(how: str, tmp_path: Path, btcflow) -> None:
    env = dataset_at(tmp_path, SIZES)
    TAMPER[how](tmp_path / "data" / "batch" / "batch_2.parquet")
    line = one_line(btcflow("train", "--model", "close", "--batches", "all", env=env))
    assert "batch 2 (" in line and "batch_2.parquet) does not match its manifest sha256" in line
    assert "changed, truncated or replaced since it closed" in line
    assert not (tmp_path / "m").exists()  # the tracking store was never touched


def test_a_missing_batch_file_is_refused_naming_it(tmp_path: Path, btcflow) -> None:
    env = dataset_at(tmp_path, SIZES)
    (tmp_path / "data" / "batch" / "batch_3.parquet").unlink()
    line = one_line(btcflow("train", "--model", "trend", "--batches", "2-3", env=env))
    assert "batch 3 (" in line and "batch_3.parquet) is listed in" in line and "but missing" in line


def test_batch_files_without_a_manifest_are_refused(tmp_path: Path, btcflow) -> None:
    """Batch files alone are no dataset: the commit records (and the manifest, their view) list them."""
    env = dataset_at(tmp_path, SIZES)
    (tmp_path / "data" / "batch" / "manifest.json").unlink()
    shutil.rmtree(tmp_path / "data" / "batch" / "_commits")
    line = one_line(btcflow("train", "--model", "close", "--batches", "1", env=env))
    assert "no manifest at" in line and "btcflow consume" in line
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("all", "the manifest lists no batch yet"),
        ("1", "batch 1 is not in the manifest (closed batches: none)"),
    ],
)
def test_an_empty_manifest_selects_nothing(spec: str, message: str, tmp_path: Path, btcflow) -> None:
    (tmp_path / "data" / "batch").mkdir(parents=True)
    (tmp_path / "data" / "batch" / "manifest.json").write_bytes(dataset.manifest_text([]))
    env = {"BTCFLOW_DATA_DIR": str(tmp_path / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m/m.db"}
    assert message in one_line(btcflow("train", "--model", "close", "--batches", spec, env=env))


def test_an_empty_selection_is_refused_by_the_library(tmp_path: Path) -> None:
    dataset_at(tmp_path, SIZES)
    with pytest.raises(BadInput, match="no batch selected"):
        train_models(training_settings(tmp_path), ["close"], [])
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("sizes", "args", "message"),
    [
        (
            [40, 5],
            ["--model", "all", "--batches", "1-2"],
            "batch 2 (batch_2.parquet) holds 5 rows; close needs",
        ),
        (
            [40, 10],
            ["--model", "trend", "--batches", "2"],
            "batch 2 (batch_2.parquet) holds 10 rows; trend needs",
        ),
        ([4, 40], ["--model", "high_low", "--batches", "all", "--scheme", "cumulative"], "batch 1 ("),
    ],
)
def test_too_few_rows_for_a_model_is_refused(
    sizes: list[int], args: list[str], message: str, tmp_path: Path, btcflow
) -> None:
    """From the manifest's counts, before Spark: the batch and the model named, the minimum said."""
    env = dataset_at(tmp_path, sizes)
    line = one_line(btcflow("train", *args, env=env))
    assert message in line and "needs at least" in line
    assert not (tmp_path / "m").exists()


def entry(number: int, rows: int) -> BatchEntry:
    return BatchEntry(number, f"batch_{number}.parquet", rows, 0.0, 1.0, {"0": [0, rows - 1]}, "ab")


@pytest.mark.parametrize("model", list(SPECS))
def test_each_model_minimum_is_its_specs(model: str) -> None:
    spec = SPECS[model]
    assert data.short_of_rows(spec, [entry(1, spec.min_rows)]) is None
    short = data.short_of_rows(spec, [entry(4, spec.min_rows - 1)])
    assert short is not None and short.startswith(f"batch 4 (batch_4.parquet) holds {spec.min_rows - 1} rows")
    assert f"{model} needs at least {spec.min_rows}" in short
    # several batches count together and are all named
    assert data.short_of_rows(spec, [entry(1, 1), entry(2, spec.min_rows - 1)]) is None
    assert "batches 1,2 hold 2 rows" in str(data.short_of_rows(spec, [entry(1, 1), entry(2, 1)]))


def test_unchanged_files_pass_and_are_hashed_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer hashed the final bytes; a reader hashes each file once, again only if it changed."""
    dataset_at(tmp_path, SIZES)
    directory = tmp_path / "data" / "batch"
    batches = data.read_manifest(directory)
    for b in batches:
        assert hashlib.sha256((directory / b.file).read_bytes()).hexdigest() == b.sha256
    hashed: list[str] = []
    real = dataset.sha256_of
    monkeypatch.setattr(dataset, "sha256_of", lambda path: hashed.append(path.name) or real(path))

    monkeypatch.setattr(dataset, "RACY_NS", 10**18)  # every file too fresh to remember: hashed each time
    data.verify_batches(directory, batches)
    data.verify_batches(directory, batches)
    assert len(hashed) == 6

    hashed.clear()
    monkeypatch.setattr(dataset, "RACY_NS", -(10**18))  # every file old enough to remember
    data.verify_batches(directory, batches)
    data.verify_batches(directory, batches)
    assert hashed == ["batch_1.parquet", "batch_2.parquet", "batch_3.parquet"]

    hashed.clear()
    shutil.copy(directory / "batch_3.parquet", tmp_path / "copy")  # the same bytes as another file
    (tmp_path / "copy").replace(directory / "batch_3.parquet")
    data.verify_batches(directory, batches)
    assert hashed == ["batch_3.parquet"]  # a new inode is checked again, and passes

    truncate(directory / "batch_2.parquet")
    with pytest.raises(BadInput, match=r"batch 2 \(.*batch_2.parquet\) does not match"):
        data.verify_batches(directory, batches)


def test_watch_refuses_a_tampered_batch(tmp_path: Path, store: str, btcflow) -> None:
    env = dataset_at(tmp_path, SIZES, store)
    change_one_byte(tmp_path / "data" / "batch" / "batch_2.parquet")
    args = ["--model", "close", "--watch", "--scheme", "cumulative", "--idle-timeout", "5", "--poll", "0.1"]
    line = one_line(btcflow("train", *args, env=env))
    assert "batch 2 (" in line and "does not match its manifest sha256" in line


@pytest.mark.parametrize(
    ("scheme", "then"), [("segment", "skipped"), ("cumulative", "waiting for the next batch")]
)
def test_watch_skips_or_waits_on_a_short_batch(
    scheme: str, then: str, tmp_path: Path, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unattended loop does not die on a short tail: segment skips it, cumulative waits; said once."""
    settings = settings_for(dataset_at(tmp_path, [5], store))
    with caplog.at_level(logging.WARNING, logger="training"):
        assert watch(settings, ["close"], scheme, idle_timeout=0.3, poll=0.05) == []  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records if "holds 5 rows" in r.getMessage()]
    assert said == [
        f"batch 1 (batch_1.parquet) holds 5 rows; close needs at least 10 "
        f"(a time split with rows to fit and rows to test): {then}"
    ]


def test_the_gate_refuses_a_tampered_window_batch(tmp_path: Path, store: str, btcflow) -> None:
    """`promote --best` reads held-out batches: they are verified before Spark starts, like training's."""
    from mlflow import MlflowClient

    from training.tracking import connect

    env = dataset_at(tmp_path, SIZES, store)
    connect(settings_for(env))
    client = MlflowClient()
    client.create_registered_model("btc-close")  # no btcflow.scheme tag: the watch tests do not see it
    first = data.read_manifest(tmp_path / "data" / "batch")[0]
    client.create_model_version(
        "btc-close", source="file:///nowhere", tags={"btcflow.train_max_ts": repr(first.max_ts)}
    )
    truncate(tmp_path / "data" / "batch" / "batch_3.parquet")
    line = one_line(btcflow("promote", "--model", "close", "--best", env=env))
    assert "batch 3 (" in line and "does not match its manifest sha256" in line
    (tmp_path / "data" / "batch" / "manifest.json").unlink()
    shutil.rmtree(tmp_path / "data" / "batch" / "_commits")
    assert "no manifest at" in one_line(btcflow("promote", "--model", "close", "--best", env=env))
