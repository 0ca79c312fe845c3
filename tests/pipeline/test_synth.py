"""The generated Kaggle-shaped file: shape, invariants, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.rows import RowChecker
from pipeline.synth import CHUNK_ROWS, HEADER, START_TS, synth


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    rows = CHUNK_ROWS + 1000  # crosses a chunk boundary
    synth(rows, tmp_path / "a.csv", seed=7)
    synth(rows, tmp_path / "b.csv", seed=7)
    synth(rows, tmp_path / "c.csv", seed=8)
    assert digest(tmp_path / "a.csv") == digest(tmp_path / "b.csv")
    assert digest(tmp_path / "a.csv") != digest(tmp_path / "c.csv")


def test_kaggle_shape_and_invariants(tmp_path: Path) -> None:
    out = tmp_path / "btc.csv"
    synth(CHUNK_ROWS + 20_000, out, seed=1)
    with out.open("rb") as f:
        assert f.readline() == (HEADER + "\n").encode()
        first = f.readline()
    assert first.startswith(f"{START_TS}.0,4.58,".encode())

    df = pd.read_csv(out)
    assert list(df.columns) == HEADER.split(",")
    assert len(df) == CHUNK_ROWS + 20_000
    assert (df.dtypes == np.float64).all()
    assert (df.High >= df[["Open", "Close"]].max(axis=1)).all()
    assert (df.Low <= df[["Open", "Close"]].min(axis=1)).all()
    assert (df[["Open", "High", "Low", "Close", "Volume"]] >= 0).all().all()

    steps = np.diff(df.Timestamp.to_numpy())
    assert steps.min() == 60 and (steps % 60 == 0).all()
    assert 0 < (steps > 60).mean() < 0.01  # occasional missing minutes

    flat = (df.Volume == 0) & (df.Open == df.Close) & (df.High == df.Low)
    assert 0.1 < flat.mean() < 0.5  # zero-volume flat minutes
    assert (df.Volume[df.Volume > 0].quantile(0.999) / df.Volume[df.Volume > 0].median()) > 20  # heavy tail

    # volatility clusters: absolute returns a day apart are still correlated
    returns = np.abs(np.diff(np.log(df.Close.to_numpy())))
    assert np.corrcoef(returns[:-1440], returns[1440:])[0, 1] > 0.03


def test_every_generated_row_passes_validation(tmp_path: Path) -> None:
    out = tmp_path / "btc.csv"
    synth(50_000, out, seed=3)
    checker = RowChecker()
    with out.open("rb") as f:
        f.readline()
        results = [checker.check(line) for line in f]
    assert len(results) == 50_000
    assert not [r for r in results if isinstance(r, str)]


def test_zero_rows_is_a_header(tmp_path: Path) -> None:
    synth(0, tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text() == HEADER + "\n"
