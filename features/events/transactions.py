"""Fold transaction lines into order events: one purchase per order, cancellations as refunds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.events.validate import _as_text, parse_times


def fold_transactions(
    lines: pd.DataFrame, *, cancel_prefix: str | None, time_format: str | None, timezone: str, now: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn mapped transaction lines into contract rows (one per order) plus line rejects.

    Input columns: customer_id, event_time, optional channel/properties, `__order_id`,
    and either `__amount` or `__quantity` and `__unit_price`; `_row` numbers the lines.
    Output rows carry `_rows` (the source lines folded into each order) for accounting.
    An order whose total is negative, or whose id starts with `cancel_prefix`, becomes a
    refund of the absolute amount.
    """
    reason = pd.Series([None] * len(lines), index=lines.index, dtype=object)

    def flag(mask: pd.Series, why: str) -> None:
        m = mask.fillna(False).astype(bool) & reason.isna()
        reason[m] = why

    customer = _as_text(lines["customer_id"])
    flag(customer.isna(), "missing_customer_id")
    times = parse_times(lines["event_time"], time_format, timezone)
    flag(lines["event_time"].isna(), "missing_event_time")
    flag(times.isna(), "bad_timestamp")
    flag((times < pd.Timestamp("1990-01-01", tz="UTC")) | (times > now + pd.Timedelta(days=1)), "implausible_timestamp")
    if "__amount" in lines.columns:
        amount = pd.to_numeric(lines["__amount"], errors="coerce")
        flag(amount.isna() | ~np.isfinite(amount.fillna(0)), "bad_amount")
    else:
        qty = pd.to_numeric(lines["__quantity"], errors="coerce")
        price = pd.to_numeric(lines["__unit_price"], errors="coerce")
        amount = qty * price
        flag(qty.isna() | price.isna() | ~np.isfinite(amount.fillna(0)), "bad_amount")
    ok = reason.isna()
    rejects = pd.DataFrame({"_row": lines["_row"][~ok], "reason": reason[~ok]})
    good = pd.DataFrame(
        {
            "customer_id": customer[ok],
            "event_time": times[ok],
            "amount": amount[ok].astype("float64"),
            "_row": lines["_row"][ok],
        }
    )
    if "__order_id" in lines.columns:
        good["order_id"] = _as_text(lines["__order_id"][ok]).fillna("")
    else:  # no order id: one order per customer and timestamp
        good["order_id"] = good["customer_id"] + "@" + good["event_time"].astype("int64").astype(str)
    for extra in ("channel", "properties"):
        if extra in lines.columns:
            good[extra] = lines[extra][ok]
    if good.empty:
        return pd.DataFrame(columns=["customer_id", "event_time", "event_type", "value", "event_id", "_rows"]), rejects
    agg: dict[str, tuple[str, Any]] = {
        "event_time": ("event_time", "min"),
        "value": ("amount", "sum"),
        "_rows": ("_row", list),
    }
    for extra in ("channel", "properties"):
        if extra in good.columns:
            agg[extra] = (extra, "first")
    orders = good.groupby(["customer_id", "order_id"], sort=False).agg(**agg).reset_index()  # type: ignore[call-overload]
    cancelled = orders["order_id"].str.startswith(cancel_prefix) if cancel_prefix else False
    refund = cancelled | (orders["value"] < 0)
    orders["event_type"] = np.where(refund, "refund", "purchase")
    orders["value"] = orders["value"].abs().round(6)
    orders["event_id"] = "order:" + orders["order_id"] + ":" + orders["customer_id"]
    return orders.drop(columns=["order_id"]), rejects
