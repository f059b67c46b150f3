"""A straightforward pandas implementation of a subset of the journey features.

Independent of the engine's SQL and numpy assembly: one boolean mask and one groupby per
feature, written from the definitions' wording. Used by the benchmark (as the "plain pandas"
reference) and by the tests (as an oracle on random events).

The subset: every feature whose recipe only involves event counts and `value` sums over a
window (counts, amounts, rates, means, differences, trends), plus the recency features
(days since last/first purchase, last activity, last contact) and tenure without a customers
table. Sessions, carts, active days, purchase-day intervals, channel shares, last values and
the journey stage are not covered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.journeys.definitions import (
    ACTIVITY_TYPES,
    FEATURES,
    WINDOW_BUCKETS,
    Difference,
    Ratio,
    Trend,
    Windowed,
)

_DAY = pd.Timedelta(days=1)
_WINDOW_DAYS = {"7d": (0, 7), "30d": (0, 30), "prev30d": (30, 60), "90d": (0, 90), "365d": (0, 365)}
_RECENCY = {
    "days_since_last_purchase": (("purchase",), "max"),
    "days_since_first_purchase": (("purchase",), "min"),
    "days_since_last_activity": (ACTIVITY_TYPES, "max"),
    "days_since_last_contact": (("marketing_contact",), "max"),
}


def _event_recipe(recipe: object) -> bool:
    parts = {
        Windowed: lambda r: [r],
        Ratio: lambda r: [r.num, r.den],
        Difference: lambda r: [r.a, r.b],
        Trend: lambda r: [r.last, r.prev],
    }
    for kind, get in parts.items():
        if isinstance(recipe, kind):
            return all(w.part == "events" and w.window in WINDOW_BUCKETS for w in get(recipe))
    return False


def subset_features() -> list[str]:
    """Names of the features this reference computes."""
    names = [f.name for f in FEATURES if _event_recipe(f.recipe)]
    return names + list(_RECENCY) + ["tenure_days"]


def reference_features(events: pd.DataFrame, cutoff: pd.Timestamp, names: list[str] | None = None) -> pd.DataFrame:
    """The subset's features at one cutoff, one row per customer with an event at or before it.

    events: customer_id, event_time (tz-aware), event_type, value; names: only these features
    (default: the whole subset). Returns customer_id plus the features (float64), sorted by
    customer_id.
    """
    wanted = set(subset_features() if names is None else names)
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    seen = events[events["event_time"] <= cutoff]
    age = cutoff - seen["event_time"]
    customers = pd.Index(np.sort(seen["customer_id"].unique()), name="customer_id")
    out: dict[str, pd.Series] = {}

    def window_mask(window: str) -> pd.Series:
        if window == "lifetime":
            return pd.Series(True, index=seen.index)
        low, high = _WINDOW_DAYS[window]
        return (age >= low * _DAY) & (age < high * _DAY)

    def measure(w: Windowed) -> pd.Series:
        rows = seen[window_mask(w.window) & seen["event_type"].isin(w.kinds)]
        grouped = rows.groupby("customer_id")
        if w.measure == "n":
            result = grouped.size()
        elif w.measure == "value_sum":
            result = grouped["value"].sum()
        else:  # value_n
            result = grouped["value"].count()
        return result.reindex(customers, fill_value=0).astype(np.float64)

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den != 0)).astype(np.float64)

    for f in FEATURES:
        r = f.recipe
        if not _event_recipe(r) or f.name not in wanted:
            continue
        if isinstance(r, Windowed):
            out[f.name] = measure(r)
        elif isinstance(r, Ratio):
            out[f.name] = ratio(measure(r.num), measure(r.den)) * r.scale
        elif isinstance(r, Difference):
            out[f.name] = measure(r.a) - measure(r.b)
        elif isinstance(r, Trend):
            last, prev = measure(r.last), measure(r.prev)
            out[f.name] = ratio(last - prev, last + prev)
    for name, (kinds, how) in _RECENCY.items():
        if name not in wanted:
            continue
        times = seen[seen["event_type"].isin(kinds)].groupby("customer_id")["event_time"].agg(how)
        out[name] = ((cutoff - times) / _DAY).reindex(customers).astype(np.float64)
    if "tenure_days" in wanted:
        out["tenure_days"] = ((cutoff - seen.groupby("customer_id")["event_time"].min()) / _DAY).astype(np.float64)
    return pd.DataFrame(out, index=customers).reset_index()
