"""Ageing served features: move a feature row computed at its cutoff forward to a later time.

Only what depends on the passage of time alone can be aged: the `ages=True` features grow by
the elapsed days, and the `AGE_DEPENDENT` ones are recomputed from them. Windowed counts
(events leaving a window) cannot be aged without the events; recompute those when it matters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.time import to_utc
from features.journeys.assemble import journey_stage
from features.journeys.definitions import aging_features

DAY_SECONDS = 86_400.0


def age_features(features: pd.DataFrame, as_of: object) -> pd.DataFrame:
    """A copy of `features` (rows with a `cutoff` column) as of the later time `as_of`.

    Rows whose cutoff is after `as_of` are left as they are. The `cutoff` column becomes
    `as_of` for aged rows, so an aged row reads like a row computed at `as_of` without new events.
    """
    when = to_utc(as_of)  # type: ignore[arg-type]
    out = features.copy()
    cutoff = pd.to_datetime(out["cutoff"], utc=True)
    elapsed = ((when - cutoff).dt.total_seconds() / DAY_SECONDS).clip(lower=0.0).to_numpy()
    for name in aging_features():
        if name in out:
            out[name] = out[name].to_numpy(dtype=np.float64) + elapsed
    if {"orders_lifetime", "tenure_days"} <= set(out.columns) and "orders_per_30d" in out:
        out["orders_per_30d"] = out["orders_lifetime"] * 30.0 / np.maximum(out["tenure_days"], 30.0)
    if {"days_since_last_purchase", "interpurchase_days_mean"} <= set(out.columns) and "purchase_recency_ratio" in out:
        mean = out["interpurchase_days_mean"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["purchase_recency_ratio"] = np.where(mean > 0, out["days_since_last_purchase"] / mean, np.nan)
    stage_inputs = {
        "journey_stage", "orders_lifetime", "days_since_last_activity", "days_since_last_purchase",
        "interpurchase_days_mean", "cancelled_since_last_purchase",
    }  # fmt: skip
    if stage_inputs <= set(out.columns):
        # A prospect's intent window cannot be aged without events: prospects keep their stage.
        out["journey_stage"] = journey_stage(
            out["orders_lifetime"].to_numpy(dtype=np.float64),
            (out["journey_stage"] == "consideration").to_numpy(),
            out["days_since_last_activity"].to_numpy(dtype=np.float64),
            out["days_since_last_purchase"].to_numpy(dtype=np.float64),
            out["interpurchase_days_mean"].to_numpy(dtype=np.float64),
            out["cancelled_since_last_purchase"].to_numpy(dtype=np.float64),
        )
    out["cutoff"] = np.where(elapsed > 0, when, cutoff)
    out["cutoff"] = pd.to_datetime(out["cutoff"], utc=True).astype("datetime64[us, UTC]")
    return out


def age_arrays(
    matrix: np.ndarray, names: list[str], stage: np.ndarray, elapsed_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`age_features` on arrays, for the online hot path: (numeric matrix, stage) moved forward.

    `matrix` holds the numeric features `names` (one row per customer, aged in place on a
    copy), `stage` the stored stages, `elapsed_days` the days since each row's cutoff (>= 0).
    The same rules as age_features; one pandas-free pass for a handful of customers.
    """
    out = np.array(matrix, dtype=np.float64, copy=True)
    col = {name: i for i, name in enumerate(names)}
    elapsed = np.clip(np.asarray(elapsed_days, dtype=np.float64), 0.0, None)
    idx = [col[name] for name in aging_features() if name in col]
    if idx:
        out[:, idx] += elapsed[:, None]
    if {"orders_lifetime", "tenure_days", "orders_per_30d"} <= col.keys():
        out[:, col["orders_per_30d"]] = (
            out[:, col["orders_lifetime"]] * 30.0 / np.maximum(out[:, col["tenure_days"]], 30.0)
        )
    if {"days_since_last_purchase", "interpurchase_days_mean", "purchase_recency_ratio"} <= col.keys():
        mean = out[:, col["interpurchase_days_mean"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, col["purchase_recency_ratio"]] = np.where(
                mean > 0, out[:, col["days_since_last_purchase"]] / mean, np.nan
            )
    needed = {
        "orders_lifetime",
        "days_since_last_activity",
        "days_since_last_purchase",
        "interpurchase_days_mean",
        "cancelled_since_last_purchase",
    }
    stage = np.asarray(stage, dtype=object)
    if needed <= col.keys():
        stage = journey_stage(
            out[:, col["orders_lifetime"]],
            stage == "consideration",
            out[:, col["days_since_last_activity"]],
            out[:, col["days_since_last_purchase"]],
            out[:, col["interpurchase_days_mean"]],
            out[:, col["cancelled_since_last_purchase"]],
        )
    return out, stage
