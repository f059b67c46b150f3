"""Honest baselines, fitted on the same rows as the LightGBM models.

- `LogisticBaseline`: median imputation + scaling (+ one-hot categoricals) + logistic regression.
- `LinearValueBaseline`: the same pipeline with ridge regression, for value tasks.
- `RecencyRule`: "no purchase in n days" with n tuned on the training rows.
- `BTYDBaseline`: BG/NBD probabilities (or expected value) from frequency / recency / T columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.btyd import BetaGeoModel


def _linear_pipeline(numeric: list[str], categorical: list[str], final: Any) -> Pipeline:
    transformers: list[tuple[str, Any, list[str]]] = [
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), numeric)
    ]
    if categorical:
        transformers.append(
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=False),
                ),
                categorical,
            )
        )
    return Pipeline([("prep", ColumnTransformer(transformers)), ("model", final)])


def _prep_frame(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = {c: pd.to_numeric(X[c], errors="coerce").astype(float) if c in X.columns else np.nan for c in numeric}
    for c in categorical:
        out[c] = X[c].astype("object").where(X[c].notna(), "missing") if c in X.columns else "missing"
    return pd.DataFrame(out, index=X.index)


class LogisticBaseline(BaseEstimator, ClassifierMixin):
    """Logistic regression on the same features as LightGBM (impute + scale pipeline)."""

    def __init__(self, features: Sequence[str] | None = None, categorical: Sequence[str] = (), C: float = 1.0) -> None:
        self.features = features
        self.categorical = categorical
        self.C = C

    def fit(self, X: pd.DataFrame, y: Any) -> LogisticBaseline:
        cols = list(self.features) if self.features is not None else list(X.columns)
        self.categorical_ = [c for c in self.categorical if c in cols]
        self.numeric_ = [c for c in cols if c not in self.categorical_]
        self.pipeline_ = _linear_pipeline(self.numeric_, self.categorical_, LogisticRegression(C=self.C, max_iter=2000))
        self.pipeline_.fit(_prep_frame(X, self.numeric_, self.categorical_), np.asarray(y, dtype=int))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict_proba(_prep_frame(X, self.numeric_, self.categorical_))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


class LinearValueBaseline(BaseEstimator, RegressorMixin):
    """Ridge regression on the same features (impute + scale pipeline), predictions floored at 0."""

    def __init__(
        self, features: Sequence[str] | None = None, categorical: Sequence[str] = (), alpha: float = 1.0
    ) -> None:
        self.features = features
        self.categorical = categorical
        self.alpha = alpha

    def fit(self, X: pd.DataFrame, y: Any) -> LinearValueBaseline:
        cols = list(self.features) if self.features is not None else list(X.columns)
        self.categorical_ = [c for c in self.categorical if c in cols]
        self.numeric_ = [c for c in cols if c not in self.categorical_]
        self.pipeline_ = _linear_pipeline(self.numeric_, self.categorical_, Ridge(alpha=self.alpha))
        self.pipeline_.fit(_prep_frame(X, self.numeric_, self.categorical_), np.asarray(y, dtype=float))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(self.pipeline_.predict(_prep_frame(X, self.numeric_, self.categorical_)), 0, None)


class RecencyRule(BaseEstimator, ClassifierMixin):
    """The rule "no <event> in the last n days" on one days-since column, n tuned on train.

    `positive_when_recent=False` (churn): the rule fires when days_since > n.
    `positive_when_recent=True` (purchase): it fires when days_since <= n.
    n maximises Youden's J (true positive rate - false positive rate) over the candidate
    values; the probabilities are the training positive rates on either side of n, so
    the rule is a two-level score (missing days_since = never = the "old" side).
    """

    def __init__(
        self,
        column: str = "days_since_last_purchase",
        positive_when_recent: bool = False,
        candidates: Sequence[int] = (7, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365),
    ) -> None:
        self.column = column
        self.positive_when_recent = positive_when_recent
        self.candidates = candidates

    def _fires(self, X: pd.DataFrame, n: float) -> np.ndarray:
        days = pd.to_numeric(X[self.column], errors="coerce").to_numpy(float) if self.column in X.columns else None
        if days is None:
            return np.zeros(len(X), dtype=bool)
        days = np.where(np.isnan(days), np.inf, days)
        return days <= n if self.positive_when_recent else days > n

    def fit(self, X: pd.DataFrame, y: Any) -> RecencyRule:
        y = np.asarray(y, dtype=int)
        pos, neg = max(y.sum(), 1), max((1 - y).sum(), 1)
        best, best_j = float(self.candidates[0]), -np.inf
        for n in self.candidates:
            fires = self._fires(X, n)
            j = (fires & (y == 1)).sum() / pos - (fires & (y == 0)).sum() / neg
            if j > best_j:
                best, best_j = float(n), j
        self.n_days_ = best
        fires = self._fires(X, best)
        base = float(y.mean()) if len(y) else 0.0
        self.rate_fires_ = float(y[fires].mean()) if fires.any() else base
        self.rate_quiet_ = float(y[~fires].mean()) if (~fires).any() else base
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.where(self._fires(X, self.n_days_), self.rate_fires_, self.rate_quiet_)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._fires(X, self.n_days_).astype(int)


class BTYDBaseline(BaseEstimator):
    """BG/NBD fitted by maximum likelihood on the training rows' frequency / recency / T.

    `target`: "purchase" -> P(any purchase within horizon_days); "churn" -> 1 - that;
    "value" -> expected purchases x the row's average order value column (`value_column`).
    Rows without a purchase summary get the training base rate (classifiers) or 0 (value).
    """

    def __init__(
        self,
        horizon_days: int = 90,
        target: str = "purchase",
        summary_columns: Sequence[str] = ("btyd_frequency", "btyd_recency", "btyd_T"),
        value_column: str | None = None,
    ) -> None:
        self.horizon_days = horizon_days
        self.target = target
        self.summary_columns = summary_columns
        self.value_column = value_column

    def _summary(self, X: pd.DataFrame) -> pd.DataFrame:
        cols = list(self.summary_columns)
        return pd.DataFrame(
            {k: pd.to_numeric(X[c], errors="coerce") for k, c in zip(("frequency", "recency", "T"), cols, strict=True)}
        )

    def fit(self, X: pd.DataFrame, y: Any = None) -> BTYDBaseline:
        self.model_ = BetaGeoModel().fit(self._summary(X))
        self.fallback_ = float(np.nanmean(np.asarray(y, dtype=float))) if y is not None and len(y) else 0.0
        self.classes_ = np.array([0, 1])
        return self

    def score_rows(self, X: pd.DataFrame) -> np.ndarray:
        summary = self._summary(X)
        if self.target == "value":
            n = self.model_.expected_purchases(summary, self.horizon_days)
            aov = pd.to_numeric(X[self.value_column], errors="coerce").to_numpy(float) if self.value_column else 1.0
            return np.nan_to_num(n * aov, nan=0.0)
        p = self.model_.p_purchase(summary, self.horizon_days)
        p = np.where(np.isnan(p), np.nan, p if self.target == "purchase" else 1 - p)
        return np.where(np.isnan(p), self.fallback_, p)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.score_rows(X)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.score_rows(X)
