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
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=MAX_IDS)
    tasks: list[Task] | None = Field(default=None, max_length=4)
    explain: bool = False
    actions: bool = True


class Reason(Closed):
    feature: str
    text: str
    contribution: float


class ActionRecommendation(Closed):
    action: str
    expected_incremental_value: float
    uplift: float | None = None
    p_base: float | None = None
    value: float | None = None
    cost: float | None = None
    reason: str


class TaskScore(Closed):
    score: float | None = None
    percentile: float | None = None
    horizons: dict[str, float] | None = None
    expected_days: float | None = None
    model_version: str | None = None
    reasons: list[Reason] | None = None
    eligible: bool = True


class CustomerScore(Closed):
    customer_id: str
    stage: str | None
    cold_start: bool
    feature_time: datetime | None
    degraded: bool = False
    holdout: bool = False
    scores: dict[str, TaskScore]
    actions: list[ActionRecommendation]


class ScoreResponse(Closed):
    request_id: str
    degraded: bool
    model_versions: dict[str, str]
    results: list[CustomerScore]


class EventIn(Closed):
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    customer_id: CustomerId
    event_time: datetime
    event_type: Annotated[str, StringConstraints(max_length=64)]
    channel: Annotated[str, StringConstraints(max_length=32)] = "other"
    session_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    value: float | None = None
    properties: dict[str, Any] | None = None


class EventsRequest(Closed):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)
    partial: bool = False


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
