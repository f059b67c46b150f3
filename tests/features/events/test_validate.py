from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract import EVENT_TYPE_LIST
from features.events.validate import derive_event_ids, parse_times, validate

NOW = pd.Timestamp("2025-06-01", tz="UTC")


def frame(**cols: list) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame({**cols, "_row": list(range(1, n + 1))})


def test_each_bad_row_gets_its_reason() -> None:
    f = frame(
        customer_id=["a", None, "c", "d", "e", "f", "g", "h", "i"],
        event_time=[
            "2025-01-01T10:00:00Z",
            "2025-01-01",
            "nope",
            "1970-01-01",
            "2030-01-01",
            "2025-01-01",
            "2025-01-01",
            "2025-01-01",
            "2025-01-01",
        ],
        event_type=[
            "purchase",
            "page_view",
            "page_view",
            "page_view",
            "page_view",
            "teleport",
            "purchase",
            "nps_response",
            "page_view",
        ],
        value=["10.5", None, None, None, None, None, "-3", "11", "abc"],
    )
    accepted, rejects = validate(f, NOW)
    assert accepted["customer_id"].tolist() == ["a"]
    assert accepted["value"].tolist() == [10.5]
    assert accepted["channel"].tolist() == ["other"]
    assert dict(zip(rejects["_row"], rejects["reason"], strict=True)) == {
        2: "missing_customer_id",
        3: "bad_timestamp",
        4: "implausible_timestamp",
        5: "implausible_timestamp",
        6: "unknown_event_type",
        7: "negative_amount",
        8: "bad_nps",
        9: "bad_value",
    }


def test_event_ids_are_derived_stably_and_kept_when_given() -> None:
    f = frame(
        customer_id=["a", "a"],
        event_time=["2025-01-01T10:00:00Z"] * 2,
        event_type=["login", "login"],
        event_id=[None, "given-1"],
    )
    one, _ = validate(f, NOW)
    two, _ = validate(f, NOW)
    assert one["event_id"].tolist() == two["event_id"].tolist()
    assert one["event_id"][0].startswith("d-") and one["event_id"][1] == "given-1"


def test_properties_must_be_a_json_object() -> None:
    f = frame(
        customer_id=["a", "b", "c"],
        event_time=["2025-01-01"] * 3,
        event_type=["marketing_contact"] * 3,
        properties=['{"action": "win_back_offer"}', "[1, 2]", "{oops"],
    )
    accepted, rejects = validate(f, NOW)
    assert accepted["properties"].tolist() == ['{"action": "win_back_offer"}']
    assert rejects["reason"].tolist() == ["bad_properties", "bad_properties"]


def test_times_are_stored_as_utc_microseconds() -> None:
    ts = parse_times(pd.Series(["2025-03-01T12:00:00+02:00", "2025-07-01 12:00"]), timezone="Europe/London")
    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert ts.tolist() == [pd.Timestamp("2025-03-01T10:00Z"), pd.Timestamp("2025-07-01T11:00Z")]
    assert parse_times(pd.Series([20250102]), "yyyymmdd")[0] == pd.Timestamp("2025-01-02", tz="UTC")
    assert parse_times(pd.Series([1735689600]), "epoch_s")[0] == pd.Timestamp("2025-01-01", tz="UTC")


def test_derived_ids_depend_on_content() -> None:
    f, _ = validate(frame(customer_id=["a", "b"], event_time=["2025-01-01"] * 2, event_type=["login"] * 2), NOW)
    assert derive_event_ids(f).nunique() == 2


anything = st.one_of(st.none(), st.text(max_size=12), st.integers(-(10**6), 10**12), st.floats(allow_nan=True))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "customer_id": anything,
                "event_time": st.one_of(anything, st.datetimes().map(lambda d: d.isoformat())),
                "event_type": st.one_of(anything, st.sampled_from(EVENT_TYPE_LIST)),
                "channel": anything,
                "value": anything,
                "properties": st.one_of(st.none(), st.text(max_size=10), st.just('{"a": 1}')),
            }
        ),
        max_size=25,
    )
)
def test_every_row_is_accepted_or_rejected_exactly_once(rows: list[dict]) -> None:
    f = pd.DataFrame(rows, columns=["customer_id", "event_time", "event_type", "channel", "value", "properties"])
    f["_row"] = range(len(f))
    accepted, rejects = validate(f, NOW)
    assert len(accepted) + len(rejects) == len(f)
    assert set(accepted["_row"]).isdisjoint(rejects["_row"])
    assert accepted["event_time"].isna().sum() == 0
    assert rejects["reason"].notna().all()
