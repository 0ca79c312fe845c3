"""A generated Kaggle-shaped Bitcoin minute file: the demo, tests and benchmark need data of any size.

The shape follows `btcusd_1-min_data.csv`: header `Timestamp,Open,High,Low,Close,Volume`, Timestamp as
float seconds written `1325412060.0` from 2012-01-01, one row per minute with occasional missing
minutes, prices with two decimals, volumes with up to eight. Minute returns are fat-tailed with
stochastic volatility (a persistent AR(1) log-volatility, so calm and wild stretches cluster as under
GARCH); many minutes are flat with zero volume, as in the early years of the real file.

What real minutes have beside that, each part switchable (`Shape`, `btcflow data synth --no-eras` …):
- **eras**: the price follows the real file's bull and bear markets, from $4.58 in 2012 through the
  2013, 2017, 2021 and 2024 tops and the bottoms between them to six figures in 2025 (ERA_TURNS: the
  level at each turn, moved by up to a few tens of percent per seed), growing or falling geometrically
  between turns, with a swing of weeks around that path; volatility and the share of untraded
  minutes change by era. A 7,000,000-row file spans 2012 to 2025. Without eras the path is a slow
  exponential trend (about x2 a year) with a mean-reverting swing of years;
- **bad prints**: minutes with a print far off the market (a Low at a few cents, a High several
  times the price, or a whole minute at such a price), as the early exchanges printed them; the next
  minute opens where the market is;
- **long gaps**: hours to days without a row (an exchange down), beside the missing single minutes;
- **volume shifts**: the volume's level steps up or down where the real file changes exchange.

Everything is vectorized per chunk of rows, with the filters' states carried from one chunk to the next,
so 7,000,000 rows take seconds and memory stays that of one chunk. The random draws depend only on the
seed and the chunk size (a constant), so one seed gives the same bytes; every draw is made whatever the
shape, so a file without bad prints differs from its seed's default only in the minutes they hit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.signal import lfilter

from core.errors import BadInput
from pipeline.defaults import BAD_PRINT_RATE, LONG_GAP_RATE

log = logging.getLogger("pipeline")

HEADER = "Timestamp,Open,High,Low,Close,Volume"
START_TS = 1325412060  # the first row of the real Kaggle file: 2012-01-01 10:01 UTC
START_PRICE = 4.58  # its first price (the default: `start_price` moves the whole path to another level)
CHUNK_ROWS = 500_000  # fixed: the byte stream depends on it

GAP_PROBABILITY = 0.002  # a minute missing after this share of rows
VOL_PHI = 0.9995  # log-volatility persistence: volatility clusters over days
VOL_OF_VOL = 0.02
BASE_LOG_VOL = np.log(0.0012)  # a typical minute return of 0.12 %
FLAT_PROBABILITY = 0.25  # minutes with no trade: flat prices and zero volume (without eras)

# Without eras: a slow exponential trend and a swing of years around it.
TREND_PER_MINUTE = 1.3e-6  # about x2 a year
SWING_PHI = 1 - 1e-6  # slow mean-reverting swing: a memory of about two years

# With eras: the level at the real market's turns (UTC date, USD), geometric between them and flat after
# the last; each turn's level after the first moves by exp(N(0, ERA_JITTER)) per seed.
ERA_TURNS = (
    ("2012-01-01", 4.58),
    ("2012-12-31", 13.5),
    ("2013-04-10", 230.0),
    ("2013-07-05", 70.0),
    ("2013-12-04", 1_150.0),
    ("2015-01-14", 180.0),
    ("2015-08-31", 230.0),
    ("2016-12-31", 960.0),
    ("2017-12-17", 19_500.0),
    ("2018-12-15", 3_200.0),
    ("2019-06-26", 13_000.0),
    ("2019-12-17", 6_600.0),
    ("2020-03-13", 4_900.0),
    ("2020-10-01", 10_700.0),
    ("2021-04-14", 63_000.0),
    ("2021-07-20", 30_000.0),
    ("2021-11-10", 68_000.0),
    ("2022-11-21", 15_800.0),
    ("2023-10-15", 27_000.0),
    ("2024-03-14", 73_000.0),
    ("2024-08-05", 54_000.0),
    ("2024-12-17", 106_000.0),
    ("2025-04-08", 77_000.0),
    ("2025-10-06", 124_000.0),
)
ERA_JITTER = 0.2
ERA_SWING_PHI = 1 - 1 / 20_160  # the swing around the eras' path: a memory of about two weeks
# Volatility and the share of untraded minutes by era (linear between the dates, flat outside).
ERA_VOLATILITY = (
    ("2012-01-01", 1.0),
    ("2013-12-04", 1.6),
    ("2016-01-01", 0.9),
    ("2018-01-01", 1.4),
    ("2020-01-01", 0.9),
    ("2021-05-01", 1.2),
    ("2023-06-01", 0.6),
    ("2025-10-01", 0.5),
)
ERA_FLAT = (("2012-01-01", 0.45), ("2014-01-01", 0.25), ("2017-06-01", 0.08), ("2020-01-01", 0.02))

BAD_WHOLE_MINUTE = 0.3  # of those, the share where the whole minute printed there (else one wick)
# The volume's level from each date on (a change of exchange), moved by exp(N(0, ERA_JITTER)) per seed.
VOLUME_LEVELS = (
    ("2012-01-01", 1.0),
    ("2014-03-01", 0.4),
    ("2016-08-02", 1.6),
    ("2018-02-01", 0.6),
    ("2021-01-01", 0.25),
    ("2023-03-01", 0.08),
)


def _when(date: str) -> float:
    return datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()


def _curve(points: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([_when(d) for d, _ in points]), np.array([v for _, v in points])


@dataclass(frozen=True)
class Shape:
    """What the generated minutes have beside a price path with clustered volatility (module docstring)."""

    eras: bool = True  # the real file's bull and bear eras; else a slow exponential trend
    bad_prints: float = BAD_PRINT_RATE  # share of traded minutes printed far off the market (0: none)
    long_gaps: float = LONG_GAP_RATE  # share of rows followed by hours to days without a row (0: none)
    volume_shifts: bool = True  # the volume's level steps where the real file changes exchange


PLAIN = Shape(eras=False, bad_prints=0.0, long_gaps=0.0, volume_shifts=False)  # the generator before eras


@dataclass
class _State:
    """What one chunk hands the next so that the chunks join into one path, and the seed's eras."""

    ts: int = START_TS - 60
    swing: float = 0.0
    log_vol: float = 0.0
    minute: int = 0
    close: float = START_PRICE
    start_price: float = START_PRICE
    turn_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    turn_log: np.ndarray = field(default_factory=lambda: np.zeros(0))
    volume_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    volume_level: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _seed_eras(rng: np.random.Generator, state: _State) -> None:
    """The seed's own era levels and volume levels (drawn first, whatever the shape)."""
    state.turn_ts, levels = _curve(ERA_TURNS)
    jitter = np.concatenate(([0.0], rng.normal(0.0, ERA_JITTER, len(levels) - 1)))
    state.turn_log = np.log(levels / levels[0]) + jitter + np.log(state.start_price)
    state.volume_ts, volume = _curve(VOLUME_LEVELS)
    state.volume_level = volume * np.exp(rng.normal(0.0, ERA_JITTER, len(volume)))


def _ar1(innovations: np.ndarray, phi: float, last: float) -> np.ndarray:
    """x_t = phi * x_{t-1} + e_t, starting from `last`; lfilter runs it in C."""
    out, _ = lfilter([1.0], [1.0, -phi], innovations, zi=[phi * last])
    return out


def _chunk(rng: np.random.Generator, n: int, state: _State, shape: Shape) -> pa.Array:
    steps = 1 + (rng.random(n) < GAP_PROBABILITY) * rng.geometric(0.2, n)
    outage = np.exp(rng.uniform(np.log(60), np.log(3 * 1440), n)).astype(np.int64)
    steps += (rng.random(n) < shape.long_gaps) * outage
    ts = state.ts + 60 * np.cumsum(steps)

    log_vol = _ar1(rng.normal(0.0, VOL_OF_VOL, n), VOL_PHI, state.log_vol)
    sigma = np.exp(BASE_LOG_VOL + log_vol)
    if shape.eras:
        sigma *= np.interp(ts, *_curve(ERA_VOLATILITY))
    # Student-t shocks (4 degrees of freedom, unit variance): fat-tailed minute returns
    shocks = rng.standard_t(4, n) / np.sqrt(2.0) * sigma
    minutes = state.minute + np.cumsum(steps)
    if shape.eras:
        swing = _ar1(shocks, ERA_SWING_PHI, state.swing)
        path = np.exp(np.interp(ts, state.turn_ts, state.turn_log) + swing)
        flat_share = np.interp(ts, *_curve(ERA_FLAT))
    else:
        swing = _ar1(shocks, SWING_PHI, state.swing)
        path = np.exp(np.log(state.start_price) + TREND_PER_MINUTE * minutes + swing)
        flat_share = np.full(n, FLAT_PROBABILITY)

    traded = rng.random(n) >= flat_share
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
    if shape.volume_shifts:
        volume *= state.volume_level[np.searchsorted(state.volume_ts, ts, side="right") - 1]
    volume = np.where(traded, volume, 0.0)
    state.close = float(close[-1])  # the market's close: a bad print below does not carry to the next minute
    _bad_prints(rng, shape, traded, open_, high, low, close, volume)

    # rounding is monotone, so High >= max(Open, Close) and Low <= min(Open, Close) survive it
    prices = [np.round(x, 2) for x in (open_, high, low, close)]
    volume = np.round(volume, 8)

    state.ts, state.minute = int(ts[-1]), int(minutes[-1])
    state.swing, state.log_vol = float(swing[-1]), float(log_vol[-1])
    return _format(ts, prices, volume)


def _bad_prints(
    rng: np.random.Generator,
    shape: Shape,
    traded: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> None:
    """Prints far off the market, in place: a factor of 0.01-0.7 below or 1.4-5 above it."""
    n = len(traded)
    bad = (rng.random(n) < shape.bad_prints) & traded
    below = rng.random(n) < 0.5
    factor = np.where(below, np.exp(rng.uniform(np.log(0.01), np.log(0.7), n)), rng.uniform(1.4, 5.0, n))
    whole = rng.random(n) < BAD_WHOLE_MINUTE
    off = np.maximum(close * factor, 0.01)
    # one wick: the Low (or the High) reached the off price
    low[:] = np.where(bad & below, np.minimum(low, off), low)
    high[:] = np.where(bad & ~below, np.maximum(high, off), high)
    # the whole minute: open, high, low and close all printed there, on a small volume
    for column in (open_, high, low, close):
        column[:] = np.where(bad & whole, off, column)
    volume[:] = np.where(bad & whole, volume * 0.01, volume)


def _decimal(values: np.ndarray) -> pa.Array:
    """Shortest round-trip text, with `.0` added to whole numbers as the Kaggle file writes them."""
    text = pc.cast(pa.array(values), pa.string())
    return pc.if_else(pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", ""))


def _format(ts: np.ndarray, prices: list[np.ndarray], volume: np.ndarray) -> pa.Array:
    ts_text = pc.binary_join_element_wise(pc.cast(pa.array(ts), pa.string()), ".0", "")
    columns = [ts_text, *(_decimal(p) for p in prices), _decimal(volume)]
    return pc.binary_join_element_wise(*columns, ",")


def synth(
    rows: int, out: Path, seed: int = 0, start_price: float = START_PRICE, shape: Shape | None = None
) -> int:
    """Write `rows` Kaggle-shaped rows to `out` (header included); returns the rows written.

    `start_price` sets the level the path starts from: 4.58 as the real file in 2012, or e.g. 115,000
    for minutes like 2025's, where two-decimal prices no longer flatten the candles. `shape` says which
    of the real file's features the minutes have (all of them by default; PLAIN for none).
    """
    shape = shape or Shape()
    if rows < 0:
        raise BadInput(f"--rows must be 0 or more, not {rows}")
    if not start_price > 0:
        raise BadInput(f"--start-price must be above 0, not {start_price}")
    for name, rate in (("--bad-prints", shape.bad_prints), ("--long-gaps", shape.long_gaps)):
        if not 0 <= rate <= 1:
            raise BadInput(f"{name} must be a share between 0 and 1, not {rate}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    state = _State(close=start_price, start_price=start_price)
    _seed_eras(rng, state)
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as f:
        f.write(HEADER.encode() + b"\n")
        done = 0
        while done < rows:
            n = min(CHUNK_ROWS, rows - done)
            f.write(_join(_chunk(rng, n, state, shape)))
            done += n
    partial.replace(out)  # the file appears complete or not at all
    log.info("wrote %d rows to %s", rows, out)
    return rows


def _join(lines: pa.Array) -> bytes:
    """The chunk's lines as one block of bytes, each ended by a newline, without a Python loop over rows."""
    ended = pc.binary_join_element_wise(lines, "\n", "")
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int32, count=len(ended) + 1, offset=ended.offset * 4)
    return ended.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
