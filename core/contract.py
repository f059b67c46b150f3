"""The canonical touchpoint event: one place that says what an event is.

Everything downstream (validation, the event store, features, the API schema,
the docs) reads the vocabulary and the Arrow schema from here.
"""

from __future__ import annotations

import pyarrow as pa

STAGES: tuple[str, ...] = ("awareness", "consideration", "purchase", "retention")

# Event types per journey stage, with a one-line meaning each (used for the docs).
EVENT_TYPES: dict[str, dict[str, str]] = {
    "awareness": {
        "ad_impression": "an ad was shown to the customer",
        "ad_click": "the customer clicked an ad",
        "email_sent": "a marketing email was delivered",
        "email_open": "the customer opened an email",
        "email_click": "the customer clicked a link in an email",
        "social_engagement": "a like, share or comment on a social post",
        "landing_page_view": "the first page of a visit from a campaign",
        "session_start": "a visit (web or app session) began",
        "bounce": "a visit ended after a single page",
    },
    "consideration": {
        "page_view": "any page view; value = seconds on page",
        "product_view": "a product detail page view",
        "search": "an on-site search",
        "compare": "a product comparison",
        "content_download": "a guide, whitepaper or brochure download",
        "video_view": "a video watched; value = seconds watched",
        "review_read": "the customer read product reviews",
    },
    "purchase": {
        "add_to_cart": "an item added to the cart",
        "remove_from_cart": "an item removed from the cart",
        "checkout_start": "checkout began",
        "purchase": "an order; value = order amount (>= 0)",
        "refund": "a refund or cancellation; value = refunded amount (>= 0)",
    },
    "retention": {
        "login": "the customer logged in",
        "support_ticket": "a support ticket was opened",
        "nps_response": "an NPS survey answer; value = score 0-10",
        "review_written": "the customer wrote a review",
        "referral": "the customer referred someone",
        "subscription_cancel": "a subscription or membership was cancelled",
        "marketing_contact": "a contact the business made; properties.action names it",
        "consent_change": "a marketing consent was given or withdrawn; value = 1 opt-in, 0 opt-out; "
        "channel = the channel it concerns (`email` feeds the `email_opt_in` feature)",
    },
}

EVENT_TYPE_STAGE: dict[str, str] = {etype: stage for stage, types in EVENT_TYPES.items() for etype in types}
EVENT_TYPE_LIST: tuple[str, ...] = tuple(EVENT_TYPE_STAGE)

# Types that are not customer activity: contacts the business makes, and consent records (an
# opt-out is not engagement). Activity features, churn labels and the report's funnel skip them.
NOT_ACTIVITY: tuple[str, ...] = ("ad_impression", "email_sent", "marketing_contact", "consent_change")

CHANNELS: tuple[str, ...] = ("web", "app", "email", "social", "ads", "store", "support", "other")

# Types whose `value` has a meaning and a unit.
VALUE_UNITS: dict[str, str] = {
    "purchase": "currency",
    "refund": "currency",
    "video_view": "seconds",
    "page_view": "seconds",
    "nps_response": "score 0-10",
    "consent_change": "1 opt-in, 0 opt-out",
}

# Stored schema of the event store. Timestamps are microsecond UTC: Feast's
# DuckDB offline store cannot read nanosecond tz-aware Parquet.
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("properties", pa.string()),  # a JSON object, serialised
    ]
)
REQUIRED_FIELDS: tuple[str, ...] = ("customer_id", "event_time", "event_type")

CUSTOMER_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("first_seen", pa.timestamp("us", tz="UTC")),
        pa.field("country", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("acquisition_channel", pa.string()),
    ]
)
# Optional columns of the customers table, written only when the input has them. `email_opt_in`:
# the customer's email consent as known when the table was loaded (true, false, or null = unknown);
# a `consent_change` event on channel `email` at or before a cutoff wins over it.
CUSTOMER_OPTIONAL_FIELDS: tuple[pa.Field, ...] = (pa.field("email_opt_in", pa.bool_()),)


def contract_markdown() -> str:
    """The event contract as Markdown, generated from the definitions above."""
    lines = [
        "| field | type | required | meaning |",
        "|---|---|---|---|",
        "| event_id | string | no | stable id; derived from the other fields when absent |",
        "| customer_id | string | yes | who |",
        "| event_time | timestamp with time zone | yes | when; stored as UTC (microseconds) |",
        "| event_type | string | yes | one of the vocabulary below |",
        f"| channel | string | no (default `other`) | one of {', '.join(f'`{c}`' for c in CHANNELS)} |",
        "| session_id | string | no | visit identifier |",
        "| value | float | no | amount for purchase/refund, seconds for video_view/page_view, 0-10 for nps_response, "
        "1/0 (opt-in/opt-out) for consent_change |",
        "| properties | JSON object | no | free-form; `properties.action` names a marketing_contact |",
        "",
    ]
    for stage, types in EVENT_TYPES.items():
        lines.append(f"**{stage}**")
        lines.append("")
        for name, meaning in types.items():
            lines.append(f"- `{name}`: {meaning}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m core.contract > docs/contract.md
    print("# The event contract\n\nGenerated from core/contract.py by `python -m core.contract`.\n")
    print(contract_markdown())
