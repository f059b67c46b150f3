"""Validate raw rows against the event contract, vectorised.

`validate` never raises on bad data: every row comes back either accepted (in the
contract's schema) or rejected with exactly one reason (the first check it fails).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from core.contract import CHANNELS, EVENT_TYPE_STAGE

EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")
MAX_ID_LEN = 256

REASONS = (
    "missing_customer_id", "bad_customer_id", "missing_event_time", "bad_timestamp", "implausible_timestamp",
    "missing_event_type", "unknown_event_type", "dropped_by_mapping", "unknown_channel", "bad_value",
    "negative_amount", "bad_nps", "bad_properties", "bad_event_id", "bad_amount",
    "bad_consent",
)  # fmt: skip


def _as_text(series: pd.Series) -> pd.Series:
    """Strings, stripped; None for missing or blank. Ids read as numbers (17850.0) become '17850'."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        whole = np.isfinite(values) & (np.abs(values) < 2.0**62) & (np.mod(values, 1) == 0)
        text = pd.Series(np.where(whole, values, 0).astype(np.int64), index=series.index).astype(str)
        text = text.where(whole, series.astype(str))
        return text.where(series.notna(), None).astype(object)
    if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(str).where(series.notna(), None).astype(object)
    if series.dtype == object and len(series) and not series.map(type).isin([str, type(None)]).all():
        series = series.map(
            lambda v: format_id(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else None
        )
    text = series.astype("string[pyarrow]").str.strip()
    text = text.where(text.notna() & (text != ""), None)
    return text.astype(object).where(text.notna(), None)


def format_id(v: Any) -> str:
    """Ids read as numbers (17850.0) become '17850'."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def parse_times(series: pd.Series, fmt: str | None = None, timezone: str = "UTC") -> pd.Series:
    """Parse timestamps to datetime64[us, UTC]; NaT where unparseable. Naive values are in `timezone`."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _localise(pd.Series(series), timezone)
    raw = series.astype(object)
    if fmt in ("epoch_s", "epoch_ms"):
        num = pd.to_numeric(raw, errors="coerce")
        return pd.to_datetime(num, unit="s" if fmt == "epoch_s" else "ms", utc=True, errors="coerce").astype(
            "datetime64[us, UTC]"
        )
    text = raw.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else format_id(v))
    if fmt and fmt != "iso":
        return _localise(pd.to_datetime(text, format="%Y%m%d" if fmt == "yyyymmdd" else fmt, errors="coerce"), timezone)
    text = text.astype("string[pyarrow]")
    aware = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if aware.any():
        out[aware] = pd.to_datetime(text[aware], utc=True, errors="coerce", format="ISO8601")
    naive = ~aware & text.notna()
    if naive.any():
        parsed = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
        retry = parsed.isna()
        if retry.any():  # other common layouts, element by element
            parsed[retry] = pd.to_datetime(text[naive][retry], errors="coerce", format="mixed")
        out[naive] = _localise(parsed, timezone)
    return out


def _localise(ts: pd.Series, timezone: str) -> pd.Series:
    if getattr(ts.dt, "tz", None) is None:
        try:
            ts = ts.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
        except Exception as exc:  # unknown time zone name
            raise ValueError(f"unknown time zone {timezone!r}") from exc
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def derive_event_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id from the event's content, for rows that came without one."""
    parts = (
        frame["customer_id"].astype(str)
        + "|"
        + frame["event_time"].astype("int64").astype(str)
        + "|"
        + frame["event_type"].astype(str)
        + "|"
        + frame["channel"].astype(str)
        + "|"
        + frame["session_id"].astype(str)
        + "|"
        + frame["value"].astype(str)
        + "|"
        + frame["properties"].astype(str)
    )
    return parts.map(lambda s: "d-" + hashlib.blake2b(s.encode(), digest_size=12).hexdigest())


def _json_object(v: Any) -> str | None | float:
    """Serialised JSON object, None when absent, NaN when invalid."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            obj = json.loads(v)
        except ValueError:
            return np.nan
        return v if isinstance(obj, dict) else np.nan
    return np.nan


def _properties(series: pd.Series) -> pd.Series:
    """Validate the properties column: JSON object text (kept as given), None, or NaN when invalid.

    Strings are checked in bulk by DuckDB's JSON parser; other values (dicts from JSON Lines) one by one.
    """
    if series.isna().all():
        return pd.Series([None] * len(series), index=series.index, dtype=object)
    if series.dtype == object and not series[series.notna()].map(type).eq(str).all():
        return series.map(_json_object)
    import duckdb
    import pyarrow as pa

    text = pa.array(series.astype("string[pyarrow]").str.strip().replace("", None), type=pa.string())
    con = duckdb.connect()
    try:
        con.register("text_tbl", pa.table({"p": text}))
        flags = con.execute(
            "SELECT p IS NULL AS missing, CASE WHEN json_valid(p) THEN json_type(p::JSON) = 'OBJECT' ELSE false END "
            "AS ok FROM text_tbl"
        ).fetchnumpy()
    finally:
        con.close()
    out = pd.Series(text.to_pandas(), index=series.index, dtype=object)
    missing = np.asarray(flags["missing"], dtype=bool)
    good = np.asarray(pd.Series(flags["ok"]).fillna(False), dtype=bool)
    out[~missing & ~good] = np.nan
    out[missing] = None
    return out


def _lower(series: pd.Series) -> pd.Series:
    low = series.astype("string[pyarrow]").str.lower()
    return low.astype(object).where(low.notna(), None)


def validate(
    frame: pd.DataFrame, now: pd.Timestamp, *, time_format: str | None = None, timezone: str = "UTC"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw contract-named rows into (accepted events, rejects[_row, reason]).

    `now` bounds implausible timestamps: more than one day after it is rejected.
    Accepted rows keep `_row` for accounting and are in the contract's columns and types.
    """
    n = len(frame)
    reason = pd.Series([None] * n, index=frame.index, dtype=object)

    def flag(mask: pd.Series | np.ndarray, why: str) -> None:
        m = pd.Series(mask, index=frame.index).fillna(False).astype(bool) & reason.isna()
        reason[m] = why

    def col(name: str) -> pd.Series:
        return frame[name] if name in frame.columns else pd.Series([None] * n, index=frame.index, dtype=object)

    customer = _as_text(col("customer_id"))
    flag(customer.isna(), "missing_customer_id")
    flag(customer.astype("string[pyarrow]").str.len() > MAX_ID_LEN, "bad_customer_id")

    raw_time = col("event_time")
    flag(raw_time.isna(), "missing_event_time")
    event_time = parse_times(raw_time, time_format, timezone)
    flag(event_time.isna(), "bad_timestamp")
    latest = now + pd.Timedelta(days=1)
    flag((event_time < EARLIEST) | (event_time > latest), "implausible_timestamp")

    if "_dropped" in frame.columns:
        flag(frame["_dropped"], "dropped_by_mapping")
    etype = _lower(_as_text(col("event_type")))
    flag(etype.isna(), "missing_event_type")
    flag(~etype.isin(list(EVENT_TYPE_STAGE)), "unknown_event_type")

    channel = _lower(_as_text(col("channel"))).fillna("other")
    flag(~channel.isin(CHANNELS), "unknown_channel")

    raw_value = col("value")
    value = pd.to_numeric(raw_value, errors="coerce").astype("float64")
    flag(raw_value.notna() & value.isna(), "bad_value")
    flag(~np.isfinite(value.fillna(0.0)), "bad_value")
    flag(etype.isin(["purchase", "refund"]) & (value < 0), "negative_amount")
    flag((etype == "nps_response") & value.notna() & ((value < 0) | (value > 10)), "bad_nps")
    flag((etype == "consent_change") & ~value.isin([0.0, 1.0]), "bad_consent")  # 1 opt-in, 0 opt-out; never missing

    props = _properties(col("properties"))
    flag(props.map(lambda v: isinstance(v, float)) if props.notna().any() else props.notna(), "bad_properties")

    event_id = _as_text(col("event_id"))
    flag(event_id.astype("string[pyarrow]").str.len() > MAX_ID_LEN, "bad_event_id")
    session = _as_text(col("session_id"))

    ok = reason.isna()
    accepted = pd.DataFrame(
        {
            "event_id": event_id[ok],
            "customer_id": customer[ok],
            "event_time": event_time[ok],
            "event_type": etype[ok],
            "channel": channel[ok],
            "session_id": session[ok],
            "value": value[ok],
            "properties": props[ok].astype(object),
            "_row": frame["_row"][ok],
        }
    )
    missing = accepted["event_id"].isna()
    if missing.any():
        accepted.loc[missing, "event_id"] = derive_event_ids(accepted[missing])
    rejects = pd.DataFrame({"_row": frame["_row"][~ok], "reason": reason[~ok]})
    return accepted.reset_index(drop=True), rejects.reset_index(drop=True)
