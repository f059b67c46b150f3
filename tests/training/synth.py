"""Small, fast synthetic journeys and a minimal point-in-time feature source for unit tests.

Not the project's simulator: a few hundred customers following a BG/NBD-like process, so
tests do not depend on other packages' progress and run in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01", tz="UTC")
CHANNELS = ("web", "ads", "email")


def make_events(n_customers: int = 400, days: int = 540, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, customers). Prospects browse, some convert; buyers purchase at a gamma-distributed
    rate until they drop out (probability p after each purchase); engaged buyers also log in."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, float, str, float]] = []
    customers = []
    for i in range(n_customers):
        cid = f"c{i:05d}"
        channel = CHANNELS[i % len(CHANNELS)]
        arrive = rng.uniform(0, days * 0.9)
        customers.append((cid, START + pd.Timedelta(days=arrive), channel, "mainstream"))
        quality = {"web": 1.0, "ads": 0.5, "email": 1.5}[channel]
        rows.append((cid, arrive, "session_start", np.nan))
        t = arrive
        # prospect phase: browsing until a first purchase or giving up
        convert_rate = 0.02 * quality
        while True:
            t += rng.exponential(7.0)
            if t > days or rng.random() < 0.05:
                t = days + 1
                break
            rows.append((cid, t, "page_view", 30.0))
            if rng.random() < convert_rate * 7:
                break
        lam = rng.gamma(1.5, 1 / 40) * quality
        p_drop = rng.beta(1.0, 4.0)
        spend = rng.lognormal(3.5, 0.5)
        while t <= days:
            rows.append((cid, t, "purchase", float(spend * rng.lognormal(0, 0.3))))
            rows.append((cid, max(t - 0.01, 0), "add_to_cart", np.nan))
            if rng.random() < 0.05:
                rows.append((cid, t + 2, "refund", float(spend * 0.5)))
            if rng.random() < p_drop:
                # dropped out: a little residual browsing, then silence
                for _ in range(rng.poisson(1)):
                    rows.append((cid, t + rng.uniform(1, 30), "page_view", 10.0))
                break
            gap = rng.exponential(1 / max(lam, 1e-3))
            for _ in range(rng.poisson(min(gap / 10, 20))):
                rows.append((cid, t + rng.uniform(0, gap), "login", np.nan))
            t += gap
    events = pd.DataFrame(rows, columns=["customer_id", "offset", "event_type", "value"])
    events = events[events["offset"] <= days].copy()
    events["event_time"] = (START + pd.to_timedelta(events["offset"], unit="D")).dt.as_unit("us")
    events["event_id"] = [f"e{i}" for i in range(len(events))]
    events["channel"] = "web"
    events = events.drop(columns="offset").sort_values("event_time").reset_index(drop=True)
    cust = pd.DataFrame(customers, columns=["customer_id", "first_seen", "acquisition_channel", "segment"])
    return events, cust


def simple_features(events: pd.DataFrame, customers: pd.DataFrame | None = None):
    """A feature source (entity -> features) computing a handful of journey features at each cutoff."""
    ev = events.copy()
    ev["customer_id"] = ev["customer_id"].astype(str)
    ev["event_time"] = pd.to_datetime(ev["event_time"], utc=True)

    def source(entity: pd.DataFrame) -> pd.DataFrame:
        out = []
        day = pd.Timedelta(days=1)
        for cutoff in sorted(entity["cutoff"].unique()):
            cutoff = pd.Timestamp(cutoff)
            ids = entity.loc[entity["cutoff"] == cutoff, "customer_id"].astype(str).unique()
            past = ev[(ev["event_time"] <= cutoff) & ev["customer_id"].isin(ids)]
            g = past.groupby("customer_id")
            pur = past[past["event_type"] == "purchase"].groupby("customer_id")
            recent = past[past["event_time"] > cutoff - 30 * day].groupby("customer_id").size()
            frame = pd.DataFrame(index=pd.Index(ids, name="customer_id"))
            days_active = past.assign(d=past["event_time"].dt.floor("D")).groupby("customer_id")["d"].nunique()
            frame["active_days_lifetime"] = days_active.reindex(frame.index).fillna(0)
            frame["events_30d"] = recent.reindex(frame.index).fillna(0)
            frame["days_since_last_activity"] = ((cutoff - g["event_time"].max()) / day).reindex(frame.index)
            buys = past[past["event_type"] == "purchase"]
            buy_days = buys.assign(d=buys["event_time"].dt.floor("D")).groupby("customer_id")["d"].nunique()
            frame["purchase_days_lifetime"] = buy_days.reindex(frame.index).fillna(0)
            frame["days_since_first_purchase"] = ((cutoff - pur["event_time"].min()) / day).reindex(frame.index)
            frame["days_since_last_purchase"] = ((cutoff - pur["event_time"].max()) / day).reindex(frame.index)
            frame["aov_lifetime"] = pur["value"].mean().reindex(frame.index)
            frame["cutoff"] = cutoff
            out.append(frame.reset_index())
        feats = pd.concat(out, ignore_index=True)
        return feats

    return source
