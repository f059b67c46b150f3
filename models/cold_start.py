"""Cold start: what a customer with too little history gets instead of a model score.

A row is cold when its event count is below `min_events`, the count is missing (a
customer the feature store has never seen), or every model feature is missing. Cold rows
get the training-set mean of each output within their segment (e.g. acquisition
channel), shrunk towards the overall mean with `strength` pseudo-rows so that a segment
seen a handful of times does not produce an extreme prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

MISSING = "(missing)"


class ColdStartPrior(BaseEstimator):
    def __init__(
        self,
        min_events: int = 1,
        count_column: str | None = "active_days_lifetime",
        segment_columns: Sequence[str] = ("acquisition_channel",),
        strength: float = 20.0,
    ) -> None:
        self.min_events = min_events
        self.count_column = count_column
        self.segment_columns = segment_columns
        self.strength = strength

    def is_cold(self, X: pd.DataFrame, model_features: Sequence[str] = ()) -> np.ndarray:
        cold = np.zeros(len(X), dtype=bool)
        if self.count_column:
            if self.count_column in X.columns:
                count = pd.to_numeric(X[self.count_column], errors="coerce").to_numpy(float)
                cold |= np.isnan(count) | (count < self.min_events)
            else:
                cold |= True
        present = [c for c in model_features if c in X.columns]
        if model_features:
            cold |= X[present].isna().all(axis=1).to_numpy() if present else True
        return cold

    def _segment_keys(self, X: pd.DataFrame) -> pd.Series:
        cols = [c for c in self.segment_columns_ if c in X.columns]
        if not cols:
            return pd.Series(MISSING, index=X.index)
        parts = [X[c].astype("string").fillna(MISSING) for c in cols]
        key = parts[0]
        for p in parts[1:]:
            key = key + "|" + p
        return key

    def fit(self, X: pd.DataFrame, targets: pd.DataFrame) -> ColdStartPrior:
        """targets: one column per output (label means, or model predictions for outputs without a label)."""
        self.segment_columns_ = [c for c in self.segment_columns if c in X.columns]
        key = self._segment_keys(X)
        self.overall_ = {c: float(np.nanmean(targets[c].to_numpy(float))) for c in targets.columns}
        self.priors_: dict[str, dict[str, float]] = {}
        for col in targets.columns:
            vals = targets[col].to_numpy(float)
            ok = ~np.isnan(vals)
            frame = pd.DataFrame({"key": key.to_numpy()[ok], "v": vals[ok]})
            agg = frame.groupby("key")["v"].agg(["sum", "count"])
            shrunk = (agg["sum"] + self.strength * self.overall_[col]) / (agg["count"] + self.strength)
            self.priors_[col] = {str(k): float(v) for k, v in shrunk.items()}
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        key = self._segment_keys(X)
        out = {}
        for col, table in self.priors_.items():
            out[col] = key.map(table).astype(float).fillna(self.overall_[col]).to_numpy()
        return pd.DataFrame(out, index=X.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_events": self.min_events,
            "count_column": self.count_column,
            "segment_columns": list(self.segment_columns_),
            "strength": self.strength,
            "overall": self.overall_,
            "priors": self.priors_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColdStartPrior:
        prior = cls(data["min_events"], data["count_column"], tuple(data["segment_columns"]), data["strength"])
        prior.segment_columns_ = list(data["segment_columns"])
        prior.overall_ = dict(data["overall"])
        prior.priors_ = {k: dict(v) for k, v in data["priors"].items()}
        return prior
