"""Request and response schemas of the scoring API (pydantic v2, closed and bounded)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.contract import CHANNELS, EVENT_TYPE_LIST

TASKS = ("churn", "next_purchase", "conversion", "clv")
Task = Literal["churn", "next_purchase", "conversion", "clv"]
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
MAX_IDS = 1_000
MAX_EVENTS = 10_000
MAX_INLINE_EVENTS = 5_000


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreRequest(Closed):
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=MAX_IDS, description="Customers to score.")
    tasks: list[Task] | None = Field(default=None, max_length=4, description="Tasks to score; omitted: every champion.")
    explain: bool = Field(default=False, description="Add the top reason codes per task.")
    actions: bool = Field(default=True, description="Add the ranked next-best actions.")


class Reason(Closed):
    """A reason code: a feature, what it says in plain words, and its signed contribution to the score."""

    feature: str = Field(description="Feature name (docs/features.md).")
    text: str = Field(description='Plain words, e.g. "no purchase in 74 days".')
    contribution: float = Field(description="Signed contribution to the raw score (log-odds for probabilities).")


class ActionRecommendation(Closed):
    """A next-best action, ranked by expected incremental value (docs/actions.md)."""

    action: str = Field(description="Action id from the catalog.")
    expected_incremental_value: float = Field(description="(P(outcome|action) - P(outcome|no action)) x value - cost.")
    uplift: float | None = Field(default=None, description="Estimated P(outcome | action) - P(outcome | no action).")
    p_base: float | None = Field(default=None, description="Estimated P(outcome | no action).")
    value: float | None = Field(default=None, description="Value of the targeted outcome.")
    cost: float | None = Field(default=None, description="Cost of one contact.")
    reason: str = Field(description="Why, in plain words.")


class TaskScore(Closed):
    """One task's answer for one customer."""

    score: float | None = Field(
        default=None, description="Calibrated probability (churn, next_purchase at the main horizon, conversion) "
        "or predicted value (clv)."
    )  # fmt: skip
    percentile: float | None = Field(default=None, description="Percentile of the score in the scored population.")
    horizons: dict[str, float] | None = Field(default=None, description='Probability per horizon, e.g. {"7d": 0.1}.')
    expected_days: float | None = Field(default=None, description="Expected days to the next purchase.")
    model_version: str | None = Field(default=None, description="Registered model version that answered.")
    reasons: list[Reason] | None = Field(default=None, description="Top reasons (with explain).")
    eligible: bool = Field(default=True, description="False when the task does not apply (e.g. conversion for buyers).")


class CustomerScore(Closed):
    customer_id: str
    stage: str | None = Field(description="Journey stage (docs/features.md, journey_stage).")
    cold_start: bool = Field(description="True when the customer has too little history: population-level scores.")
    feature_time: datetime | None = Field(description="When the customer's features were last computed.")
    degraded: bool = Field(default=False, description="Fallback features were used (online store unreachable).")
    holdout: bool = Field(default=False, description="In the global holdout group: no actions, by design.")
    scores: dict[str, TaskScore] = Field(description="Per task.")
    actions: list[ActionRecommendation] = Field(description="Ranked next-best actions (empty for the holdout).")


class ScoreResponse(Closed):
    request_id: str
    degraded: bool
    model_versions: dict[str, str]
    results: list[CustomerScore]


class EventIn(Closed):
    """One event in the event contract (docs/contract.md)."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, description="Idempotency key; omitted: derived from the event's content."
    )
    customer_id: CustomerId
    event_time: datetime = Field(description="ISO 8601 with a time zone (naive times are read as UTC).")
    event_type: Annotated[str, StringConstraints(max_length=64)] = Field(description="One of the contract's types.")
    channel: Annotated[str, StringConstraints(max_length=32)] = Field(default="other", description="Contract channel.")
    session_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    value: float | None = Field(default=None, description="Amount for purchases and refunds; score for NPS.")
    properties: dict[str, Any] | None = Field(default=None, description="Free-form attributes, stored as JSON.")


class EventsRequest(Closed):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)
    partial: bool = Field(default=False, description="Apply the valid events and report the rest, instead of 422.")


class ItemError(Closed):
    index: int
    reason: str


class EventsResponse(Closed):
    request_id: str
    accepted: int
    duplicates: int
    rejected: int
    errors: list[ItemError]
    customers_refreshed: int
    degraded: bool = False


class InlineScoreRequest(Closed):
    customer_id: CustomerId
    events: list[EventIn] = Field(min_length=1, max_length=MAX_INLINE_EVENTS)
    as_of: datetime | None = None
    tasks: list[Task] | None = Field(default=None, max_length=4)
    explain: bool = True


class ErrorBody(Closed):
    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(Closed):
    error: ErrorBody


VOCABULARY = {"event_types": list(EVENT_TYPE_LIST), "channels": list(CHANNELS)}
