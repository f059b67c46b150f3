from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.labels import LabelSpec, SpecError, hazard_rows, labels, load_spec

T = pd.Timestamp("2024-06-01", tz="UTC")


def ev(cid: str, days: float, etype: str = "purchase", value: float | None = None) -> dict:
    return {"customer_id": cid, "event_time": T + pd.Timedelta(days=days), "event_type": etype, "value": value}


@pytest.fixture
def tiny() -> pd.DataFrame:
    # a: bought 10 days before T and again 20 days after; b: bought 400 days before T only, browses;
    # c: never bought, browsed 5 days before T, buys 25 days after T; d: buys exactly at T, refunds after.
    return pd.DataFrame(
        [
            ev("a", -10, value=50.0),
            ev("a", 20, value=30.0),
            ev("a", 100, value=99.0),
            ev("b", -400, value=10.0),
            ev("b", -3, "page_view"),
            ev("c", -5, "product_view"),
            ev("c", 25, value=70.0),
            ev("d", 0, value=20.0),
            ev("d", 90, "refund", 5.0),
            ev("e", 10, "page_view"),  # first seen after T: not in any population at T
        ]
    )


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("customer_id")


def test_churn_population_and_label(tiny: pd.DataFrame) -> None:
    out = by_id(labels(tiny, load_spec("churn"), [T]))
    # b's purchase is older than 365 days; c never bought; e is not known yet
    assert sorted(out.index) == ["a", "d"]
    assert out.loc["a", "label"] == 0  # buys again within 90 days
    assert out.loc["d", "label"] == 1  # a purchase exactly at T is in the past; a refund is not a purchase
    assert out["complete"].all()


def test_conversion_prospects(tiny: pd.DataFrame) -> None:
    out = by_id(labels(tiny, load_spec("conversion"), [T]))
    assert list(out.index) == ["c"]  # b bought before; e not seen yet
    assert out.loc["c", "label"] == 1  # first purchase 25 days after T, within 30


def test_next_purchase_horizons_and_timing(tiny: pd.DataFrame) -> None:
    out = by_id(labels(tiny, load_spec("next_purchase"), [T]))
    assert sorted(out.index) == ["a", "b", "d"]  # any purchase ever up to T
    assert (out.loc["a", ["label_7d", "label_30d", "label_90d"]].tolist()) == [0, 1, 1]
    assert out.loc["a", "event_days"] == pytest.approx(20.0)
    assert np.isnan(out.loc["b", "event_days"])
    # observed until the latest event (T + 100 days)
    assert out.loc["b", "followup_days"] == pytest.approx(100.0)


def test_clv_net_revenue(tiny: pd.DataFrame) -> None:
    out = by_id(labels(tiny, load_spec("clv"), [T], observed_until=T + pd.Timedelta(days=400)))
    assert out.loc["a", "label_90d"] == pytest.approx(30.0)  # the T+100 order is outside 90 days
    assert out.loc["a", "label_365d"] == pytest.approx(129.0)
    assert out.loc["d", "label_90d"] == pytest.approx(-5.0)  # refund exactly at T + 90 counts in the horizon
    assert out["complete_365d"].all()


def test_incomplete_horizon_is_flagged(tiny: pd.DataFrame) -> None:
    out = labels(tiny, load_spec("churn"), [T], observed_until=T + pd.Timedelta(days=30))
    assert not out["complete"].any()


def test_customers_table_adds_known_customers(tiny: pd.DataFrame) -> None:
    customers = pd.DataFrame({"customer_id": ["z"], "first_seen": [T - pd.Timedelta(days=1)]})
    spec = dataclasses.replace(
        load_spec("conversion"), population=dataclasses.replace(load_spec("conversion").population, active_days=None)
    )
    out = labels(tiny, spec, [T], customers=customers)
    assert "z" in set(out["customer_id"])


def test_business_initiated_events_do_not_make_a_prospect_active() -> None:
    events = pd.DataFrame([ev("m", -5, "email_sent"), ev("n", -5, "page_view")])
    out = labels(events, load_spec("conversion"), [T], observed_until=T + pd.Timedelta(days=60))
    assert list(out["customer_id"]) == ["n"]


def test_spec_hash_ignores_comments_and_tracks_content(tmp_path) -> None:
    base = load_spec("churn")
    text = "# a comment\n" + base.to_yaml()
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    assert load_spec(path).hash == base.hash
    path.write_text(base.to_yaml().replace("horizon_days: 90", "horizon_days: 60"))
    assert load_spec(path).hash != base.hash


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"extra": 1}, "unknown keys"),
        ({"kind": "ranking"}, "kind must be"),
        ({"horizon_days": -3}, "positive"),
        ({"label": {"kind": "maybe"}}, "label.kind"),
    ],
)
def test_bad_specs_are_refused(bad: dict, message: str) -> None:
    raw = {**load_spec("churn").raw, **bad}
    with pytest.raises(SpecError, match=message):
        LabelSpec.from_dict(raw)


def test_missing_spec_file() -> None:
    with pytest.raises(SpecError, match="no label spec"):
        load_spec("nonexistent_task")


def test_hazard_rows_use_only_observed_periods() -> None:
    frame = pd.DataFrame({"event_days": [3.0, np.nan, 40.0], "followup_days": [365.0, 20.0, 365.0]})
    rows = hazard_rows(frame, [7, 14, 30, 60])
    # row 0: event in period 0; row 1: censored at 20 -> periods 0, 1 (14 <= 20), not 2; row 2: event in period 3
    assert rows[rows["row"] == 0][["period", "event"]].values.tolist() == [[0, 1]]
    assert rows[rows["row"] == 1]["period"].tolist() == [0, 1]
    assert rows[rows["row"] == 2][["period", "event"]].values.tolist() == [[0, 0], [1, 0], [2, 0], [3, 1]]


event_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(min_value=-500, max_value=200, allow_nan=False),
        st.sampled_from(["purchase", "page_view", "refund", "email_sent"]),
        st.floats(min_value=0, max_value=100, allow_nan=False),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_rows, later=event_rows, task=st.sampled_from(["churn", "next_purchase", "conversion", "clv"]))
def test_events_after_the_horizon_change_nothing(rows, later, task) -> None:
    """Labels use events in (T, T + H] only and eligibility events <= T only: adding events after
    T + H (of any customer, known or new) changes no eligible row and no complete label."""
    spec = load_spec(task)
    h = spec.max_followup_days
    base = pd.DataFrame([ev(c, d, t, v) for c, d, t, v in rows])
    extra = pd.DataFrame([ev(c if i % 2 else c + "_new", h + 1 + abs(d), t, v) for i, (c, d, t, v) in enumerate(later)])
    end = T + pd.Timedelta(days=h)
    before = labels(base, spec, [T], observed_until=end)
    after = labels(pd.concat([base, extra], ignore_index=True), spec, [T], observed_until=end)
    pd.testing.assert_frame_equal(before, after)
