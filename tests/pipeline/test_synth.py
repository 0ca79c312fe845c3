"""The generated Kaggle-shaped file: shape, invariants, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BadInput
from pipeline.rows import RowChecker
from pipeline.synth import CHUNK_ROWS, HEADER, PLAIN, START_TS, Shape, synth


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

    # volatility clusters: absolute returns a day apart still correlate (by rank: bad prints are outliers)
    returns = pd.Series(np.abs(np.diff(np.log(df.Close.to_numpy()))))
    assert (
        returns[:-1440].reset_index(drop=True).corr(returns[1440:].reset_index(drop=True), "spearman") > 0.03
    )


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


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """7M rows, as many minutes as the real file holds: 2012 to 2025 (about 20 s)."""
    out = tmp_path_factory.mktemp("synth") / "long.csv"
    synth(7_000_000, out, seed=0)
    df = pd.read_csv(out, engine="pyarrow")
    df["year"] = pd.to_datetime(df.Timestamp, unit="s").dt.year
    return df


def test_a_long_file_walks_the_real_eras_from_4_dollars_to_six_figures(long_file: pd.DataFrame) -> None:
    df = long_file
    assert df.year.iloc[0] == 2012 and df.year.iloc[-1] == 2025
    yearly = df.groupby("year").Close.median()
    assert yearly[2012] < 20 and 50_000 < df.Close.iloc[-1] < 300_000  # geometric growth over the file
    # regime changes: the bear markets after the 2013, 2017 and 2021 tops
    for top, bottom in ((2013, 2015), (2017, 2018), (2021, 2022)):
        assert df[df.year == top].Close.max() > 3 * df[df.year == bottom].Close.quantile(0.05)
    # volatility and untraded minutes change by era
    flat = (df.Volume == 0).groupby(df.year).mean()
    assert flat[2012] > 0.3 and flat[2022] < 0.05
    # a change of exchange: the volume's level steps down by far more than the price explains
    volume = df.Volume[df.Volume > 0].groupby(df.year).median()
    assert volume[2017] > 5 * volume[2023]


def test_a_long_file_has_bad_prints_and_outages(long_file: pd.DataFrame) -> None:
    df = long_file
    gaps = np.diff(df.Timestamp.to_numpy())
    assert 20 < (gaps >= 3600).sum() < 200 and gaps.max() <= 4 * 86400  # outages of hours to days
    market = df.Close.rolling(61, center=True, min_periods=1).median()
    far_below, far_above = df.Low < 0.7 * market, df.High > 1.4 * market
    assert 100 < (far_below | far_above).sum() < 1_000  # ~5e-5 of the traded minutes
    assert (df.Low > 0).all()  # a print at cents is still a price
    assert (df.High >= df[["Open", "Close"]].max(axis=1)).all()
    assert (df.Low <= df[["Open", "Close"]].min(axis=1)).all()


def test_each_part_of_the_shape_switches_off(tmp_path: Path) -> None:
    rows = 600_000
    paths = {}
    for name, shape in {
        "all": Shape(),
        "no_bad": Shape(bad_prints=0.0),
        "plain": PLAIN,
    }.items():
        paths[name] = tmp_path / f"{name}.csv"
        synth(rows, paths[name], seed=5, shape=shape)
    full, clean, plain = (pd.read_csv(paths[n], engine="pyarrow") for n in ("all", "no_bad", "plain"))
    differ = (full != clean).any(axis=1)
    assert 0 < differ.sum() < 100  # only the bad prints' minutes
    assert (full.Timestamp == clean.Timestamp).all()
    assert ((clean.Low / clean.Close) > 0.9).all()  # no print far off the market once switched off
    steps = np.diff(plain.Timestamp.to_numpy())
    assert steps.max() < 3600  # no outage without long gaps
    with pytest.raises(BadInput, match="--bad-prints"):
        synth(10, tmp_path / "bad.csv", shape=Shape(bad_prints=2.0))
