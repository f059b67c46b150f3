"""Journey features: hand-computed values per stage, leakage, many cutoffs, catalog, real data, Spark parity."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.pandas_reference import reference_features, subset_features
from core.contract import CHANNELS, EVENT_SCHEMA, EVENT_TYPE_LIST
from core.time import to_utc
from features.journeys import (
    FEATURES,
    age_features,
    aging_features,
    categorical_features,
    compute_features,
    feature_names,
    numeric_features,
)
from features.journeys.assemble import journey_stage
from features.journeys.catalog import catalog_markdown
from features.journeys.definitions import FEATURE_STAGES, JOURNEY_STAGES, WINDOW_DAYS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
T = pd.Timestamp("2024-03-01", tz="UTC")
COLUMNS = ["customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties"]


def events(rows: list[tuple]) -> pd.DataFrame:
    """(customer, time, type, channel, session, value, action) tuples -> a contract frame."""
    out = []
    for customer, when, kind, channel, session, value, action in rows:
        props = json.dumps({"action": action}) if action else None
        out.append((customer, to_utc(when), kind, channel, session, value, props))
    frame = pd.DataFrame(out, columns=COLUMNS)
    frame["event_time"] = frame["event_time"].astype("datetime64[us, UTC]")
    frame["value"] = frame["value"].astype(float)
    return frame


# Three customers: a repeat buyer (web/app), a prospect seeing ads and contacts, a one-time buyer whose
# refund exceeds the order. Every expected number below is worked out by hand at T = 2024-03-01 00:00 UTC.
HAND = events([
    ("a", "2024-01-05 12:00", "nps_response", "email", None, 6, None),
    ("a", "2024-01-10 09:00", "purchase", "store", None, 50, None),
    ("a", "2024-02-20 10:00", "session_start", "web", "s1", None, None),
    ("a", "2024-02-20 10:05", "product_view", "web", "s1", None, None),
    ("a", "2024-02-20 10:20", "page_view", "web", "s1", 120, None),
    ("a", "2024-02-20 23:30", "add_to_cart", "web", "s2", None, None),  # bought across midnight
    ("a", "2024-02-21 00:15", "purchase", "web", "s2", 100, None),
    ("a", "2024-02-25 12:00", "refund", "support", None, 30, None),
    ("a", "2024-02-27 09:00", "nps_response", "email", None, 8, None),
    ("a", "2024-02-28 08:00", "add_to_cart", "app", "s3", None, None),  # abandoned, resolved 02-29 08:00
    ("a", "2024-02-28 08:01", "bounce", "app", "s3", None, None),
    ("a", "2024-02-29 12:00", "email_sent", "email", None, None, None),
    ("a", "2024-02-29 13:00", "email_open", "email", None, None, None),
    ("b", "2024-02-10 00:00", "ad_impression", "ads", None, None, None),
    ("b", "2024-02-11 09:00", "ad_impression", "ads", None, None, None),
    ("b", "2024-02-11 09:01", "ad_click", "ads", None, None, None),
    ("b", "2024-02-11 09:02", "landing_page_view", "web", "s9", None, None),
    ("b", "2024-02-11 09:05", "search", "web", "s9", None, None),
    ("b", "2024-02-25 10:00", "marketing_contact", "email", None, None, "discount_10"),
    ("b", "2024-02-26 12:00", "marketing_contact", "email", None, None, "winback"),
    ("c", "2023-10-01 00:00", "purchase", "web", None, 40, None),
    ("c", "2023-10-05 00:00", "refund", "support", None, 60, None),  # refund larger than the order
    ("c", "2024-02-15 00:00", "login", "app", None, None, None),
])  # fmt: skip

NAN = float("nan")
EXPECTED = {
    "a": {
        # awareness
        "sessions_7d": 1, "sessions_30d": 3, "sessions_365d": 3, "bounce_rate_30d": 1 / 3,
        "session_minutes_mean_30d": (20 + 45 + 1) / 3, "page_seconds_mean_30d": 120.0, "emails_sent_30d": 1,
        "email_opens_7d": 1, "email_open_rate_30d": 1.0, "email_ctr_30d": 0.0, "ad_ctr_30d": NAN,
        # consideration
        "product_views_7d": 0, "product_views_30d": 1, "page_views_30d": 1, "active_days_7d": 4,
        "active_days_30d": 6, "active_days_lifetime": 8, "searches_30d": 0,
        # purchase
        "cart_adds_7d": 1, "cart_adds_30d": 2, "cart_abandonment_rate_30d": 0.5,
        "session_conversion_rate_30d": 1 / 3, "orders_7d": 0, "orders_30d": 1, "orders_90d": 2,
        "orders_lifetime": 2, "revenue_30d": 100.0, "revenue_90d": 150.0, "aov_90d": 75.0, "aov_lifetime": 75.0,
        "refunds_90d": 1, "refund_amount_90d": 30.0, "refund_rate_365d": 0.2, "net_revenue_365d": 120.0,
        # retention
        "days_since_last_purchase": 8 + 23.75 / 24, "days_since_first_purchase": 50.625,
        "days_since_last_activity": 11 / 24, "tenure_days": 55.5, "purchase_days_lifetime": 2,
        "interpurchase_days_mean": 42.0, "interpurchase_days_std": NAN,
        "purchase_recency_ratio": (8 + 23.75 / 24) / 42, "repeat_purchaser": 1, "orders_per_30d": 60 / 55.5,
        "nps_last": 8.0, "nps_mean_lifetime": 7.0, "nps_responses_lifetime": 2, "cancelled_since_last_purchase": 0,
        # channel mix and trends
        "activity_events_7d": 5, "activity_events_30d": 10, "activity_events_90d": 12,
        "channel_share_web_90d": 5 / 12, "channel_share_app_90d": 2 / 12, "channel_share_email_90d": 3 / 12,
        "channel_share_store_90d": 1 / 12, "channel_share_support_90d": 1 / 12, "channel_share_ads_90d": 0.0,
        "channels_used_90d": 5, "activity_trend_30d": 8 / 12, "orders_trend_30d": 0.0, "revenue_trend_30d": 1 / 3,
        "email_opens_trend_30d": 1.0, "sessions_trend_30d": 1.0,
        # contact history and stage
        "contacts_30d": 0, "days_since_last_contact": NAN, "last_contact_action": None, "journey_stage": "repeat",
    },
    "b": {
        "ad_impressions_30d": 2, "ad_clicks_30d": 1, "ad_ctr_30d": 0.5, "landing_page_views_30d": 1,
        "sessions_30d": 1, "session_minutes_mean_30d": 3.0, "bounce_rate_30d": 0.0, "email_open_rate_30d": NAN,
        "searches_7d": 0, "searches_30d": 1, "active_days_30d": 1, "product_views_30d": 0,
        "orders_lifetime": 0, "revenue_lifetime": 0.0, "aov_lifetime": NAN, "refund_rate_lifetime": NAN,
        "cart_abandonment_rate_30d": NAN, "session_conversion_rate_30d": 0.0,
        "days_since_last_purchase": NAN, "days_since_first_purchase": NAN, "interpurchase_days_mean": NAN,
        "purchase_recency_ratio": NAN, "repeat_purchaser": 0, "purchase_days_lifetime": 0, "nps_last": NAN,
        "days_since_last_activity": 18 + (14 * 60 + 55) / 1440, "tenure_days": 20.0,
        "activity_events_30d": 3, "channel_share_ads_90d": 1 / 3, "channel_share_web_90d": 2 / 3,
        "channels_used_90d": 2, "activity_trend_30d": 1.0, "orders_trend_30d": NAN,
        "contacts_7d": 2, "contacts_30d": 2, "days_since_last_contact": 3.5, "last_contact_action": "winback",
        "journey_stage": "consideration",
    },
    "c": {
        "orders_lifetime": 1, "orders_90d": 0, "revenue_lifetime": 40.0, "revenue_365d": 40.0, "aov_90d": NAN,
        "aov_lifetime": 40.0, "refunds_lifetime": 1, "refund_amount_lifetime": 60.0, "refund_rate_lifetime": 1.5,
        "refund_rate_365d": 1.5, "net_revenue_lifetime": -20.0, "net_revenue_365d": -20.0,
        "days_since_last_purchase": 152.0, "days_since_first_purchase": 152.0, "interpurchase_days_mean": NAN,
        "interpurchase_days_std": NAN, "purchase_recency_ratio": NAN, "repeat_purchaser": 0,
        "purchase_days_lifetime": 1, "orders_per_30d": 30 / 152, "days_since_last_activity": 15.0,
        "tenure_days": 152.0, "logins_30d": 1, "active_days_lifetime": 3, "sessions_365d": 0,
        "bounce_rate_90d": NAN, "channel_share_app_90d": 1.0, "activity_events_90d": 1,
        "journey_stage": "lapsing", "last_contact_action": None,
    },
}  # fmt: skip


def check(frame: pd.DataFrame, expected: dict[str, dict[str, object]]) -> None:
    rows = frame.set_index("customer_id")
    for customer, values in expected.items():
        for name, want in values.items():
            got = rows.loc[customer, name]
            if want is None or isinstance(want, str):
                assert got == want, f"{customer}.{name}: {got!r} != {want!r}"
            elif np.isnan(want):  # type: ignore[arg-type]
                assert np.isnan(got), f"{customer}.{name}: {got!r} != NaN"
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{customer}.{name}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def hand_features() -> pd.DataFrame:
    return compute_features(HAND, T)


# --- the registry and the output shape ---------------------------------------------------------


def test_registry_is_complete_and_consistent():
    names = feature_names()
    assert len(names) == len(set(names)) and 100 <= len(names) <= 150
    assert {f.stage for f in FEATURES} == set(FEATURE_STAGES)
    assert set(numeric_features()) | set(categorical_features()) == set(names)
    assert categorical_features() == ["last_contact_action", "journey_stage"]
    assert set(aging_features()) == {
        "days_since_last_purchase", "days_since_first_purchase", "days_since_last_activity", "tenure_days",
        "days_since_last_contact",
    }  # fmt: skip
    windows = set(WINDOW_DAYS) | {"at cutoff", "last 30d vs days 30-60"}
    assert all(f.window in windows and f.unit and f.definition for f in FEATURES)


def test_output_columns_order_and_types(hand_features):
    assert list(hand_features.columns) == ["customer_id", "cutoff", *feature_names()]
    assert str(hand_features["cutoff"].dtype) == "datetime64[us, UTC]"
    assert all(hand_features[n].dtype == np.float64 for n in numeric_features())
    assert list(hand_features["customer_id"]) == ["a", "b", "c"]
    assert set(hand_features["journey_stage"]) <= set(JOURNEY_STAGES)


# --- hand-computed values, every stage ----------------------------------------------------------


def test_hand_computed_values_at_cutoff(hand_features):
    check(hand_features, EXPECTED)


def test_cart_across_midnight_and_session_state_as_of_each_cutoff():
    before_purchase = pd.Timestamp("2024-02-21 00:00", tz="UTC")  # the add at 23:30 is not resolved yet
    after_resolution = pd.Timestamp("2024-02-22 00:00", tz="UTC")  # resolved at 02-21 23:30, bought at 00:15
    frame = compute_features(HAND, [after_resolution, before_purchase], customer_ids=["a"])
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["cutoff"] == before_purchase and second["cutoff"] == after_resolution
    assert first["cart_adds_30d"] == 1 and np.isnan(first["cart_abandonment_rate_30d"])
    assert first["orders_lifetime"] == 1 and first["journey_stage"] == "first_purchase"
    assert first["days_since_last_purchase"] == pytest.approx(41.625)
    assert first["sessions_30d"] == 2 and first["session_conversion_rate_30d"] == 0.0
    assert first["session_minutes_mean_30d"] == pytest.approx(10.0)  # s1 20 min, s2 only its add so far
    assert second["cart_abandonment_rate_30d"] == 0.0
    assert second["session_conversion_rate_30d"] == 0.5 and second["orders_lifetime"] == 2


def test_window_ends_are_half_open():
    frame = events([
        ("x", "2024-02-23 00:00", "product_view", "web", None, None, None),  # exactly 7 days before T: out
        ("x", "2024-02-23 00:00:00.000001", "search", "web", None, None, None),  # 1 us later: in
        ("x", "2024-03-01 00:00", "page_view", "web", None, 5, None),  # exactly at T: in
        ("x", "2024-03-01 00:00:00.000001", "purchase", "web", None, 9, None),  # after T: never seen
    ])  # fmt: skip
    row = compute_features(frame, T).iloc[0]
    assert row["product_views_7d"] == 0 and row["product_views_30d"] == 1
    assert row["searches_7d"] == 1 and row["page_views_7d"] == 1 and row["orders_lifetime"] == 0
    assert row["days_since_last_activity"] == 0.0


def test_journey_stage_rules():
    frame = events([
        ("churned_idle", "2023-06-01", "purchase", "web", None, 10, None),
        ("churned_cancel", "2024-02-01", "purchase", "web", None, 10, None),
        ("churned_cancel", "2024-02-10", "subscription_cancel", "web", None, None, None),
        ("aware_mail", "2024-02-01", "email_sent", "email", None, None, None),
        ("aware_old_intent", "2023-10-01", "product_view", "web", None, None, None),
        ("repeat", "2024-02-01", "purchase", "web", None, 10, None),
        ("repeat", "2024-02-11", "purchase", "web", None, 10, None),
        ("lapsing_repeat", "2024-01-01", "purchase", "web", None, 10, None),
        ("lapsing_repeat", "2024-01-06", "purchase", "web", None, 10, None),
        ("first", "2024-02-20", "purchase", "web", None, 10, None),
    ])  # fmt: skip
    rows = compute_features(frame, T).set_index("customer_id")
    assert rows["journey_stage"].to_dict() == {
        "aware_mail": "awareness", "aware_old_intent": "awareness", "churned_cancel": "churned",
        "churned_idle": "churned", "first": "first_purchase", "lapsing_repeat": "lapsing", "repeat": "repeat",
    }  # fmt: skip
    assert rows.loc["churned_cancel", "cancelled_since_last_purchase"] == 1.0
    assert np.isnan(rows.loc["aware_mail", "days_since_last_activity"])


def test_journey_stage_thresholds():
    nan = np.nan
    stage = journey_stage(
        orders=np.array([2, 2, 1, 1, 3, 0]),
        intent=np.array([False, False, False, False, False, True]),
        days_since_last_activity=np.array([1, 1, 1, 181, 1, 5]),
        days_since_last_purchase=np.array([30.0, 30.1, 90.0, 200, 366, nan]),
        interpurchase_days_mean=np.array([10, 10, nan, nan, 400, nan]),
        cancelled_since_last_purchase=np.zeros(6),
    )
    assert list(stage) == ["repeat", "lapsing", "first_purchase", "churned", "churned", "consideration"]


def test_customers_table_sets_tenure_from_first_seen_not_after_cutoff():
    customers = pd.DataFrame({
        "customer_id": ["a", "c"],
        "first_seen": pd.to_datetime(["2023-12-01", "2024-06-01"], utc=True),  # c's is after T: ignored
        "country": ["UK", "FR"], "segment": ["x", "y"], "acquisition_channel": ["web", "ads"],
    })  # fmt: skip
    rows = compute_features(HAND, T, customers=customers).set_index("customer_id")
    assert rows.loc["a", "tenure_days"] == 91.0
    assert rows.loc["c", "tenure_days"] == 152.0 and rows.loc["b", "tenure_days"] == 20.0


def test_inputs_are_not_modified_and_population_rules():
    frame = HAND.copy()
    compute_features(frame, [T, "2024-02-11"])
    pd.testing.assert_frame_equal(frame, HAND)
    early = compute_features(HAND, "2023-09-30")
    assert early.empty and list(early.columns) == ["customer_id", "cutoff", *feature_names()]
    only = compute_features(HAND, T, customer_ids=["c", "zzz"])
    assert list(only["customer_id"]) == ["c"]
    on_feb_11 = compute_features(HAND, "2024-02-11 09:00")
    assert list(on_feb_11["customer_id"]) == ["a", "b", "c"]  # b's first event is 02-10


def test_parquet_store_and_arrow_input_match_the_frame(tmp_path, hand_features):
    for day, part in HAND.groupby(HAND["event_time"].dt.strftime("%Y-%m-%d")):
        folder = tmp_path / f"event_date={day}"
        folder.mkdir()
        part = part.assign(event_id=[f"e{i}" for i in part.index])
        table = pa.Table.from_pandas(part, schema=EVENT_SCHEMA, preserve_index=False)
        pq.write_table(table, folder / "part-0.parquet")
    from_store = compute_features(str(tmp_path / "event_date=*" / "*.parquet"), T)
    pd.testing.assert_frame_equal(from_store, hand_features, check_exact=False, rtol=1e-12)
    from_arrow = compute_features(pa.Table.from_pandas(HAND, preserve_index=False), T)
    pd.testing.assert_frame_equal(from_arrow, hand_features, check_exact=False, rtol=1e-12)


def test_age_features_shifts_and_recomputes(hand_features):
    later = age_features(hand_features, T + timedelta(days=100))
    a_now, a_later = hand_features.iloc[0], later.iloc[0]
    for name in aging_features():
        if np.isnan(a_now[name]):
            assert np.isnan(a_later[name])
        else:
            assert a_later[name] == pytest.approx(a_now[name] + 100)
    assert a_later["purchase_recency_ratio"] == pytest.approx((a_now["days_since_last_purchase"] + 100) / 42)
    assert a_later["journey_stage"] == "lapsing" and later.iloc[2]["journey_stage"] == "lapsing"
    assert later.iloc[1]["journey_stage"] == "consideration"  # prospects keep their stage
    much_later = age_features(hand_features, T + timedelta(days=250))
    assert list(much_later["journey_stage"]) == ["churned", "consideration", "churned"]
    assert (later["cutoff"] == T + timedelta(days=100)).all()
    assert hand_features.iloc[0]["journey_stage"] == "repeat"  # the input is untouched


def test_catalog_doc_is_current():
    doc = ROOT / "docs" / "features.md"
    assert doc.read_text(encoding="utf-8") == catalog_markdown(), (
        "docs/features.md is stale: python -m features.journeys.catalog --out docs/features.md"
    )


# --- properties: leakage, many cutoffs, an independent pandas oracle -----------------------------

BASE = pd.Timestamp("2024-01-01", tz="UTC")
SPAN_MINUTES = 400 * 24 * 60


@st.composite
def random_events(draw: st.DrawFn, min_size: int = 1, max_size: int = 40) -> pd.DataFrame:
    n = draw(st.integers(min_size, max_size))
    row = st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, SPAN_MINUTES),
        st.sampled_from(EVENT_TYPE_LIST),
        st.sampled_from(CHANNELS),
        st.sampled_from([None, "s1", "s2", "s3"]),
        st.one_of(st.none(), st.integers(0, 200).map(float)),
        st.sampled_from([None, "call", "email_offer"]),
    )
    rows = draw(st.lists(row, min_size=n, max_size=n))
    return events([(c, BASE + pd.Timedelta(minutes=m), k, ch, s, v, a) for c, m, k, ch, s, v, a in rows])


# few examples each: every example runs the engine several times, and the suite must stay fast
PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        left.reset_index(drop=True), right.reset_index(drop=True), check_exact=False, rtol=1e-9, atol=1e-9
    )


@PROPERTY
@given(past=random_events(), future=random_events(max_size=15), cut_minutes=st.integers(0, SPAN_MINUTES))
def test_events_after_the_cutoff_change_nothing(past, future, cut_minutes):
    cutoff = BASE + pd.Timedelta(minutes=cut_minutes)
    past = past[past["event_time"] <= cutoff]
    # future events share customers and sessions with the past ones, from 1 us after the cutoff
    future = future.assign(event_time=cutoff + pd.Timedelta(microseconds=1) + (future["event_time"] - BASE) / 10)
    assert_same(compute_features(pd.concat([past, future], ignore_index=True), cutoff), compute_features(past, cutoff))


@PROPERTY
@given(frame=random_events(), offsets=st.lists(st.integers(0, SPAN_MINUTES), min_size=2, max_size=3, unique=True))
def test_many_cutoffs_in_one_pass_equal_separate_runs(frame, offsets):
    cutoffs = [BASE + pd.Timedelta(minutes=m) for m in offsets]
    together = compute_features(frame, cutoffs)
    separate = [compute_features(frame, c) for c in sorted(cutoffs)]
    assert_same(together, pd.concat(separate, ignore_index=True))


@settings(PROPERTY, max_examples=12)
@given(frame=random_events(max_size=60), cut_minutes=st.integers(0, SPAN_MINUTES))
def test_engine_matches_a_plain_pandas_implementation(frame, cut_minutes):
    cutoff = BASE + pd.Timedelta(minutes=cut_minutes)
    names = subset_features()
    engine = compute_features(frame, cutoff)
    reference = reference_features(frame, cutoff)
    assert list(engine["customer_id"]) == list(reference["customer_id"])
    assert_same(engine[names], reference[names])


# --- real data: the UCI Online Retail transactions -----------------------------------------------


def online_retail_events() -> pd.DataFrame:
    """One purchase per invoice (sum of Quantity x UnitPrice), 'C' invoices as refunds, no anonymous rows."""
    path = DATA / "online_retail.parquet"
    if not path.exists():
        pytest.skip(f"{path} is absent: the Online Retail data lives in ../shared/data next to the project")
    raw = pd.read_parquet(path, columns=["InvoiceNo", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"])
    raw = raw.dropna(subset=["CustomerID"])
    raw = raw.assign(amount=raw["Quantity"] * raw["UnitPrice"], InvoiceNo=raw["InvoiceNo"].astype(str))
    invoices = raw.groupby("InvoiceNo").agg(
        customer_id=("CustomerID", "first"), event_time=("InvoiceDate", "min"), amount=("amount", "sum")
    )
    refund = invoices.index.str.startswith("C")
    return pd.DataFrame({
        "customer_id": invoices["customer_id"].astype("int64").astype(str).to_numpy(),
        "event_time": pd.to_datetime(invoices["event_time"]).dt.tz_localize("UTC").astype("datetime64[us, UTC]"),
        "event_type": np.where(refund, "refund", "purchase"),
        "channel": "web",
        "value": invoices["amount"].abs().to_numpy(),
    })  # fmt: skip


def test_online_retail_features_agree_with_pandas():
    retail = online_retail_events()
    cutoff = pd.Timestamp("2011-09-09", tz="UTC")
    frame = compute_features(retail, cutoff)
    seen = retail[retail["event_time"] <= cutoff]
    assert len(frame) == seen["customer_id"].nunique() > 3000
    assert list(frame.columns) == ["customer_id", "cutoff", *feature_names()]
    rows = frame.set_index("customer_id")
    buys = seen[seen["event_type"] == "purchase"]
    busiest = buys["customer_id"].value_counts().index[:3].tolist()
    for customer in [*busiest, "12347", "17850", *seen["customer_id"].iloc[::997].tolist()]:
        mine = buys[buys["customer_id"] == customer]
        assert rows.loc[customer, "orders_lifetime"] == len(mine)
        assert rows.loc[customer, "revenue_lifetime"] == pytest.approx(mine["value"].sum(), rel=1e-9)
        if len(mine):
            expected = (cutoff - mine["event_time"].max()) / pd.Timedelta(days=1)
            assert rows.loc[customer, "days_since_last_purchase"] == pytest.approx(expected, rel=1e-12)
        else:
            assert np.isnan(rows.loc[customer, "days_since_last_purchase"])
    assert rows["journey_stage"].isin(JOURNEY_STAGES).all()
    assert (rows["sessions_30d"] == 0).all() and rows["bounce_rate_30d"].isna().all()  # no sessions in the data


# --- Spark parity ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    try:
        from features.journeys.spark_engine import local_spark

        session = local_spark()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"pyspark could not start on CI: {exc}")
        pytest.skip(f"pyspark could not start (Java 17 and pyspark are needed): {exc}")
    yield session
    session.stop()


@pytest.mark.integration
def test_spark_and_duckdb_give_the_same_features(spark, tmp_path):
    cutoffs = [T, pd.Timestamp("2024-02-21", tz="UTC"), pd.Timestamp("2024-02-22", tz="UTC")]
    customers = pd.DataFrame({"customer_id": ["a"], "first_seen": pd.to_datetime(["2023-12-01"], utc=True)})
    duck = compute_features(HAND, cutoffs, customers=customers)
    sparked = compute_features(HAND, cutoffs, customers=customers, engine="spark", spark=spark)
    assert_same(sparked, duck)
    with_first_seen = {**EXPECTED, "a": {**EXPECTED["a"], "tenure_days": 91.0, "orders_per_30d": 60 / 91}}
    check(sparked[sparked["cutoff"] == T], with_first_seen)
    rng = np.random.default_rng(3)
    n = 400
    shuffled = events([
        (f"k{rng.integers(0, 12)}", BASE + pd.Timedelta(minutes=int(rng.integers(0, SPAN_MINUTES))),
         str(rng.choice(EVENT_TYPE_LIST)), str(rng.choice(CHANNELS)), rng.choice([None, "s1", "s2", "s3", "s4"]),
         None if rng.random() < 0.5 else float(rng.integers(0, 100)), rng.choice([None, "call", "sms"]))
        for _ in range(n)
    ])  # fmt: skip
    path = tmp_path / "events.parquet"
    shuffled.to_parquet(path)
    grid = [BASE + pd.Timedelta(days=d) for d in (30, 120, 250, 399)]
    assert_same(compute_features(str(path), grid, engine="spark", spark=spark), compute_features(str(path), grid))


@pytest.mark.integration
def test_spark_and_duckdb_agree_on_email_consent(spark, tmp_path):
    consent = events([
        ("a", "2024-02-01 10:00", "consent_change", "email", None, 1, None),
        ("a", "2024-02-25 10:00", "consent_change", "email", None, 0, None),
        ("b", "2024-02-01 10:00", "consent_change", "email", None, 1, None),
        ("b", "2024-02-01 10:00", "consent_change", "email", None, 0, None),  # same instant: the opt-out wins
        ("c", "2024-02-01 10:00", "consent_change", "app", None, 0, None),  # not email
    ])  # fmt: skip
    frame = pd.concat([HAND, consent], ignore_index=True)
    customers = pd.DataFrame({
        "customer_id": ["a", "c"],
        "first_seen": pd.to_datetime(["2023-12-01", "2023-12-01"], utc=True).astype("datetime64[us, UTC]"),
        "email_opt_in": [True, True],
    })  # fmt: skip
    path = tmp_path / "customers.parquet"
    customers.to_parquet(path)
    cutoffs = [pd.Timestamp("2024-02-20", tz="UTC"), T]
    duck = compute_features(frame, cutoffs, customers=path)
    assert_same(compute_features(frame, cutoffs, customers=path, engine="spark", spark=spark), duck)
    assert_same(compute_features(frame, cutoffs, customers=customers, engine="spark", spark=spark), duck)
    at_t = duck[duck["cutoff"] == T].set_index("customer_id")["email_opt_in"]
    assert at_t["a"] == 0.0 and at_t["b"] == 0.0 and at_t["c"] == 1.0
