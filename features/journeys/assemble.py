"""Cutoff-independent facts (the parts of `sql.journey_plan`, from either engine) -> the wide frame.

For each cutoff T, everything known at T is selected and summed with numpy: global buckets
ending at or before T are mapped to T's age buckets, per-event facts are kept when their time
is <= T, and "latest at or before T" lookups use arrays sorted by (customer, time). The
recipes in `definitions.py` say which sums each feature takes; both engines share this code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contract import CHANNELS, EVENT_TYPE_LIST
from features.journeys.definitions import (
    BUCKET_EDGES_DAYS,
    CART_RESOLUTION_HOURS,
    CHURN_INACTIVE_DAYS,
    CHURN_NO_PURCHASE_DAYS,
    DAY_US,
    FEATURES,
    FEATURES_BY_NAME,
    INTENT_TYPES,
    LAPSE_DEFAULT_DAYS,
    LAPSE_MIN_DAYS,
    LAPSE_MULTIPLIER,
    STAGE_INTENT_DAYS,
    WINDOW_BUCKETS,
    ChannelShare,
    Difference,
    Ratio,
    Recipe,
    Special,
    Trend,
    Windowed,
)
from features.journeys.sql import CHANNEL_WINDOW_DAYS, TYPE_CODE

N_TYPES = len(EVENT_TYPE_LIST)
N_BUCKETS = len(BUCKET_EDGES_DAYS) + 1
_EDGES_US = np.array(BUCKET_EDGES_DAYS, dtype=np.float64) * DAY_US
_CHANNEL_BUCKETS = np.array([i for i, d in enumerate((*BUCKET_EDGES_DAYS, np.inf)) if d <= CHANNEL_WINDOW_DAYS])
_STAGE_INTENT_WINDOW = f"{STAGE_INTENT_DAYS}d"
_PREFIX_WINDOWS = sorted(
    (w for w, buckets in WINDOW_BUCKETS.items() if buckets == tuple(range(len(buckets)))),
    key=lambda w: len(WINDOW_BUCKETS[w]),
)


def windowed_parts(recipe: Recipe) -> list[Windowed]:
    """The window sums a recipe reads."""
    if isinstance(recipe, Windowed):
        return [recipe]
    if isinstance(recipe, Ratio):
        return [recipe.num, recipe.den]
    if isinstance(recipe, Difference):
        return [recipe.a, recipe.b]
    if isinstance(recipe, Trend):
        return [recipe.last, recipe.prev]
    return []


# Event types whose `value` some feature sums: the value cubes only hold these.
_VALUE_KINDS = sorted(
    {TYPE_CODE[k] for f in FEATURES for w in windowed_parts(f.recipe) if w.part == "events" and w.measure != "n"
     for k in w.kinds}
)  # fmt: skip
_VALUE_INDEX = {code: i for i, code in enumerate(_VALUE_KINDS)}


def _bucket(age_us: np.ndarray) -> np.ndarray:
    """Age bucket of ages in microseconds: 0 for [0, 7 days), ..., 5 for 365 days and older."""
    return np.searchsorted(_EDGES_US, age_us, side="right")


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, NaN for NULL (times are exact: they are below 2**53)."""
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


class _Sorted:
    """Rows of a per-event part sorted by (customer, time[, value]) for "latest at or before T"."""

    def __init__(self, cix: np.ndarray, t: np.ndarray, n_customers: int, *values: np.ndarray) -> None:
        # ties at the same time: the largest value sorts last and is taken as the latest
        order = np.lexsort((*reversed(values), t, cix))
        self.cix, self.t = cix[order], t[order]
        self.values = [v[order] for v in values]
        self.start = np.concatenate([[0], np.cumsum(np.bincount(self.cix, minlength=n_customers))])[:-1]
        self.n_customers = n_customers

    def latest(self, cutoff: float, customers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(has one, row index) of each customer's latest row at or before the cutoff."""
        count = np.bincount(self.cix[self.t <= cutoff], minlength=self.n_customers)[customers]
        return count > 0, self.start[customers] + np.maximum(count, 1) - 1

    def latest_value(self, cutoff: float, customers: np.ndarray, values: np.ndarray) -> np.ndarray:
        has, idx = self.latest(cutoff, customers)
        out = np.full(len(customers), np.nan)
        out[has] = values[idx[has]]
        return out


class Facts:
    """Every part as numpy arrays, indexed by customer (cix); cutoff-independent."""

    def __init__(self, parts: dict[str, pa.Table], boundaries: np.ndarray) -> None:
        customers = parts["customers"]
        order = np.argsort(customers.column("cix").to_numpy())
        self.customer_ids = np.asarray(customers.column("customer_id").to_pylist(), dtype=object)[order]
        self.n = n = len(order)
        self.first_t = _numbers(customers, "first_t")[order]
        self.first_purchase_t = _numbers(customers, "first_purchase_t")[order]
        self.boundaries = boundaries.astype(np.float64)
        n_global = len(boundaries)

        def ints(part: str, name: str) -> np.ndarray:
            return parts[part].column(name).to_numpy().astype(np.int64)

        events = parts["events"]
        slot = ints("events", "slot")
        self.ev_cix, self.ev_type, self.ev_g = ints("events", "cix"), slot // n_global, slot % n_global
        self.ev_n = _numbers(events, "n")
        self.ev_value_sum = np.nan_to_num(_numbers(events, "value_sum"))
        self.ev_value_n = _numbers(events, "value_n")
        by_g = np.argsort(self.ev_g, kind="stable")  # a cutoff's known buckets are then a prefix of the rows
        self.ev_cix, self.ev_type, self.ev_g = self.ev_cix[by_g], self.ev_type[by_g], self.ev_g[by_g]
        self.ev_n, self.ev_value_sum, self.ev_value_n = self.ev_n[by_g], self.ev_value_sum[by_g], self.ev_value_n[by_g]
        self.ev_valued = np.flatnonzero(np.isin(self.ev_type, _VALUE_KINDS))
        self.ev_value_index = np.array([_VALUE_INDEX.get(int(k), 0) for k in range(N_TYPES)])[self.ev_type]
        channel_slot = ints("channels", "slot")
        self.ch_cix = ints("channels", "cix")
        self.ch_code, self.ch_g = channel_slot // n_global, channel_slot % n_global
        self.ch_n = _numbers(parts["channels"], "n")
        self.activity = _Sorted(ints("activity", "cix"), _numbers(parts["activity"], "g"), n,
                                _numbers(parts["activity"], "t_max"))  # fmt: skip
        sessions = parts["sessions"]
        self.se_cix = ints("sessions", "cix")
        self.se_s0, self.se_s1 = _numbers(sessions, "s0"), _numbers(sessions, "s1")
        self.se_p0, self.se_b0 = _numbers(sessions, "p0"), _numbers(sessions, "b0")
        cuts = parts["session_cuts"]
        self.cut_cix, self.cut_ci = ints("session_cuts", "cix"), ints("session_cuts", "ci")
        self.cut_s0, self.cut_s1c = _numbers(cuts, "s0"), _numbers(cuts, "s1c")
        self.cart_cix, self.cart_t = ints("carts", "cix"), _numbers(parts["carts"], "t")
        self.cart_abandoned = _numbers(parts["carts"], "abandoned")
        self.day_cix, self.day_t0 = ints("active_days", "cix"), _numbers(parts["active_days"], "t0")
        moments = parts["moments"]
        m_cix, m_type = ints("moments", "cix"), ints("moments", "tc")
        m_t, m_v = _numbers(moments, "t"), _numbers(moments, "v")

        def moment(kind: str) -> np.ndarray:
            return m_type == TYPE_CODE[kind]

        is_purchase = moment("purchase")
        purchases = _Sorted(m_cix[is_purchase], m_t[is_purchase], n)
        self.purchases = purchases
        # purchase days: the first purchase of each (customer, UTC day), and the gap in days to the previous one
        day = np.floor(purchases.t / DAY_US)
        first_of_day = np.ones(len(day), dtype=bool)
        first_of_day[1:] = (purchases.cix[1:] != purchases.cix[:-1]) | (day[1:] != day[:-1])
        self.pd_cix, self.pd_t, pd_day = purchases.cix[first_of_day], purchases.t[first_of_day], day[first_of_day]
        self.pd_gap = np.full(len(pd_day), np.nan)
        same = self.pd_cix[1:] == self.pd_cix[:-1]
        self.pd_gap[1:][same] = (pd_day[1:] - pd_day[:-1])[same]
        answered = moment("nps_response") & ~np.isnan(m_v)
        self.nps = _Sorted(m_cix[answered], m_t[answered], n, m_v[answered])
        # actions as ranks into their sorted distinct values (few), so that ties sort by action
        is_contact = moment("marketing_contact")
        encoded = pc.dictionary_encode(moments.column("action").combine_chunks().filter(pa.array(is_contact)))
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        order = np.argsort(names)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        self.action_names = names[order]
        actions = rank[encoded.indices.to_numpy()] if len(names) else np.array([], dtype=np.int64)
        self.contacts = _Sorted(m_cix[is_contact], m_t[is_contact], n, actions)
        is_cancel = moment("subscription_cancel")
        self.cancels = _Sorted(m_cix[is_cancel], m_t[is_cancel], n)
        self.first_seen = np.full(n, np.nan)
        if "first_seen" in parts:
            self.first_seen[ints("first_seen", "cix")] = _numbers(parts["first_seen"], "t")
        # email consent: events sorted so that of changes at the same instant an opt-out (key 1) is the latest;
        # a change without a value says nothing (ingest rejects it; frames passed directly may hold one)
        is_consent = moment("consent_change") & ~np.isnan(m_v)
        opt_out = (m_v[is_consent] == 0).astype(np.float64)
        self.consents = _Sorted(m_cix[is_consent], m_t[is_consent], n, opt_out)
        self.opt_in_table = np.full(n, np.nan)  # the customers table's email_opt_in, when it has one
        if "opt_in" in parts:
            self.opt_in_table[ints("opt_in", "cix")] = _numbers(parts["opt_in"], "v")


class CutoffView:
    """What is known at one cutoff, for its population (customers with an event at or before it)."""

    def __init__(self, facts: Facts, ci: int, cutoff_us: int) -> None:
        self.f = facts
        self.ci = ci
        self.cutoff = float(cutoff_us)
        self.customers = np.flatnonzero(facts.first_t <= self.cutoff)
        self.size = len(self.customers)
        self.row = np.full(facts.n, -1, dtype=np.int64)
        self.row[self.customers] = np.arange(self.size)
        ends = facts.boundaries
        self.g_cut = int(np.searchsorted(ends, self.cutoff))  # ends[g_cut] == cutoff
        self.g_bucket = np.where(ends <= self.cutoff, _bucket(self.cutoff - ends), -1)
        self._cache: dict[object, np.ndarray] = {}

    # --- dense per-(customer, type, bucket) and per-(customer, bucket) sums ---------------------
    def _dense(self, cix: np.ndarray, cell: np.ndarray, weights: np.ndarray | None, cells: int) -> np.ndarray:
        """(cells, customers) sums; one customer vector per cell is contiguous."""
        key = cell * self.size + self.row[cix]
        out = np.bincount(key, weights=weights, minlength=cells * self.size)
        return out.reshape(cells, self.size).astype(np.float64, copy=False)

    @staticmethod
    def _windows(by_bucket: np.ndarray) -> dict[str, np.ndarray]:
        """Window -> sums, from (..., buckets, customers) bucket sums; windows starting at bucket 0
        are running sums (7d, 30d, 90d, 365d, lifetime), the others plain sums (prev30d)."""
        out: dict[str, np.ndarray] = {}
        total, done = np.zeros_like(by_bucket[..., 0, :]), 0
        for w in _PREFIX_WINDOWS:
            for b in range(done, len(WINDOW_BUCKETS[w])):
                total = total + by_bucket[..., b, :]  # a new array: each window keeps its own
            done = len(WINDOW_BUCKETS[w])
            out[w] = total
        for w, buckets in WINDOW_BUCKETS.items():
            if w not in out:
                out[w] = by_bucket[..., list(buckets), :].sum(axis=-2)
        return out

    def event_cube(self, measure: str) -> dict[str, np.ndarray]:
        """Window -> (types, customers) sums of an events measure: `n` over every type; `value_sum`
        and `value_n` over the types in `_VALUE_KINDS` (indexed by `_VALUE_INDEX`)."""
        key = ("cube", measure)
        if key not in self._cache:
            f = self.f
            known = int(np.searchsorted(f.ev_g, self.g_cut, side="right"))  # rows of buckets ending <= T
            rows: slice | np.ndarray
            if measure == "n":
                rows, kind, n_kinds = slice(0, known), f.ev_type[:known], N_TYPES
            else:
                rows = f.ev_valued[: int(np.searchsorted(f.ev_valued, known))]
                kind, n_kinds = f.ev_value_index[rows], len(_VALUE_KINDS)
            cells = kind * N_BUCKETS + self.g_bucket[f.ev_g[rows]]
            weights = {"n": f.ev_n, "value_sum": f.ev_value_sum, "value_n": f.ev_value_n}[measure][rows]
            cube = self._dense(f.ev_cix[rows], cells, weights, n_kinds * N_BUCKETS)
            self._cache[key] = self._windows(cube.reshape(n_kinds, N_BUCKETS, self.size))  # type: ignore[assignment]
        return self._cache[key]  # type: ignore[return-value]

    def by_bucket(self, part: str, measure: str) -> dict[str, np.ndarray]:
        """Window -> per-customer sums for the sessions, carts and active_days parts."""
        key = (part, measure)
        if key not in self._cache:
            f, c = self.f, self.cutoff
            if part == "sessions":
                known = f.se_s0 <= c
                cix, b = f.se_cix[known], _bucket(c - f.se_s0[known])
                s0, s1 = f.se_s0[known], f.se_s1[known]
                values = {
                    "n": None,
                    "converted": (f.se_p0[known] <= c).astype(np.float64),
                    "bounced": (f.se_b0[known] <= c).astype(np.float64),
                    "duration_us": np.where(s1 <= c, s1 - s0, 0.0),  # straddling sessions: from session_cuts
                }[measure]
                out = self._dense(cix, b, values, N_BUCKETS)
                if measure == "duration_us":
                    cut = f.cut_ci == self.ci
                    out += self._dense(f.cut_cix[cut], _bucket(c - f.cut_s0[cut]), (f.cut_s1c - f.cut_s0)[cut],
                                       N_BUCKETS)  # fmt: skip
            elif part == "carts":
                resolved = f.cart_t + CART_RESOLUTION_HOURS * 3_600_000_000 <= c
                weights = None if measure == "n" else f.cart_abandoned[resolved]
                out = self._dense(f.cart_cix[resolved], _bucket(c - f.cart_t[resolved]), weights, N_BUCKETS)
            else:  # active_days
                known = f.day_t0 <= c
                out = self._dense(f.day_cix[known], _bucket(c - f.day_t0[known]), None, N_BUCKETS)
            self._cache[key] = self._windows(out)  # type: ignore[assignment]
        return self._cache[key]  # type: ignore[return-value]

    def windowed(self, w: Windowed) -> np.ndarray:
        """Sum of a measure over a window, one value per customer (0 where nothing)."""
        if w not in self._cache:
            if w.part == "events":
                sums = self.event_cube(w.measure)[w.window]
                codes = [TYPE_CODE[k] for k in w.kinds]
                kinds = codes if w.measure == "n" else [_VALUE_INDEX[c] for c in codes]
                out = sums[kinds[0]] if len(kinds) == 1 else sums[kinds].sum(axis=0)
            else:
                out = self.by_bucket(w.part, w.measure)[w.window]
            self._cache[w] = out
        return self._cache[w]

    def channel_events(self) -> np.ndarray:
        """(customers, channels) activity events in the last 90 days."""
        if "channels" not in self._cache:
            f = self.f
            b = self.g_bucket[f.ch_g]
            keep = np.isin(b, _CHANNEL_BUCKETS)
            self._cache["channels"] = self._dense(f.ch_cix[keep], f.ch_code[keep], f.ch_n[keep], len(CHANNELS))
        return self._cache["channels"]  # (channels, customers)

    # --- latest facts at or before the cutoff -----------------------------------------------------
    def last_activity_t(self) -> np.ndarray:
        a = self.f.activity
        has, idx = a.latest(float(self.g_cut), self.customers)  # global buckets ending at or before T
        out = np.full(self.size, np.nan)
        out[has] = a.values[0][idx[has]]
        return out

    def last_t(self, rows: _Sorted) -> np.ndarray:
        has, idx = rows.latest(self.cutoff, self.customers)
        out = np.full(self.size, np.nan)
        out[has] = rows.t[idx[has]]
        return out

    def known(self, per_customer: np.ndarray) -> np.ndarray:
        """A per-customer time, kept when at or before the cutoff (NaN otherwise)."""
        values = per_customer[self.customers]
        return np.where(values <= self.cutoff, values, np.nan)

    def purchase_day_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(purchase days, mean gap, sample std of gaps) per customer."""
        f = self.f
        known = f.pd_t <= self.cutoff
        rows, gap = self.row[f.pd_cix[known]], f.pd_gap[known]
        has_gap = ~np.isnan(gap)
        days = np.bincount(rows, minlength=self.size).astype(np.float64)
        n = np.bincount(rows[has_gap], minlength=self.size).astype(np.float64)
        s1 = np.bincount(rows[has_gap], weights=gap[has_gap], minlength=self.size)
        s2 = np.bincount(rows[has_gap], weights=gap[has_gap] ** 2, minlength=self.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, s1 / n, np.nan)
            var = np.where(n > 1, (s2 - n * mean**2) / (n - 1), np.nan)
        return days, mean, np.sqrt(np.maximum(var, 0.0))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def journey_stage(
    orders: np.ndarray,
    intent: np.ndarray,
    days_since_last_activity: np.ndarray,
    days_since_last_purchase: np.ndarray,
    interpurchase_days_mean: np.ndarray,
    cancelled_since_last_purchase: np.ndarray,
) -> np.ndarray:
    """The rules of `definitions.JOURNEY_STAGE_RULES`, vectorised; every input has one value per customer."""
    threshold = np.where(
        np.isnan(interpurchase_days_mean),
        LAPSE_DEFAULT_DAYS,
        np.maximum(LAPSE_MIN_DAYS, LAPSE_MULTIPLIER * np.nan_to_num(interpurchase_days_mean)),
    )
    with np.errstate(invalid="ignore"):
        churned = (
            (days_since_last_activity > CHURN_INACTIVE_DAYS)
            | (days_since_last_purchase > CHURN_NO_PURCHASE_DAYS)
            | (cancelled_since_last_purchase > 0)
        )
        lapsing = days_since_last_purchase > threshold
    stage = np.full(len(orders), "repeat", dtype=object)
    # assigned from the last rule to the first, so that the first matching rule wins
    stage[orders == 1] = "first_purchase"
    stage[lapsing] = "lapsing"
    stage[churned] = "churned"
    prospect = orders <= 0
    stage[prospect] = np.where(intent[prospect], "consideration", "awareness")
    return stage


class _Builder:
    """Evaluates recipes at one cutoff; features may use other features."""

    def __init__(self, view: CutoffView) -> None:
        self.v = view
        self.values: dict[str, np.ndarray] = {}

    def feature(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = self.evaluate(FEATURES_BY_NAME[name].recipe)
        return self.values[name]

    def evaluate(self, recipe: Recipe) -> np.ndarray:
        v = self.v
        if isinstance(recipe, Windowed):
            return v.windowed(recipe)
        if isinstance(recipe, Ratio):
            return _div(v.windowed(recipe.num), v.windowed(recipe.den)) * recipe.scale
        if isinstance(recipe, Difference):
            return v.windowed(recipe.a) - v.windowed(recipe.b)
        if isinstance(recipe, Trend):
            last, prev = v.windowed(recipe.last), v.windowed(recipe.prev)
            return _div(last - prev, last + prev)
        if isinstance(recipe, ChannelShare):
            counts = v.channel_events()
            return _div(counts[CHANNELS.index(recipe.channel)], counts.sum(axis=0))
        if isinstance(recipe, Special):
            return SPECIAL[recipe.key](self)
        raise TypeError(f"unknown recipe {recipe!r}")

    def days_since(self, t: np.ndarray) -> np.ndarray:
        return (self.v.cutoff - t) / DAY_US

    def tenure(self) -> np.ndarray:
        first = np.fmin(self.v.known(self.v.f.first_t), self.v.known(self.v.f.first_seen))
        return self.days_since(first)

    def cancelled(self) -> np.ndarray:
        cancel, purchase = self.v.last_t(self.v.f.cancels), self.v.last_t(self.v.f.purchases)
        return (~np.isnan(cancel) & ~(purchase > cancel)).astype(np.float64)

    def purchase_days(self, i: int) -> np.ndarray:
        if "purchase_days" not in self.values:
            self.values["purchase_days"] = np.stack(self.v.purchase_day_stats())
        return self.values["purchase_days"][i]

    def last_action(self) -> np.ndarray:
        f = self.v.f
        has, idx = f.contacts.latest(self.v.cutoff, self.v.customers)
        out = np.full(self.v.size, None, dtype=object)
        out[has] = f.action_names[f.contacts.values[0][idx[has]]]
        return out

    def email_opt_in(self) -> np.ndarray:
        """The latest email consent_change at or before the cutoff (1 - its opt-out key), else the table's value."""
        f = self.v.f
        from_events = 1.0 - f.consents.latest_value(self.v.cutoff, self.v.customers, f.consents.values[0])
        return np.where(np.isnan(from_events), f.opt_in_table[self.v.customers], from_events)

    def stage(self) -> np.ndarray:
        intent = self.v.windowed(Windowed("events", "n", _STAGE_INTENT_WINDOW, INTENT_TYPES)) > 0
        return journey_stage(
            self.feature("orders_lifetime"),
            intent,
            self.feature("days_since_last_activity"),
            self.feature("days_since_last_purchase"),
            self.feature("interpurchase_days_mean"),
            self.feature("cancelled_since_last_purchase"),
        )


SPECIAL: dict[str, Callable[[_Builder], np.ndarray]] = {
    "days_since_last_purchase": lambda b: b.days_since(b.v.last_t(b.v.f.purchases)),
    "days_since_first_purchase": lambda b: b.days_since(b.v.known(b.v.f.first_purchase_t)),
    "days_since_last_activity": lambda b: b.days_since(b.v.last_activity_t()),
    "days_since_last_contact": lambda b: b.days_since(b.v.last_t(b.v.f.contacts)),
    "tenure_days": _Builder.tenure,
    "purchase_days_lifetime": lambda b: b.purchase_days(0),
    "orders_per_30d": lambda b: b.feature("orders_lifetime") * 30.0 / np.maximum(b.feature("tenure_days"), 30.0),
    "interpurchase_days_mean": lambda b: b.purchase_days(1),
    "interpurchase_days_std": lambda b: b.purchase_days(2),
    "purchase_recency_ratio": lambda b: _div(
        b.feature("days_since_last_purchase"), b.feature("interpurchase_days_mean")
    ),
    "repeat_purchaser": lambda b: (b.feature("orders_lifetime") >= 2).astype(np.float64),
    "cancelled_since_last_purchase": _Builder.cancelled,
    "nps_last": lambda b: b.v.f.nps.latest_value(b.v.cutoff, b.v.customers, b.v.f.nps.values[0]),
    "channels_used_90d": lambda b: (b.v.channel_events() > 0).sum(axis=0).astype(np.float64),
    "last_contact_action": _Builder.last_action,
    "email_opt_in": _Builder.email_opt_in,
    "journey_stage": _Builder.stage,
}


def empty_frame() -> pd.DataFrame:
    """The output columns and dtypes, without rows."""
    data: dict[str, pd.Series] = {
        "customer_id": pd.Series([], dtype=object),
        "cutoff": pd.Series([], dtype="datetime64[us, UTC]"),
    }
    for f in FEATURES:
        data[f.name] = pd.Series([], dtype=object if f.kind == "categorical" else np.float64)
    return pd.DataFrame(data)


def assemble(parts: dict[str, pa.Table], cutoffs: pd.DatetimeIndex, boundaries: tuple[int, ...]) -> pd.DataFrame:
    """The wide frame: customer_id, cutoff, then every feature in registry order.

    parts: the results of `journey_plan(...).parts`; cutoffs: the distinct sorted UTC cutoffs;
    boundaries: the plan's global bucket ends. Rows are sorted by cutoff, then customer_id.
    """
    if parts["customers"].num_rows == 0:
        return empty_frame()
    facts = Facts(parts, np.asarray(boundaries, dtype=np.int64))
    cutoffs_us = cutoffs.as_unit("us").asi8
    sizes = [int((facts.first_t <= float(c)).sum()) for c in cutoffs_us]
    total = sum(sizes)
    if total == 0:
        return empty_frame()
    numeric = [f.name for f in FEATURES if f.kind == "numeric"]
    block = np.empty((total, len(numeric)), dtype=np.float64, order="F")  # one pandas block, no copy
    categorical = {f.name: np.empty(total, dtype=object) for f in FEATURES if f.kind == "categorical"}
    customer_ids = np.empty(total, dtype=object)
    cutoff_index = np.repeat(np.arange(len(cutoffs_us)), sizes)
    start = 0
    for ci, c in enumerate(cutoffs_us):  # one cutoff at a time: its dense arrays are freed after it
        builder = _Builder(CutoffView(facts, ci, int(c)))
        rows = slice(start, start + sizes[ci])
        for j, name in enumerate(numeric):
            block[rows, j] = builder.feature(name)
        for name, column in categorical.items():
            column[rows] = builder.feature(name)
        customer_ids[rows] = facts.customer_ids[builder.v.customers]
        start = rows.stop
    frame = pd.DataFrame(block, columns=numeric, copy=False)
    frame.insert(0, "customer_id", customer_ids)
    frame.insert(1, "cutoff", cutoffs.as_unit("us")[cutoff_index])
    for position, f in enumerate(FEATURES, start=2):
        if f.kind == "categorical":
            frame.insert(position, f.name, categorical[f.name])
    return frame
