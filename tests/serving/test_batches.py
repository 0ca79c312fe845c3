"""Property of the three POST routes: for any list of valid rows, the answer has one prediction per row, in
row order, each equal to the GET answer for that row, from the same model version.

Equal means bit for bit, probability_up too: one row and a batch take the same exp (serving.stages.Logistic).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.app import create_app
from serving.models import SPECS, Gateway
from serving.schemas import TS_MAX, TS_MIN, VALUE_MAX
from serving.settings import ServingSettings
from tests.serving.conftest import Store

EXAMPLES = 30  # per route; each example is one POST and a GET per row


def number(low: float, high: float) -> st.SearchStrategy[float | int]:
    """Any JSON number in the range, integers included (5 is a price as much as 5.0)."""
    return st.one_of(
        st.floats(low, high, allow_nan=False, allow_infinity=False),
        st.integers(math.ceil(low), math.floor(high)),
    )


BOUNDS = {"timestamp": (TS_MIN, TS_MAX), "open": (0, VALUE_MAX), "close": (0, VALUE_MAX)}
BOUNDS["volume"] = BOUNDS["open"]


def rows(kind: str, frame: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Rows anywhere the schema admits, and as often within the training data's ranges, where the
    models' answers are not all at their extremes (a probability of exactly 0 or 1, say)."""
    fields = {}
    for field, column_name in SPECS[kind].inputs.items():
        column = frame[column_name]
        fields[field] = st.one_of(number(*BOUNDS[field]), number(float(column.min()), float(column.max())))
    return st.fixed_dictionaries(fields)


def test_a_batch_answers_each_row_as_its_get_does_in_row_order(store: Store) -> None:
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config)
    gateway.refresh()
    client = TestClient(create_app(config, gateway))

    @given(data=st.data())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(kind: str, data: st.DataObject) -> None:
        batch = data.draw(st.lists(rows(kind, store.template.frame), min_size=1, max_size=8), label="rows")
        posted = client.post(f"/predict/{kind}", json={"rows": batch})
        assert posted.status_code == 200, posted.text
        body = posted.json()
        assert len(body["predictions"]) == len(batch)
        for row, prediction in zip(batch, body["predictions"], strict=True):
            single = client.get(f"/predict/{kind}", params=row)
            assert single.status_code == 200, single.text
            answer = single.json()
            assert answer.pop("model") == body["model"]
            assert prediction == answer, row

    for kind in SPECS:
        check(kind)
