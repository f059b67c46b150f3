"""Email consent end to end: consent_change events and the customers table -> the email_opt_in feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from core.contract import CUSTOMER_SCHEMA, EVENT_TYPE_STAGE, NOT_ACTIVITY
from features.events.ingest import ingest_customers
from features.events.validate import validate
from features.journeys import compute_features
from features.journeys.definitions import ACTIVITY_TYPES, FEATURES_BY_NAME

T = pd.Timestamp("2024-03-01", tz="UTC")


def frame(rows: list[tuple[str, str, str, str, float | None]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["customer_id", "event_time", "event_type", "channel", "value"])
    out["event_time"] = pd.to_datetime(out["event_time"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    out["value"] = out["value"].astype(float)
    return out


EVENTS = frame([
    ("in", "2024-01-01 10:00", "page_view", "web", None),
    ("in", "2024-01-02 10:00", "consent_change", "email", 1),
    ("out", "2024-01-01 10:00", "page_view", "web", None),
    ("out", "2024-01-02 10:00", "consent_change", "email", 1),
    ("out", "2024-02-01 10:00", "consent_change", "email", 0),  # the latest wins
    ("tie", "2024-01-01 10:00", "page_view", "web", None),
    ("tie", "2024-01-02 10:00", "consent_change", "email", 1),
    ("tie", "2024-01-02 10:00", "consent_change", "email", 0),  # same instant: the opt-out wins
    ("other", "2024-01-01 10:00", "page_view", "web", None),
    ("other", "2024-01-02 10:00", "consent_change", "app", 0),  # another channel's consent: not email
    ("none", "2024-01-01 10:00", "page_view", "web", None),
])  # fmt: skip


def opt_in(features: pd.DataFrame) -> dict[str, float]:
    return dict(zip(features["customer_id"], features["email_opt_in"], strict=True))


def test_contract_and_registry() -> None:
    assert EVENT_TYPE_STAGE["consent_change"] == "retention"
    assert "consent_change" in NOT_ACTIVITY and "consent_change" not in ACTIVITY_TYPES
    f = FEATURES_BY_NAME["email_opt_in"]
    assert f.kind == "numeric" and not f.ages


def test_latest_email_consent_event_at_or_before_the_cutoff() -> None:
    got = opt_in(compute_features(EVENTS, [T]))
    assert got["in"] == 1.0 and got["out"] == 0.0 and got["tie"] == 0.0
    assert np.isnan(got["other"]) and np.isnan(got["none"])


def test_consent_after_the_cutoff_changes_nothing() -> None:
    later = frame([
        ("in", "2024-03-01 00:00:01", "consent_change", "email", 0),  # an opt-out just after the cutoff
        ("none", "2024-04-01 00:00", "consent_change", "email", 0),
        ("out", "2024-05-01 00:00", "consent_change", "email", 1),
    ])  # fmt: skip
    before = compute_features(EVENTS, [T])
    after = compute_features(pd.concat([EVENTS, later], ignore_index=True), [T])
    pd.testing.assert_frame_equal(before, after)
    at_cutoff = frame([("in", "2024-03-01 00:00", "consent_change", "email", 0)])  # exactly at T: known
    assert opt_in(compute_features(pd.concat([EVENTS, at_cutoff], ignore_index=True), [T]))["in"] == 0.0
    # and at a later cutoff the later events count
    assert opt_in(compute_features(pd.concat([EVENTS, later], ignore_index=True), ["2024-06-01"]))["out"] == 1.0


def test_consent_events_are_not_activity() -> None:
    base = compute_features(EVENTS[EVENTS["event_type"] != "consent_change"], [T])
    full = compute_features(EVENTS, [T])
    for name in ("activity_events_90d", "days_since_last_activity", "active_days_30d", "channels_used_90d"):
        np.testing.assert_array_equal(base[name].to_numpy(), full[name].to_numpy(), err_msg=name)


def test_customers_table_is_the_fallback(tmp_path: Path) -> None:
    customers = pd.DataFrame({
        "customer_id": ["in", "out", "tie", "other", "none"],
        "first_seen": pd.to_datetime(["2023-12-01"] * 5, utc=True).astype("datetime64[us, UTC]"),
        "email_opt_in": [False, True, True, True, None],
    })  # fmt: skip
    expected = {"in": 1.0, "out": 0.0, "tie": 0.0, "other": 1.0}  # events win; "other" has no email event
    got = opt_in(compute_features(EVENTS, [T], customers=customers))
    assert {k: got[k] for k in expected} == expected and np.isnan(got["none"])
    path = tmp_path / "customers.parquet"
    customers.to_parquet(path)
    from_path = compute_features(EVENTS, [T], customers=path)
    pd.testing.assert_frame_equal(from_path, compute_features(EVENTS, [T], customers=customers))
    # a customers table without the column: unknown, as without a table
    without = compute_features(EVENTS, [T], customers=customers.drop(columns="email_opt_in"))
    pd.testing.assert_series_equal(without["email_opt_in"], compute_features(EVENTS, [T])["email_opt_in"])


def test_ingest_customers_reads_email_opt_in(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text("customer_id,first_seen,email_opt_in\na,2024-01-01,true\nb,2024-01-01,No\nc,,0\nd,,maybe\ne,,\n")
    target = tmp_path / "home" / "customers.parquet"
    ingest_customers(src, target)
    table = pq.read_table(target)
    assert table.schema.field("email_opt_in").type == "bool"
    assert dict(zip(table["customer_id"].to_pylist(), table["email_opt_in"].to_pylist(), strict=True)) == {
        "a": True, "b": False, "c": False, "d": None, "e": None,
    }  # fmt: skip
    # a later table without the column keeps the column (rows it replaces become unknown)
    other = tmp_path / "d.csv"
    other.write_text("customer_id,first_seen\nf,2024-01-01\n")
    ingest_customers(other, target)
    again = pq.read_table(target)
    assert again.num_rows == 6 and again.schema.field("email_opt_in").type == "bool"
    # a table that never had the column keeps the plain schema
    plain = tmp_path / "plain" / "customers.parquet"
    ingest_customers(other, plain)
    assert pq.read_schema(plain).equals(CUSTOMER_SCHEMA, check_metadata=False)


def test_validation_wants_zero_or_one() -> None:
    raw = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d"],
        "event_time": ["2025-01-01"] * 4,
        "event_type": ["consent_change"] * 4,
        "channel": ["email"] * 4,
        "value": ["1", "0", "2", None],
        "_row": [1, 2, 3, 4],
    })  # fmt: skip
    accepted, rejects = validate(raw, pd.Timestamp("2025-06-01", tz="UTC"))
    assert accepted["value"].tolist() == [1.0, 0.0]
    assert dict(zip(rejects["_row"], rejects["reason"], strict=True)) == {3: "bad_consent", 4: "bad_consent"}
