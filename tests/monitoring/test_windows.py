"""Pure logic of live scoring: rolling windows and their metrics, the truth join, verdicts, labels.

No broker, no registry: numpy arrays in, figures and lines out.
"""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.exporter import Exporter, reason_label
from monitoring.truth import Truth
from monitoring.verdicts import Judge
from monitoring.windows import RollingLog, live, metrics
from pipeline.messages import reason
from training.metrics import roc_auc
from training.specs import SPECS

T0 = 1_400_000_040.0  # a whole minute


def rows(closes: list[float], start: float = T0, step: float = 60.0) -> np.ndarray:
    """Kaggle rows (Timestamp, Open, High, Low, Close, Volume) with the given Closes, one a minute."""
    out = []
    for i, c in enumerate(closes):
        out.append([start + step * i, c - 0.5, c + 1.0, c - 1.0, c, 1.0])
    return np.array(out, dtype=np.float64)


def close_log(predicted: list[float], actual: list[float], baseline: list[float], first_minute: int = 0):
    log = RollingLog("regression", span=1440)
    minute = np.arange(first_minute, first_minute + len(actual))
    log.add(
        minute, {"actual": np.array(actual), "predicted": np.array(predicted), "baseline": np.array(baseline)}
    )
    return log


# -- rolling windows ---------------------------------------------------------------------------------------
def test_window_is_the_last_minutes_of_event_time_and_the_log_keeps_only_the_largest() -> None:
    log = RollingLog("regression", span=5)
    minute = np.arange(100, 110)
    log.add(minute, {"actual": minute * 1.0, "predicted": minute * 1.0 + 1, "baseline": minute * 1.0})
    assert log.newest == 109 and log.first == 100 and log.scored == 10
    assert log.minute.tolist() == [105, 106, 107, 108, 109]  # trimmed to the span
    assert log.window(3)["actual"].tolist() == [107.0, 108.0, 109.0]
    assert log.window(3, since=108)["actual"].tolist() == [108.0, 109.0]
    assert live(log, (3, 5)) == {
        3: metrics("regression", log.window(3)),
        5: metrics("regression", log.window(5)),
    }


def test_a_gap_in_minutes_shrinks_the_window_rather_than_reaching_further_back() -> None:
    log = RollingLog("regression", span=60)
    minute = np.array([0, 1, 2, 50, 51])
    log.add(minute, {c: np.ones(5) for c in ("actual", "predicted", "baseline")})
    assert len(log.window(10)["actual"]) == 2  # minutes 42..51 of event time: only 50 and 51 scored


def test_add_refuses_columns_of_another_kind() -> None:
    with pytest.raises(ValueError, match="regression keeps"):
        RollingLog("regression", 60).add(np.array([1]), {"label": np.array([1.0])})


def test_regression_metrics_and_baseline_on_the_same_minutes() -> None:
    figures = metrics(
        "regression",
        {
            "actual": np.array([1.0, 2.0, 3.0]),
            "predicted": np.array([2.0, 2.0, 2.0]),
            "baseline": np.array([1.0, 2.0, 5.0]),
        },
    )
    assert figures["minutes"] == 3
    assert figures["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert figures["baseline_rmse"] == pytest.approx(np.sqrt(4 / 3))


def test_high_low_rmse_is_the_mean_of_both_and_the_baseline_is_open() -> None:
    cols = {
        "high": np.array([11.0, 12.0]),
        "low": np.array([9.0, 8.0]),
        "predicted_high": np.array([11.0, 13.0]),
        "predicted_low": np.array([9.0, 8.0]),
        "open": np.array([10.0, 10.0]),
    }
    figures = metrics("high_low", cols)
    assert figures["rmse_high"] == pytest.approx(np.sqrt(0.5)) and figures["rmse_low"] == 0.0
    assert figures["rmse"] == pytest.approx(np.sqrt(0.5) / 2)
    assert figures["baseline_rmse_high"] == pytest.approx(np.sqrt((1 + 4) / 2))
    assert figures["baseline_rmse_low"] == pytest.approx(np.sqrt((1 + 4) / 2))


def test_classification_accuracy_auc_and_persistence_baseline() -> None:
    label = np.array([1.0, 0.0, 1.0, 0.0])
    cols = {
        "label": label,
        "predicted": np.array([1.0, 0.0, 0.0, 0.0]),
        "probability_up": np.array([0.9, 0.2, 0.4, 0.3]),
        "baseline": np.array([0.0, 1.0, 0.0, 1.0]),
    }
    figures = metrics("classification", cols)
    assert figures["accuracy"] == 0.75
    assert figures["roc_auc"] == roc_auc(label, cols["probability_up"]) == 1.0
    assert figures["baseline_accuracy"] == 0.0 and figures["baseline_roc_auc"] == 0.0


def test_an_empty_window_says_zero_minutes_only() -> None:
    assert metrics("classification", RollingLog("classification", 60).window(60)) == {"minutes": 0.0}


# -- the truth join ----------------------------------------------------------------------------------------
def test_close_needs_the_previous_minute_and_trend_the_next_across_polls() -> None:
    truth = Truth()
    data = rows([10.0, 11.0, 10.5, 12.0, 12.0])
    first = truth.take(data[:2][::-1])  # out of order inside a poll: sorted by Timestamp
    assert first.new == 2
    assert first.rows[:, 0].tolist() == [T0 + 60]  # the very first row has no previous minute
    assert first.previous_close.tolist() == [10.0]
    assert len(first.trend_rows) == 0  # row 1's next minute has not come yet
    second = truth.take(data[2:3])
    assert second.trend_rows[:, 0].tolist() == [T0 + 60]  # row 1 is scored now that row 2 came
    assert second.trend_label.tolist() == [0.0]  # 10.5 < 11
    assert second.trend_baseline.tolist() == [1.0]  # 11 > 10: it went up before
    third = truth.take(data[3:])
    assert third.rows[:, 0].tolist() == [T0 + 180, T0 + 240]
    assert third.previous_close.tolist() == [10.5, 12.0]
    assert third.trend_rows[:, 0].tolist() == [T0 + 120, T0 + 180]  # each minute's trend scored once
    assert third.trend_label.tolist() == [1.0, 0.0]  # 12 > 10.5; 12 is not above 12
    assert third.trend_baseline.tolist() == [0.0, 1.0]


def test_a_missing_minute_leaves_its_neighbours_without_baseline_or_label() -> None:
    data = rows([10.0, 11.0, 12.0, 13.0])
    data[2:, 0] += 60.0  # minute 2 never came
    ready = Truth().take(data)
    assert ready.rows[:, 0].tolist() == [T0 + 60, T0 + 240]
    assert len(ready.trend_rows) == 0  # minute 1 has no next, minute 3 no previous, minute 4 no next


# -- verdicts ----------------------------------------------------------------------------------------------
def test_a_challenger_beating_production_is_said_once_then_its_end_once() -> None:
    spec, judge = SPECS["close"], Judge(window=60, min_minutes=3)
    actual = [100.0, 101.0, 102.0]
    logs = {"1": close_log([90.0] * 3, actual, actual), "2": close_log(actual, actual, actual)}
    assert judge.judge(spec, "1", {"1": close_log([90.0] * 2, actual[:2], actual[:2])}) == []  # too few
    said = judge.judge(spec, "1", logs)
    beats = [v for v in said if v.challenger]
    assert [v.challenger for v in beats] == ["2"]
    assert beats[0].line.startswith("btc-close v2 beats Production v1 live: rmse 0 vs ")
    assert not [v for v in judge.judge(spec, "1", logs) if v.challenger]  # no news, no line
    logs["2"].add(
        np.array([3]), {"actual": np.array([0.0]), "predicted": np.array([1e6]), "baseline": np.array([0.0])}
    )
    logs["1"].add(
        np.array([3]), {"actual": np.array([0.0]), "predicted": np.array([0.0]), "baseline": np.array([0.0])}
    )
    assert not [v for v in judge.judge(spec, "1", logs) if "beats" in v.line]  # a flip must hold first
    for minute in range(4, 9):  # v2 stays worse: said once the flip has held for 5 minutes
        for version, predicted in (("1", 0.0), ("2", 1e6)):
            logs[version].add(
                np.array([minute]),
                {"actual": np.array([0.0]), "predicted": np.array([predicted]), "baseline": np.array([0.0])},
            )
        lines = [v.line for v in judge.judge(spec, "1", logs) if "beats" in v.line]
        assert bool(lines) == (minute == 8), minute
    assert lines[0].startswith("btc-close v2 no longer beats Production v1")


def test_a_flip_that_does_not_hold_is_never_said() -> None:
    judge = Judge(window=60, min_minutes=1, hold=5)
    assert judge._flipped(("k",), True, 0)  # a first judgement that holds is said at once
    assert not judge._flipped(("k",), False, 1)  # flips...
    assert not judge._flipped(("k",), True, 3)  # ...and back before 5 minutes: nothing said
    assert not judge._flipped(("k",), False, 4)
    assert not judge._flipped(("k",), False, 8)
    assert judge._flipped(("k",), False, 9)  # held from minute 4 to 9


def test_production_below_its_baseline_and_back() -> None:
    spec, judge = SPECS["close"], Judge(window=60, min_minutes=2, hold=0)
    logs = {"1": close_log([5.0, 5.0], [1.0, 1.0], [1.0, 1.0])}
    (line,) = [v.line for v in judge.judge(spec, "1", logs)]
    assert line.startswith("btc-close Production v1 is below its baseline live: rmse 4 vs 0 for the previous")
    assert judge.judge(spec, "1", logs) == []
    logs["1"] = close_log([1.0, 1.0], [1.0, 1.0], [3.0, 3.0])
    (line,) = [v.line for v in judge.judge(spec, "1", logs)]
    assert "Production v1 is back above its baseline" in line


def test_a_late_challenger_is_compared_on_the_minutes_it_scored() -> None:
    spec, judge = SPECS["close"], Judge(window=60, min_minutes=2)
    # Production was bad on minutes 0-9, then as good as the challenger, which came at minute 10
    champion = close_log([0.0] * 10 + [1.0] * 5, [1.0] * 15, [1.0] * 15)
    challenger = close_log([1.0] * 5, [1.0] * 5, [1.0] * 5, first_minute=10)
    said = judge.judge(spec, "1", {"1": champion, "2": challenger})
    assert not [v for v in said if v.challenger]  # equal on minutes 10-14: no "beats"


def test_higher_is_better_for_trend() -> None:
    spec, judge = SPECS["trend"], Judge(window=60, min_minutes=4)
    label = np.array([1.0, 0.0, 1.0, 0.0])

    def log(probability: list[float]) -> RollingLog:
        out = RollingLog("classification", 60)
        p = np.array(probability)
        out.add(
            np.arange(4),
            {"label": label, "predicted": (p > 0.5) * 1.0, "probability_up": p, "baseline": label},
        )
        return out

    said = judge.judge(spec, "1", {"1": log([0.4, 0.6, 0.4, 0.6]), "2": log([0.9, 0.1, 0.8, 0.2])})
    assert [v.challenger for v in said if v.challenger] == ["2"]
    assert "roc_auc 1 vs 0" in said[0].line


# -- Prometheus labels and page ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "label"),
    [
        (None, "tombstone"),
        (b"{", "not_json"),
        (b"[1]", "not_object"),
        (b'{"Timestamp": 1}', "missing_field"),
        (b'{"Timestamp":"x","Open":1,"High":1,"Low":1,"Close":1,"Volume":1}', "not_number"),
    ],
)
def test_bad_message_reasons_become_few_labels(value: bytes | None, label: str) -> None:
    why = reason(value)
    assert why is not None and reason_label(why) == label


def test_exporter_page_carries_live_figures_and_forgets_a_version() -> None:
    exporter = Exporter()
    exporter.publish("btc-close", "2", {60: {"rmse": 0.5, "baseline_rmse": 0.25, "minutes": 60.0}})
    exporter.bad_messages(["not JSON: x"])
    exporter.lineup([("btc-close", "2", "challenger")])
    page = exporter.text()
    assert 'btcflow_monitor_rmse{model="btc-close",version="2",window="60m"} 0.5' in page
    assert 'btcflow_monitor_bad_messages_total{reason="not_json"} 1.0' in page
    assert 'btcflow_monitor_version_info{model="btc-close",role="challenger",version="2"} 1.0' in page
    exporter.forget("btc-close", "2")
    assert 'btcflow_monitor_rmse{model="btc-close"' not in exporter.text()


# -- per-minute series (the live charts' points) ----------------------------------------------------------
def random_columns(kind: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "classification":
        label = (rng.random(n) > 0.5).astype(float)
        probability = rng.choice([0.2, 0.4, 0.5, 0.6, 0.8], n)  # a tree's few leaf values: many ties
        return {
            "label": label,
            "predicted": (probability > 0.5).astype(float),
            "probability_up": probability,
            "baseline": (rng.random(n) > 0.5).astype(float),
        }
    return {c: 100 + rng.normal(0, 1, n) for c in COLUMNS_OF[kind]}


COLUMNS_OF = {
    "regression": ("actual", "predicted", "baseline"),
    "high_low": ("high", "low", "predicted_high", "predicted_low", "open"),
}


@pytest.mark.parametrize("kind", ["regression", "high_low", "classification"])
def test_each_added_minute_gets_the_figures_of_its_own_window_as_metrics_computes_them(kind: str) -> None:
    """Polls of uneven size, a gap, a late minute and a whole poll bigger than the largest window: every
    minute's point equals `metrics` over (minute - W, minute] of everything added up to then."""
    rng = np.random.default_rng(3)
    minute = np.concatenate([np.arange(0, 40), np.arange(55, 300)])  # a gap of 15 minutes
    cols = random_columns(kind, len(minute), rng)
    log = RollingLog(kind, 60, series=(7, 60))  # type: ignore[arg-type]
    cuts = [0, 1, 2, 30, 31, 250, len(minute)]  # one-row polls and one of 219 rows (> the span)
    seen_minute = np.empty(0, dtype=np.int64)
    seen = {c: np.empty(0) for c in cols}
    for a, b in zip(cuts, cuts[1:], strict=False):
        part = slice(a, b)
        log.add(minute[part], {c: v[part] for c, v in cols.items()})
        seen_minute = np.concatenate([seen_minute, minute[part]])
        seen = {c: np.concatenate([seen[c], v[part]]) for c, v in cols.items()}
        (points,) = log.drain()
        assert points.minute.tolist() == sorted(set(minute[part].tolist()))
        for i, t in enumerate(points.minute.tolist()):
            for w, figures in points.figures.items():
                keep = (seen_minute > t - w) & (seen_minute <= t)
                expected = metrics(kind, {c: v[keep] for c, v in seen.items()})  # type: ignore[arg-type]
                assert {k: v[i] for k, v in figures.items()} == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert log.drain() == []
    assert log.minute.tolist() == list(range(240, 300))  # trimmed to the span after the series


def test_a_late_minute_is_sorted_in_and_charted_over_its_own_window() -> None:
    log = RollingLog("regression", 10, series=(3,))
    ones = {c: np.ones(3) for c in ("actual", "predicted", "baseline")}
    log.add(np.array([10, 11, 12]), ones)
    log.drain()
    log.add(np.array([9]), {"actual": np.zeros(1), "predicted": np.full(1, 2.0), "baseline": np.zeros(1)})
    assert log.minute.tolist() == [9, 10, 11, 12]
    (points,) = log.drain()
    assert points.minute.tolist() == [9]
    assert points.figures[3]["rmse"].tolist() == [2.0] and points.figures[3]["minutes"].tolist() == [1.0]
