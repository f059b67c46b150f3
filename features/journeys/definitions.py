"""Every journey feature, in one place: name, stage, definition, window, unit, and how it is computed.

A feature is computed for one customer as of a cutoff T from the customer's events with
`event_time <= T`. A window of N days is the half-open interval (T - N days, T], as in
`core.time.Window`; `lifetime` is every event at or before T.

Missing values are deliberate:

- counts and amounts are 0 when nothing happened (the customer is in the population, so
  "no product views in 7 days" is a true zero);
- rates, means and ratios are NaN when their denominator is 0 (no impressions, no orders);
- `days_since_*` are NaN when the thing never happened (a prospect has no last purchase);
- trends are NaN when both periods are empty; channel shares when there was no activity.

The `recipe` of a feature says how it is computed from the engine's facts (`assemble.py`; the
`Special` ones by a named function there); both engines share that code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.contract import CHANNELS, EVENT_TYPES, NOT_ACTIVITY

DAY_US = 86_400_000_000

# Window name -> the half-open interval in days before the cutoff; None = lifetime.
WINDOW_DAYS: dict[str, int | None] = {"7d": 7, "30d": 30, "90d": 90, "365d": 365, "lifetime": None}
# Age buckets the engine aggregates into: bucket i holds events with age (cutoff - event_time)
# in [BUCKET_EDGES_DAYS[i-1], BUCKET_EDGES_DAYS[i]) days; the last bucket is "older than 365 days".
# Every window is a prefix of buckets; "prev30d" (days 30-60 before the cutoff) is bucket 2.
BUCKET_EDGES_DAYS: tuple[int, ...] = (7, 30, 60, 90, 365)
WINDOW_BUCKETS: dict[str, tuple[int, ...]] = {
    "7d": (0,),
    "30d": (0, 1),
    "prev30d": (2,),
    "90d": (0, 1, 2, 3),
    "365d": (0, 1, 2, 3, 4),
    "lifetime": (0, 1, 2, 3, 4, 5),
}

FEATURE_STAGES: tuple[str, ...] = (
    "awareness", "consideration", "purchase", "retention", "channel", "trend", "contact", "journey",
)  # fmt: skip

# Events the business initiates; everything else in the vocabulary is customer activity.
BUSINESS_INITIATED: tuple[str, ...] = ("ad_impression", "email_sent", "marketing_contact")
# Activity is every other type: neither business-initiated nor a consent record (`core.contract.NOT_ACTIVITY`).
ACTIVITY_TYPES: tuple[str, ...] = tuple(t for types in EVENT_TYPES.values() for t in types if t not in NOT_ACTIVITY)
# A prospect with any of these in the stage window is in "consideration".
INTENT_TYPES: tuple[str, ...] = tuple(EVENT_TYPES["consideration"]) + tuple(EVENT_TYPES["purchase"])

# Cart abandonment: a cart add is resolved once this much time has passed after it; it is
# abandoned when no purchase happened in [add, add + CART_RESOLUTION_HOURS].
CART_RESOLUTION_HOURS = 24

# Journey stage rules (see `JOURNEY_STAGE_RULES` and `features.journeys.assemble.journey_stage`).
JOURNEY_STAGES: tuple[str, ...] = ("awareness", "consideration", "first_purchase", "repeat", "lapsing", "churned")
STAGE_INTENT_DAYS = 90
CHURN_INACTIVE_DAYS = 180
CHURN_NO_PURCHASE_DAYS = 365
LAPSE_MULTIPLIER = 2.0
LAPSE_MIN_DAYS = 30
LAPSE_DEFAULT_DAYS = 90
JOURNEY_STAGE_RULES: tuple[str, ...] = (
    f"Rules are applied in this order; the first that matches wins. Customers with no order are prospects: "
    f"`consideration` when they had a consideration- or purchase-stage event "
    f"({', '.join(f'`{t}`' for t in INTENT_TYPES)}) in the last {STAGE_INTENT_DAYS} days, else `awareness`.",
    f"`churned`: has ordered, and either no activity for more than {CHURN_INACTIVE_DAYS} days, or no purchase for "
    f"more than {CHURN_NO_PURCHASE_DAYS} days, or a `subscription_cancel` at or after the last purchase.",
    f"`lapsing`: days since the last purchase exceed the customer's lapse threshold: "
    f"max({LAPSE_MIN_DAYS}, {LAPSE_MULTIPLIER:g} x mean inter-purchase interval) when the interval is known, "
    f"else {LAPSE_DEFAULT_DAYS} days.",
    "`first_purchase`: exactly one order so far.",
    "`repeat`: two or more orders.",
)


# --- recipes: how a feature is computed from the engine's partial aggregates -----------------

Part = Literal["events", "sessions", "carts", "active_days"]


@dataclass(frozen=True)
class Windowed:
    """Sum of one partial measure over a window.

    part `events` (measures `n`, `value_sum`, `value_n`) is restricted to `kinds` (event types);
    `sessions` has `n`, `converted`, `bounced`, `duration_us`; `carts` has `n` (resolved cart
    adds) and `abandoned`; `active_days` has `n`.
    """

    part: Part
    measure: str
    window: str
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ratio:
    """num / den * scale; NaN where den is 0."""

    num: Windowed
    den: Windowed
    scale: float = 1.0


@dataclass(frozen=True)
class Difference:
    """a - b."""

    a: Windowed
    b: Windowed


@dataclass(frozen=True)
class Trend:
    """(last - prev) / (last + prev), in [-1, 1]; NaN when both are 0."""

    last: Windowed
    prev: Windowed


@dataclass(frozen=True)
class ChannelShare:
    """Share of activity events in the last 90 days that were on `channel`; NaN without activity."""

    channel: str


@dataclass(frozen=True)
class Special:
    """Computed by a named function in `features.journeys.assemble.SPECIAL`."""

    key: str


Recipe = Windowed | Ratio | Difference | Trend | ChannelShare | Special


@dataclass(frozen=True)
class Feature:
    """One feature column.

    `ages`: the value grows by exactly the days elapsed since the cutoff while nothing happens
    (days_since_*, tenure), so a served value can be aged at read time (`age_features`).
    `if_undefined`: what the value is when it has no meaning, and why.
    """

    name: str
    stage: str
    definition: str
    window: str
    unit: str
    recipe: Recipe
    kind: Literal["numeric", "categorical"] = "numeric"
    ages: bool = False
    if_undefined: str = "0"
    categories: tuple[str, ...] = field(default=())


def _types(kinds: tuple[str, ...]) -> str:
    return ", ".join(f"`{k}`" for k in kinds)


def _counts(base: str, stage: str, kinds: tuple[str, ...], windows: tuple[str, ...], what: str) -> list[Feature]:
    return [
        Feature(f"{base}_{w}", stage, f"Number of {what} ({_types(kinds)} events).", w, "count",
                Windowed("events", "n", w, kinds))
        for w in windows
    ]  # fmt: skip


def _totals(base: str, stage: str, kind: str, windows: tuple[str, ...], what: str, unit: str) -> list[Feature]:
    return [
        Feature(f"{base}_{w}", stage, f"Sum of `value` over `{kind}` events: {what}; a missing value counts as 0.",
                w, unit, Windowed("events", "value_sum", w, (kind,)))
        for w in windows
    ]  # fmt: skip


def _rates(
    base: str, stage: str, num: tuple[str, ...], den: tuple[str, ...], windows: tuple[str, ...], what: str
) -> list[Feature]:
    return [
        Feature(f"{base}_{w}", stage, f"{what}: {_types(num)} events / {_types(den)} events. Not capped at 1.",
                w, "ratio", Ratio(Windowed("events", "n", w, num), Windowed("events", "n", w, den)),
                if_undefined=f"NaN when there was no {_types(den)} event in the window")
        for w in windows
    ]  # fmt: skip


def _trend(base: str, measure_part: Part, measure: str, kinds: tuple[str, ...], what: str) -> Feature:
    return Feature(
        f"{base}_trend_30d", "trend",
        f"Change of {what} in the last 30 days against the 30 days before: (last - prev) / (last + prev), "
        "from -1 (stopped) to 1 (started).",
        "last 30d vs days 30-60", "ratio",
        Trend(Windowed(measure_part, measure, "30d", kinds), Windowed(measure_part, measure, "prev30d", kinds)),
        if_undefined="NaN when both periods are empty",
    )  # fmt: skip


def _sessions(measure: str, w: str) -> Windowed:
    return Windowed("sessions", measure, w)


def _ev(measure: str, w: str, *kinds: str) -> Windowed:
    return Windowed("events", measure, w, kinds)


_W4 = ("7d", "30d", "90d", "365d")
_NO_SESSIONS = "NaN when no session started in the window"

AWARENESS: list[Feature] = [
    *[Feature(f"sessions_{w}", "awareness",
              "Sessions (distinct non-null `session_id`) whose first event is in the window.",
              w, "count", _sessions("n", w)) for w in _W4],
    *_counts("landing_page_views", "awareness", ("landing_page_view",), ("30d", "90d"), "campaign landing page views"),
    *[Feature(f"bounce_rate_{w}", "awareness",
              "Share of the window's sessions with a `bounce` event (as of the cutoff).",
              w, "ratio", Ratio(_sessions("bounced", w), _sessions("n", w)), if_undefined=_NO_SESSIONS)
      for w in ("30d", "90d")],
    *[Feature(f"session_minutes_mean_{w}", "awareness",
              "Mean session length: time from a session's first to its last event at or before the cutoff, over "
              "the window's sessions; a single-event session lasts 0.",
              w, "minutes", Ratio(_sessions("duration_us", w), _sessions("n", w), 1 / 60e6),
              if_undefined=_NO_SESSIONS) for w in ("30d", "90d")],
    *[Feature(f"page_seconds_mean_{w}", "awareness",
              "Mean time on page: mean `value` of `page_view` events that carry one.",
              w, "seconds", Ratio(_ev("value_sum", w, "page_view"), _ev("value_n", w, "page_view")),
              if_undefined="NaN when no page view with a value") for w in ("30d", "90d")],
    *_counts("ad_impressions", "awareness", ("ad_impression",), ("30d", "90d"), "ads shown"),
    *_counts("ad_clicks", "awareness", ("ad_click",), ("30d", "90d"), "ad clicks"),
    *_rates("ad_ctr", "awareness", ("ad_click",), ("ad_impression",), ("30d", "90d", "365d"),
            "Ad click-through rate"),
    *_counts("emails_sent", "awareness", ("email_sent",), ("30d", "90d"), "marketing emails delivered"),
    *_counts("email_opens", "awareness", ("email_open",), ("7d", "30d", "90d"), "email opens"),
    *_counts("email_clicks", "awareness", ("email_click",), ("30d", "90d"), "email link clicks"),
    *_rates("email_open_rate", "awareness", ("email_open",), ("email_sent",), ("30d", "90d", "365d"),
            "Email open rate"),
    *_rates("email_ctr", "awareness", ("email_click",), ("email_sent",), ("30d", "90d", "365d"),
            "Email click-through rate (clicks per email sent)"),
    *_counts("social_engagements", "awareness", ("social_engagement",), ("30d", "90d"), "social engagements"),
]  # fmt: skip

CONSIDERATION: list[Feature] = [
    *_counts("page_views", "consideration", ("page_view",), ("7d", "30d", "90d"), "page views"),
    *_counts("product_views", "consideration", ("product_view",), _W4, "product detail page views"),
    *_counts("searches", "consideration", ("search",), ("7d", "30d", "90d"), "on-site searches"),
    *_counts("compares", "consideration", ("compare",), ("30d", "90d"), "product comparisons"),
    *_counts("content_downloads", "consideration", ("content_download",), ("30d", "90d", "365d"),
             "content downloads"),
    *_totals("video_seconds", "consideration", "video_view", ("30d", "90d"), "seconds of video watched", "seconds"),
    *_counts("reviews_read", "consideration", ("review_read",), ("30d", "90d"), "times reviews were read"),
    *[Feature(f"active_days_{w}", "consideration",
              "Return visits: distinct UTC calendar days whose first activity event (any customer-initiated "
              "type) falls in the window.", w, "days", Windowed("active_days", "n", w))
      for w in (*_W4, "lifetime")],
]  # fmt: skip

_NO_REVENUE = "NaN when revenue in the window is 0"
PURCHASE: list[Feature] = [
    *_counts("cart_adds", "purchase", ("add_to_cart",), ("7d", "30d", "90d"), "items added to a cart"),
    *_counts("cart_removes", "purchase", ("remove_from_cart",), ("30d",), "items removed from a cart"),
    *_counts("checkout_starts", "purchase", ("checkout_start",), ("7d", "30d", "90d"), "checkouts started"),
    *[Feature(f"cart_abandonment_rate_{w}", "purchase",
              f"Share of cart adds not followed by a `purchase` within {CART_RESOLUTION_HOURS} hours (at or after "
              f"the add; across midnight too). Only adds whose {CART_RESOLUTION_HOURS} hours have passed by the "
              f"cutoff count, so the window is (T - {w}, T - {CART_RESOLUTION_HOURS}h] by add time.",
              w, "ratio", Ratio(Windowed("carts", "abandoned", w), Windowed("carts", "n", w)),
              if_undefined="NaN when no resolved cart add in the window") for w in ("30d", "90d", "365d")],
    *[Feature(f"session_conversion_rate_{w}", "purchase",
              "Share of the window's sessions with a `purchase` event in the session (as of the cutoff).",
              w, "ratio", Ratio(_sessions("converted", w), _sessions("n", w)), if_undefined=_NO_SESSIONS)
      for w in ("30d", "90d", "365d")],
    *_counts("orders", "purchase", ("purchase",), (*_W4, "lifetime"), "orders"),
    *_totals("revenue", "purchase", "purchase", ("30d", "90d", "365d", "lifetime"), "order amounts (gross of refunds)",
             "currency"),
    *[Feature(f"aov_{w}", "purchase", "Average order value: revenue / orders.", w, "currency",
              Ratio(_ev("value_sum", w, "purchase"), _ev("n", w, "purchase")),
              if_undefined="NaN when no order in the window") for w in ("90d", "365d", "lifetime")],
    *_counts("refunds", "purchase", ("refund",), ("90d", "365d", "lifetime"), "refunds or cancellations"),
    *_totals("refund_amount", "purchase", "refund", ("90d", "365d", "lifetime"), "refunded amounts", "currency"),
    *[Feature(f"refund_rate_{w}", "purchase",
              "Refunded amount / revenue in the same window; above 1 when refunds exceed the orders in the window "
              "(e.g. a refund of an older order).", w, "ratio",
              Ratio(_ev("value_sum", w, "refund"), _ev("value_sum", w, "purchase")), if_undefined=_NO_REVENUE)
      for w in ("365d", "lifetime")],
    *[Feature(f"net_revenue_{w}", "purchase", "Revenue minus refunded amount; negative when refunds exceed it.",
              w, "currency", Difference(_ev("value_sum", w, "purchase"), _ev("value_sum", w, "refund")))
      for w in ("365d", "lifetime")],
]  # fmt: skip

_NEVER_BOUGHT = "NaN when the customer never bought"
RETENTION: list[Feature] = [
    Feature("days_since_last_purchase", "retention", "Days from the last `purchase` to the cutoff (fractional).",
            "lifetime", "days", Special("days_since_last_purchase"), ages=True, if_undefined=_NEVER_BOUGHT),
    Feature("days_since_first_purchase", "retention", "Days from the first `purchase` to the cutoff.",
            "lifetime", "days", Special("days_since_first_purchase"), ages=True, if_undefined=_NEVER_BOUGHT),
    Feature("days_since_last_activity", "retention",
            "Days from the last customer-initiated event (anything but "
            f"{_types(NOT_ACTIVITY)}) to the cutoff.", "lifetime", "days", Special("days_since_last_activity"),
            ages=True, if_undefined="NaN when the customer only ever received marketing"),
    Feature("tenure_days", "retention",
            "Days from the customer's first event (or `first_seen` in the customers table, when earlier and not "
            "after the cutoff) to the cutoff.", "lifetime", "days", Special("tenure_days"), ages=True),
    Feature("purchase_days_lifetime", "retention", "Distinct UTC calendar days with a `purchase`.", "lifetime",
            "days", Special("purchase_days_lifetime")),
    Feature("orders_per_30d", "retention",
            "Purchase frequency: lifetime orders per 30 days of tenure, tenure floored at 30 days "
            "(recomputed when aged).", "lifetime", "orders / 30 days", Special("orders_per_30d")),
    Feature("interpurchase_days_mean", "retention",
            "Mean number of days between consecutive distinct purchase days (UTC calendar days; several orders on "
            "one day are one purchase day).", "lifetime", "days", Special("interpurchase_days_mean"),
            if_undefined="NaN with fewer than 2 purchase days"),
    Feature("interpurchase_days_std", "retention",
            "Sample standard deviation of the inter-purchase intervals above.", "lifetime", "days",
            Special("interpurchase_days_std"), if_undefined="NaN with fewer than 3 purchase days (2 intervals)"),
    Feature("purchase_recency_ratio", "retention",
            "days_since_last_purchase / interpurchase_days_mean: above 1 means overdue by the customer's own "
            "rhythm (recomputed when aged).", "lifetime", "ratio", Special("purchase_recency_ratio"),
            if_undefined="NaN when interpurchase_days_mean is NaN"),
    Feature("repeat_purchaser", "retention", "1 when the customer has 2 or more orders, else 0.", "lifetime",
            "flag", Special("repeat_purchaser")),
    Feature("cancelled_since_last_purchase", "retention",
            "1 when a `subscription_cancel` happened at or after the last purchase (or with no purchase), else 0.",
            "lifetime", "flag", Special("cancelled_since_last_purchase")),
    Feature("nps_last", "retention",
            "`value` of the latest `nps_response` with a value (the largest of answers at the same instant).",
            "lifetime", "score 0-10", Special("nps_last"), if_undefined="NaN without an NPS answer"),
    Feature("nps_mean_lifetime", "retention", "Mean `value` of `nps_response` events with a value.", "lifetime",
            "score 0-10", Ratio(_ev("value_sum", "lifetime", "nps_response"),
                                _ev("value_n", "lifetime", "nps_response")),
            if_undefined="NaN without an NPS answer"),
    *_counts("nps_responses", "retention", ("nps_response",), ("lifetime",), "NPS survey answers"),
    *_counts("support_tickets", "retention", ("support_ticket",), ("30d", "90d", "365d"), "support tickets opened"),
    *_counts("referrals", "retention", ("referral",), ("365d", "lifetime"), "referrals"),
    *_counts("reviews_written", "retention", ("review_written",), ("365d", "lifetime"), "reviews written"),
    *_counts("logins", "retention", ("login",), ("7d", "30d", "90d"), "logins"),
    *_counts("subscription_cancels", "retention", ("subscription_cancel",), ("lifetime",),
             "subscription or membership cancellations"),
]  # fmt: skip

CHANNEL: list[Feature] = [
    *[Feature(f"activity_events_{w}", "channel",
              f"Customer-initiated events (every type but {_types(NOT_ACTIVITY)}).", w, "count",
              Windowed("events", "n", w, ACTIVITY_TYPES)) for w in ("7d", "30d", "90d")],
    *[Feature(f"channel_share_{ch}_90d", "channel", f"Share of the window's activity events on channel `{ch}`.",
              "90d", "share", ChannelShare(ch), if_undefined="NaN without activity in the window")
      for ch in CHANNELS],
    Feature("channels_used_90d", "channel", "Number of distinct channels with activity.", "90d", "count",
            Special("channels_used_90d")),
]  # fmt: skip

TREND: list[Feature] = [
    _trend("activity", "events", "n", ACTIVITY_TYPES, "activity events"),
    _trend("sessions", "sessions", "n", (), "sessions started"),
    _trend("product_views", "events", "n", ("product_view",), "product views"),
    _trend("cart_adds", "events", "n", ("add_to_cart",), "cart adds"),
    _trend("orders", "events", "n", ("purchase",), "orders"),
    _trend("revenue", "events", "value_sum", ("purchase",), "revenue"),
    _trend("email_opens", "events", "n", ("email_open",), "email opens"),
]

CONTACT: list[Feature] = [
    *_counts("contacts", "contact", ("marketing_contact",), ("7d", "30d", "90d"), "marketing contacts made"),
    Feature("days_since_last_contact", "contact", "Days from the latest `marketing_contact` to the cutoff.",
            "lifetime", "days", Special("days_since_last_contact"), ages=True,
            if_undefined="NaN when never contacted"),
    Feature("last_contact_action", "contact",
            "`properties.action` of the latest `marketing_contact` (`unknown` when it has none; of contacts at the "
            "same instant, the alphabetically last action).", "lifetime", "category",
            Special("last_contact_action"), kind="categorical", if_undefined="missing (None) when never contacted"),
    Feature("email_opt_in", "contact",
            "Email marketing consent at the cutoff: 1 opted in, 0 opted out. The `value` of the latest "
            "`consent_change` event on channel `email` at or before the cutoff (an opt-out wins over an opt-in at "
            "the same instant); without one, the customers table's `email_opt_in` column.", "lifetime", "flag",
            Special("email_opt_in"),
            if_undefined="NaN when unknown: no such event and no value in the customers table (the action "
                         "catalog's `consent_missing` says what unknown means)"),
]  # fmt: skip

JOURNEY: list[Feature] = [
    Feature("journey_stage", "journey", "Journey stage at the cutoff; rules in the catalog (recomputed when aged).",
            "at cutoff", "category", Special("journey_stage"), kind="categorical", if_undefined="never missing",
            categories=JOURNEY_STAGES),
]  # fmt: skip

FEATURES: tuple[Feature, ...] = (
    *AWARENESS, *CONSIDERATION, *PURCHASE, *RETENTION, *CHANNEL, *TREND, *CONTACT, *JOURNEY,
)  # fmt: skip
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
# Functions of aging features: `age_features` recomputes them rather than shifting them.
AGE_DEPENDENT: tuple[str, ...] = ("orders_per_30d", "purchase_recency_ratio", "journey_stage")


def feature_names() -> list[str]:
    return [f.name for f in FEATURES]


def numeric_features() -> list[str]:
    return [f.name for f in FEATURES if f.kind == "numeric"]


def categorical_features() -> list[str]:
    return [f.name for f in FEATURES if f.kind == "categorical"]


def aging_features() -> list[str]:
    return [f.name for f in FEATURES if f.ages]
