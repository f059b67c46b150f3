"""Cutoffs and windows. Every feature, label and split takes an explicit cutoff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd


def to_utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    """Parse a cutoff; naive values are taken as UTC. Raises ValueError on nonsense."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a timestamp: {value!r}") from exc
    if ts is pd.NaT or pd.isna(ts):
        raise ValueError(f"not a timestamp: {value!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").as_unit("us")


@dataclass(frozen=True)
class Window:
    """The half-open interval (cutoff - days, cutoff]: events exactly at the cutoff count."""

    cutoff: pd.Timestamp
    days: int

    @property
    def start(self) -> pd.Timestamp:
        return self.cutoff - timedelta(days=self.days)

    def contains(self, ts: pd.Timestamp) -> bool:
        return bool(self.start < ts <= self.cutoff)
