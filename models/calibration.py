"""Probability calibration fitted on held-out rows, serialisable to plain JSON (no pickle)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

METHODS = ("isotonic", "sigmoid", "none")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class Calibrator(BaseEstimator):
    """Maps raw scores in [0, 1] to calibrated probabilities.

    `isotonic` is a monotone step function (needs a few thousand held-out rows);
    `sigmoid` is Platt scaling on the logit of the raw score; `none` is the identity.
    With fewer than `min_rows` held-out rows or a single class, it falls back to the identity.
    """

    def __init__(self, method: str = "isotonic", min_rows: int = 200) -> None:
        self.method = method
        self.min_rows = min_rows

    def fit(self, raw: Any, y: Any) -> Calibrator:
        raw, y = np.asarray(raw, dtype=float), np.asarray(y, dtype=float)
        if self.method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}, not {self.method!r}")
        method = self.method
        if len(y) < self.min_rows or len(np.unique(y)) < 2:
            method = "none"
        self.method_ = method
        if method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=float)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=float)
        elif method == "sigmoid":
            lr = LogisticRegression(C=1e6).fit(_logit(raw).reshape(-1, 1), y.astype(int))
            self.x_ = np.asarray([float(lr.coef_[0, 0])])
            self.y_ = np.asarray([float(lr.intercept_[0])])
        else:
            self.x_ = np.asarray([], dtype=float)
            self.y_ = np.asarray([], dtype=float)
        return self

    def transform(self, raw: Any) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method_ == "isotonic":
            return np.interp(raw, self.x_, self.y_)
        if self.method_ == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.x_[0] * _logit(raw) + self.y_[0])))
        return raw

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method_, "x": self.x_.tolist(), "y": self.y_.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        cal = cls(method=data["method"])
        cal.method_ = data["method"]
        cal.x_ = np.asarray(data["x"], dtype=float)
        cal.y_ = np.asarray(data["y"], dtype=float)
        return cal
