"""A generated Kaggle-shaped Bitcoin minute file: the demo, tests and benchmark need data of any size.

The shape follows `btcusd_1-min_data.csv`: header `Timestamp,Open,High,Low,Close,Volume`, Timestamp as
float seconds written `1325412060.0` from 2012-01-01, one row per minute with occasional missing
minutes, prices with two decimals, volumes with up to eight. The price path is a log-price with a slow
exponential trend, a very slow mean-reverting swing (bull and bear years) and stochastic volatility (a
persistent AR(1) log-volatility, so calm and wild stretches cluster as under GARCH). Many minutes are flat
with zero volume, as in the early years of the real file.

Everything is vectorized per chunk of rows, with the filters' states carried from one chunk to the next,
so 7,000,000 rows take seconds and memory stays that of one chunk. The random draws depend only on the
seed and the chunk size (a constant), so one seed gives the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.signal import lfilter

from core.errors import BadInput

log = logging.getLogger("pipeline")

HEADER = "Timestamp,Open,High,Low,Close,Volume"
START_TS = 1325412060  # the first row of the real Kaggle file: 2012-01-01 10:01 UTC
START_PRICE = 4.58  # its first price (the default: `start_price` moves the whole path to another level)
CHUNK_ROWS = 500_000  # fixed: the byte stream depends on it

GAP_PROBABILITY = 0.002  # a minute missing after this share of rows
TREND_PER_MINUTE = 1.3e-6  # about x4 a year, Bitcoin's long-run growth in the real file
SWING_PHI = 1 - 1e-6  # slow mean-reverting swing: a memory of about two years
VOL_PHI = 0.9995  # log-volatility persistence: volatility clusters over days
VOL_OF_VOL = 0.02
BASE_LOG_VOL = np.log(0.0012)  # a typical minute return of 0.12 %
FLAT_PROBABILITY = 0.25  # minutes with no trade: flat prices and zero volume


@dataclass
class _State:
    """What one chunk hands the next so that the chunks join into one path."""

    ts: int = START_TS - 60
    swing: float = 0.0
    log_vol: float = 0.0
    minute: int = 0
    close: float = START_PRICE
    start_price: float = START_PRICE


def _ar1(innovations: np.ndarray, phi: float, last: float) -> np.ndarray:
    """x_t = phi * x_{t-1} + e_t, starting from `last`; lfilter runs it in C."""
    out, _ = lfilter([1.0], [1.0, -phi], innovations, zi=[phi * last])
    return out


def _chunk(rng: np.random.Generator, n: int, state: _State) -> pa.Array:
    steps = 1 + (rng.random(n) < GAP_PROBABILITY) * rng.geometric(0.2, n)
    ts = state.ts + 60 * np.cumsum(steps)

    log_vol = _ar1(rng.normal(0.0, VOL_OF_VOL, n), VOL_PHI, state.log_vol)
    sigma = np.exp(BASE_LOG_VOL + log_vol)
    # Student-t shocks (4 degrees of freedom, unit variance): fat-tailed minute returns
    shocks = rng.standard_t(4, n) / np.sqrt(2.0) * sigma
    swing = _ar1(shocks, SWING_PHI, state.swing)
    minutes = state.minute + np.cumsum(steps)
    path = np.exp(np.log(state.start_price) + TREND_PER_MINUTE * minutes + swing)

    traded = rng.random(n) >= FLAT_PROBABILITY
    # a flat minute repeats the last traded close: forward-fill the path over untraded minutes
    last_traded = np.maximum.accumulate(np.where(traded, np.arange(n), -1))
    close = np.where(last_traded >= 0, path[np.maximum(last_traded, 0)], state.close)
    open_ = np.concatenate(([state.close], close[:-1]))
    wick = np.abs(rng.normal(0.0, 0.5, (2, n))) * sigma * traded
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    # heavy-tailed volume (Pareto with a lognormal scale) that follows activity, as in the real file: a
    # minute trades more when its candle is wider, and wide candles cluster with the volatility
    activity = (np.abs(close / open_ - 1) + wick[0] + wick[1]) / np.exp(BASE_LOG_VOL)
    volume = rng.lognormal(0.0, 0.7, n) * (1 + rng.pareto(4.0, n)) * (0.1 + activity)
    volume = np.where(traded, volume, 0.0)

    # rounding is monotone, so High >= max(Open, Close) and Low <= min(Open, Close) survive it
    prices = [np.round(x, 2) for x in (open_, high, low, close)]
    volume = np.round(volume, 8)

    state.ts, state.minute = int(ts[-1]), int(minutes[-1])
    state.swing, state.log_vol, state.close = float(swing[-1]), float(log_vol[-1]), float(close[-1])
    return _format(ts, prices, volume)


def _decimal(values: np.ndarray) -> pa.Array:
    """Shortest round-trip text, with `.0` added to whole numbers as the Kaggle file writes them."""
    text = pc.cast(pa.array(values), pa.string())
    return pc.if_else(pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", ""))


def _format(ts: np.ndarray, prices: list[np.ndarray], volume: np.ndarray) -> pa.Array:
    ts_text = pc.binary_join_element_wise(pc.cast(pa.array(ts), pa.string()), ".0", "")
    columns = [ts_text, *(_decimal(p) for p in prices), _decimal(volume)]
    return pc.binary_join_element_wise(*columns, ",")


def synth(rows: int, out: Path, seed: int = 0, start_price: float = START_PRICE) -> int:
    """Write `rows` Kaggle-shaped rows to `out` (header included); returns the rows written.

    `start_price` sets the level the path starts from: 4.58 as the real file in 2012, or e.g. 115,000
    for minutes like 2025's, where two-decimal prices no longer flatten the candles.
    """
    if rows < 0:
        raise BadInput(f"--rows must be 0 or more, not {rows}")
    if not start_price > 0:
        raise BadInput(f"--start-price must be above 0, not {start_price}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    state = _State(close=start_price, start_price=start_price)
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as f:
        f.write(HEADER.encode() + b"\n")
        done = 0
        while done < rows:
            n = min(CHUNK_ROWS, rows - done)
            f.write(_join(_chunk(rng, n, state)))
            done += n
    partial.replace(out)  # the file appears complete or not at all
    log.info("wrote %d rows to %s", rows, out)
    return rows


def _join(lines: pa.Array) -> bytes:
    """The chunk's lines as one block of bytes, each ended by a newline, without a Python loop over rows."""
    ended = pc.binary_join_element_wise(lines, "\n", "")
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int32, count=len(ended) + 1, offset=ended.offset * 4)
    return ended.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
