"""Long partial aggregates (from `sql.partials_sql`, either engine) -> the wide feature frame.

Everything here is vectorised numpy over the partial rows; the recipes in `definitions.py`
say which partial measures, event types and age buckets each feature sums. Both engines
share this code, so they can only differ in the SQL they run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contract import CHANNELS, EVENT_TYPE_LIST
from features.journeys.definitions import (
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
from features.journeys.sql import PART_COLUMNS, SLOT_WIDTH

_KIND_CODE = {k: i for i, k in enumerate(EVENT_TYPE_LIST)}
_CHANNEL_CODE = {c: i for i, c in enumerate(CHANNELS)}
_N_BUCKETS = len(WINDOW_BUCKETS["lifetime"])
# Windowed measure name -> partial column, per part (see sql.PART_COLUMNS).
_MEASURES: dict[str, dict[str, str]] = {
    "events": {"n": "n", "value_sum": "s1", "value_n": "s2"},
    "sessions": {"n": "n", "converted": "s1", "bounced": "s2", "duration_us": "s3"},
    "carts": {"n": "n", "abandoned": "s1"},
    "active_days": {"n": "n"},
}
_STAGE_INTENT_WINDOW = f"{STAGE_INTENT_DAYS}d"


def _codes(values: pa.ChunkedArray, mapping: dict[str, int]) -> np.ndarray:
    """Strings -> small int codes through `mapping`; -1 for null or unknown."""
    out = []
    for chunk in values.chunks:
        enc = pc.dictionary_encode(chunk)
        lookup = np.array([mapping.get(v, -1) for v in enc.dictionary.to_pylist()] + [-1], dtype=np.int16)
        out.append(lookup[enc.indices.fill_null(len(enc.dictionary)).to_numpy()])
    return np.concatenate(out) if out else np.array([], dtype=np.int16)


class Partials:
    """The rows of one partials query, addressed by output row `r`.

    The population is the `customer` part: one row per (customer, cutoff) with an event at or
    before the cutoff, numbered by cutoff index then customer_id.
    """

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        part_names = tuple(PART_COLUMNS)
        part = _codes(table.column("part"), {name: i for i, name in enumerate(part_names)})
        by_part = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[by_part], np.arange(len(part_names) + 1))
        self._parts = {name: by_part[bounds[i] : bounds[i + 1]] for i, name in enumerate(part_names)}
        self._numbers: dict[str, np.ndarray] = {}
        self._cache: dict[object, np.ndarray] = {}
        customers = self.part_rows("customer")
        order = np.argsort(self.number("r")[customers])
        customers = customers[order]
        self._parts["customer"] = customers
        self.size = len(customers)
        if not np.array_equal(self.number("r")[customers], np.arange(self.size)):
            raise ValueError("partials: the customer part must number its rows 0..n-1")
        self.ci = self.number("ci")[customers].astype(np.int64)
        self.customer_ids = np.asarray(
            table.column("customer_id").take(pa.array(customers, pa.int64())).to_pylist(), dtype=object
        )
        # the events part in slot (= event type, then bucket) order: one type is one contiguous slice
        events = self.part_rows("events")
        slots = self.number("b")[events].astype(np.int64)
        by_slot = np.argsort(slots, kind="stable")
        self._parts["events"] = events[by_slot]
        self._kind_bounds = np.searchsorted(slots[by_slot], np.arange(len(EVENT_TYPE_LIST) + 1) * SLOT_WIDTH)

    def has_part(self, part: str) -> bool:
        return len(self.part_rows(part)) > 0

    def part_rows(self, part: str) -> np.ndarray:
        return self._parts.get(part, np.array([], dtype=np.int64))

    def number(self, name: str) -> np.ndarray:
        """A numeric column over all rows, float64 with NaN for NULL."""
        if name not in self._numbers:
            self._numbers[name] = np.asarray(self._table.column(name).to_numpy(), dtype=np.float64)
        return self._numbers[name]

    def column(self, part: str, name: str) -> np.ndarray:
        """One numeric column over a part's rows (events rows in event-type order); `r` and `b` as int64."""
        key = (part, name)
        if key not in self._cache:
            values = self.number(name)[self.part_rows(part)]
            if name in ("r", "b"):
                values = np.nan_to_num(values, nan=-1).astype(np.int64)
            if part == "events" and name == "b":
                values = values % SLOT_WIDTH  # the events part holds slot = type code * SLOT_WIDTH + bucket
            self._cache[key] = values
        return self._cache[key]

    def strings(self, part: str, name: str) -> np.ndarray:
        rows = pa.array(self.part_rows(part), pa.int64())
        return np.asarray(self._table.column(name).take(rows).to_pylist(), dtype=object)

    def per_row(self, part: str, name: str) -> np.ndarray:
        """A part with at most one row per (customer, cutoff), as one float per output row (NaN: none)."""
        out = np.full(self.size, np.nan)
        out[self.column(part, "r")] = self.column(part, name)
        return out

    def windowed(self, w: Windowed) -> np.ndarray:
        """Sum of a measure over a window, one value per output row (0 where nothing)."""
        if w not in self._cache:
            col, buckets = _MEASURES[w.part][w.measure], WINDOW_BUCKETS[w.window]
            if w.part != "events":
                self._cache[w] = self._sum(w.part, col, buckets, slice(None))
            elif len(w.kinds) == 1:
                code = _KIND_CODE[w.kinds[0]]
                rows = slice(int(self._kind_bounds[code]), int(self._kind_bounds[code + 1]))
                self._cache[w] = self._sum("events", col, buckets, rows)
            else:  # a sum of single-kind sums, each cached for reuse
                total = np.zeros(self.size)
                for kind in w.kinds:
                    total += self.windowed(Windowed("events", w.measure, w.window, (kind,)))
                self._cache[w] = total
        return self._cache[w]

    def _sum(self, part: str, col: str, buckets: tuple[int, ...], rows: slice) -> np.ndarray:
        r, values, b = self.column(part, "r")[rows], self.column(part, col)[rows], self.column(part, "b")[rows]
        in_window = np.zeros(_N_BUCKETS + 1, dtype=bool)  # the last entry, index -1, is a NULL bucket
        in_window[list(buckets)] = True
        keep = in_window[b]
        return np.bincount(r[keep], weights=np.nan_to_num(values[keep]), minlength=self.size)

    def channel_events(self, channel: str | None) -> np.ndarray:
        """Activity events in the last 90 days on one channel (None: on any channel)."""
        key = ("channel", channel)
        if key not in self._cache:
            rows, n = self.column("channels", "r"), self.column("channels", "n")
            if channel is not None:
                if ("channels", "code") not in self._cache:
                    codes = _codes(self._table.column("k"), _CHANNEL_CODE)[self.part_rows("channels")]
                    self._cache[("channels", "code")] = codes
                keep = self._cache[("channels", "code")] == _CHANNEL_CODE[channel]
                rows, n = rows[keep], n[keep]
            self._cache[key] = np.bincount(rows, weights=n, minlength=self.size)
        return self._cache[key]


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
    """Evaluates recipes against one `Partials`; features may use other features."""

    def __init__(self, partials: Partials, cutoffs_us: np.ndarray) -> None:
        self.p = partials
        self.cutoff = cutoffs_us[partials.ci].astype(np.float64)
        self.values: dict[str, np.ndarray] = {}

    def feature(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = self.evaluate(FEATURES_BY_NAME[name].recipe)
        return self.values[name]

    def evaluate(self, recipe: Recipe) -> np.ndarray:
        p = self.p
        if isinstance(recipe, Windowed):
            return p.windowed(recipe)
        if isinstance(recipe, Ratio):
            return _div(p.windowed(recipe.num), p.windowed(recipe.den)) * recipe.scale
        if isinstance(recipe, Difference):
            return p.windowed(recipe.a) - p.windowed(recipe.b)
        if isinstance(recipe, Trend):
            last, prev = p.windowed(recipe.last), p.windowed(recipe.prev)
            return _div(last - prev, last + prev)
        if isinstance(recipe, ChannelShare):
            return _div(p.channel_events(recipe.channel), p.channel_events(None))
        if isinstance(recipe, Special):
            return SPECIAL[recipe.key](self)
        raise TypeError(f"unknown recipe {recipe!r}")

    def time(self, col: str) -> np.ndarray:
        """A per-customer time of the `customer` part (microseconds as float; NaN when none)."""
        return self.p.per_row("customer", col)

    def days_since(self, col: str) -> np.ndarray:
        return (self.cutoff - self.time(col)) / DAY_US

    def tenure(self) -> np.ndarray:
        first = self.time("s1")
        if self.p.has_part("first_seen"):
            first = np.fmin(first, self.p.per_row("first_seen", "s1"))
        return (self.cutoff - first) / DAY_US

    def cancelled(self) -> np.ndarray:
        cancel, purchase = self.time("s6"), self.time("s4")
        return (~np.isnan(cancel) & ~(purchase > cancel)).astype(np.float64)

    def stage(self) -> np.ndarray:
        intent = self.p.windowed(Windowed("events", "n", _STAGE_INTENT_WINDOW, INTENT_TYPES)) > 0
        return journey_stage(
            self.feature("orders_lifetime"),
            intent,
            self.feature("days_since_last_activity"),
            self.feature("days_since_last_purchase"),
            self.feature("interpurchase_days_mean"),
            self.feature("cancelled_since_last_purchase"),
        )

    def channels_used(self) -> np.ndarray:
        return np.sum([self.p.channel_events(ch) > 0 for ch in CHANNELS], axis=0).astype(np.float64)

    def last_action(self) -> np.ndarray:
        out = np.full(self.p.size, None, dtype=object)
        out[self.p.column("last_contact", "r")] = self.p.strings("last_contact", "k")
        return out


SPECIAL: dict[str, Callable[[_Builder], np.ndarray]] = {
    "days_since_last_purchase": lambda b: b.days_since("s4"),
    "days_since_first_purchase": lambda b: b.days_since("s3"),
    "days_since_last_activity": lambda b: b.days_since("s2"),
    "days_since_last_contact": lambda b: b.days_since("s5"),
    "tenure_days": _Builder.tenure,
    "purchase_days_lifetime": lambda b: np.nan_to_num(b.p.per_row("purchase_days", "n")),
    "orders_per_30d": lambda b: b.feature("orders_lifetime") * 30.0 / np.maximum(b.feature("tenure_days"), 30.0),
    "interpurchase_days_mean": lambda b: b.p.per_row("purchase_days", "s1"),
    "interpurchase_days_std": lambda b: b.p.per_row("purchase_days", "s2"),
    "purchase_recency_ratio": lambda b: _div(
        b.feature("days_since_last_purchase"), b.feature("interpurchase_days_mean")
    ),
    "repeat_purchaser": lambda b: (b.feature("orders_lifetime") >= 2).astype(np.float64),
    "cancelled_since_last_purchase": _Builder.cancelled,
    "nps_last": lambda b: b.p.per_row("last_nps", "s1"),
    "channels_used_90d": _Builder.channels_used,
    "last_contact_action": _Builder.last_action,
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


def assemble(partials: pa.Table, cutoffs: pd.DatetimeIndex) -> pd.DataFrame:
    """The wide frame: customer_id, cutoff, then every feature in registry order.

    partials: the rows of `partials_sql`; cutoffs: the distinct sorted UTC cutoffs its `ci`
    indexes. Rows are sorted by cutoff, then customer_id.
    """
    if partials.num_rows == 0:
        return empty_frame()
    p = Partials(partials)
    if p.size == 0:
        return empty_frame()
    builder = _Builder(p, cutoffs.as_unit("us").asi8)
    numeric = [f.name for f in FEATURES if f.kind == "numeric"]
    block = np.empty((p.size, len(numeric)), dtype=np.float64, order="F")  # one pandas block, no copy
    for i, name in enumerate(numeric):
        block[:, i] = builder.feature(name)
    frame = pd.DataFrame(block, columns=numeric, copy=False)
    frame.insert(0, "customer_id", p.customer_ids)
    frame.insert(1, "cutoff", cutoffs.as_unit("us")[p.ci])
    for position, f in enumerate(FEATURES, start=2):
        if f.kind == "categorical":
            frame.insert(position, f.name, builder.feature(f.name))
    return frame
