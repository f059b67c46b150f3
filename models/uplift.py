"""Uplift estimators and uplift metrics (pure numpy / LightGBM, no I/O).

`UpliftModel` estimates, for one binary outcome (e.g. "a purchase within 30 days") and
several treatment arms (marketing actions) against a control arm (no contact), the
outcome probability under each arm: `predict_outcomes(X)` is (n, 1 + arms) with column 0
the control. `predict_uplift(X)` is the difference to the control, (n, arms).

Learners (`learner=`):
- "t": one LightGBM per arm and one for the control (T-learner).
- "x": the T-learner's outcome models, then per arm two LightGBM regressions of the imputed
  effects (treated: y - mu0(x); controls: mu_a(x) - y) blended by the arm's share of the
  rows (X-learner, Kuenzel et al. 2019). Better when arms are small next to the control.
- "s": one LightGBM with the arm as a categorical feature (S-learner).
- "lift": a LightGBM for the control outcome p0(x), and per arm a proportional-hazards lift
  theta per segment (a categorical column, e.g. the journey stage): P(outcome | arm) =
  1 - (1 - p0(x)) ** exp(theta). Each theta is a penalised maximum-likelihood estimate, the
  segment's shrunk towards the arm's pooled one (`lift_prior_sd`, `segment_prior_sd` on the
  log-hazard scale). Few parameters, so it stays stable when arms are small and effects are a
  few points of probability, where differences of two flexible models are mostly noise.
  With `lift_z` > 0 predictions use theta - lift_z x its standard error, a one-sided lower bound
  against the winner's curse (the noisiest estimate winning the argmax over arms); 0 (the
  default) uses the estimate, which did better on the simulator.

Logged contacts are rarely random: with `propensity` (the logged probability of the
treatment a row received) treated rows are weighted by 1 / propensity, clipped at
`max_weight` and normalised to mean 1 within each arm, so the arm models describe the
whole population instead of the customers the old policy liked to target. Arms with fewer
than `min_arm_rows` rows (or a single outcome value) are not modelled: they predict the
control and report n_treated_ = 0 so a policy falls back to its prior.

The metrics take (y, treated, score) arrays: the Qini curve and coefficient, the area under
the uplift curve, uplift at k and uplift by decile. Off-policy estimators (IPS, SNIPS,
doubly robust) take per-row rewards, propensities and model predictions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from models.columns import to_number
from models.estimators import booster_predict, encode_frame, learn_categories

ARM_FEATURE = "__arm"
SMALL_ROWS = 32  # up to this many rows (an API request) features are encoded row by row, without pandas per column
_NAN = float("nan")


class UpliftModel(BaseEstimator):
    """Multi-arm uplift for one binary outcome. See the module docstring."""

    _category_codes: dict[str, dict[str, float]] | None = None  # category -> code per column, for `_encode_small`

    def __init__(
        self,
        learner: str = "t",
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        control: str = "no_action",
        n_estimators: int = 150,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        feature_fraction: float = 0.9,
        lambda_l2: float = 1.0,
        max_weight: float = 20.0,
        min_arm_rows: int = 200,
        segment: str | None = None,
        lift_prior_sd: float = 0.5,
        segment_prior_sd: float = 0.5,
        lift_z: float = 0.0,
        prior_theta: dict[str, float] | None = None,
        num_threads: int = 2,
        seed: int = 0,
    ) -> None:
        self.learner = learner
        self.features = features
        self.categorical = categorical
        self.control = control
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.lambda_l2 = lambda_l2
        self.max_weight = max_weight
        self.min_arm_rows = min_arm_rows
        self.segment = segment
        self.lift_prior_sd = lift_prior_sd
        self.segment_prior_sd = segment_prior_sd
        self.lift_z = lift_z
        self.prior_theta = prior_theta
        self.num_threads = num_threads
        self.seed = seed

    # ---------------------------------------------------------------- fitting

    def _params(self, objective: str) -> dict[str, Any]:
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def _train(self, X: pd.DataFrame, y: np.ndarray, w: np.ndarray, objective: str = "binary") -> lgb.Booster:
        data = lgb.Dataset(X, label=y, weight=w, free_raw_data=True)
        return lgb.train(self._params(objective), data, num_boost_round=self.n_estimators)

    def _encode(self, X: pd.DataFrame) -> pd.DataFrame:
        if 0 < len(X) <= SMALL_ROWS and X.columns.is_unique:
            return self._encode_small(X)
        return encode_frame(X, self.feature_names_, self.categories_)

    def _encode_small(self, X: pd.DataFrame) -> pd.DataFrame:
        """`encode_frame` for a few rows: one object conversion of the frame, then plain Python per cell."""
        names = self.feature_names_
        lookup: dict[str, dict[str, float]] | None = getattr(self, "_category_codes", None)
        if lookup is None:
            lookup = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in self.categories_.items()}
            self._category_codes = lookup
        positions = X.columns.get_indexer(names).tolist()
        values = X.to_numpy(dtype=object)
        out = np.full((len(X), len(names)), np.nan, dtype=np.float32)
        for r in range(len(X)):
            row = values[r]
            cells = [_NAN] * len(names)
            for i, (name, p) in enumerate(zip(names, positions, strict=True)):
                if p < 0:
                    continue
                v = row[p]
                codes = lookup.get(name)
                if codes is None:
                    cells[i] = to_number(v)
                elif not (v is None or v is pd.NA or (isinstance(v, float) and v != v)):
                    cells[i] = codes.get(str(v), _NAN)
            out[r] = cells
        return pd.DataFrame(out, columns=names, index=X.index)

    def _weights(
        self, arm_codes: np.ndarray, propensity: np.ndarray | None, sample_weight: np.ndarray | None
    ) -> np.ndarray:
        n = len(arm_codes)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float).copy()
        if propensity is not None:
            p = np.asarray(propensity, dtype=float)
            ipw = np.where(np.isfinite(p) & (p > 0), 1.0 / np.clip(p, 1e-12, 1.0), 1.0)
            w *= np.minimum(ipw, self.max_weight)
        for code in np.unique(arm_codes):  # normalise within each arm: weights shape, not size
            sel = arm_codes == code
            w[sel] /= max(w[sel].mean(), 1e-12)
        return w

    def fit(
        self,
        X: pd.DataFrame,
        treatment: Any,
        y: Any,
        propensity: Any = None,
        sample_weight: Any = None,
    ) -> UpliftModel:
        """`treatment`: arm name per row (the control is `control`); `y`: 0/1 outcome;
        `propensity`: the logged P(the row's treatment) (NaN or absent: weight 1)."""
        if self.learner not in ("t", "x", "s", "lift"):
            raise ValueError(f"learner must be 't', 'x', 's' or 'lift', not {self.learner!r}")
        treatment = np.asarray(pd.Series(treatment).astype(str).to_numpy(), dtype=object)
        y = np.asarray(y, dtype=float)
        if len(treatment) != len(X) or len(y) != len(X):
            raise ValueError("X, treatment and y must have the same number of rows")
        if not (treatment == self.control).any():
            raise ValueError(f"no control rows (treatment == {self.control!r})")
        cols = list(self.features) if self.features is not None else [str(c) for c in X.columns]
        self.feature_names_ = cols
        self.categories_ = learn_categories(X, [c for c in self.categorical if c in cols])
        self._category_codes = None
        arms = sorted(set(treatment.tolist()) - {self.control})
        self.arms_ = list(arms)
        codes = np.full(len(treatment), -1, dtype=np.int64)
        for i, a in enumerate(arms):
            codes[treatment == a] = i
        prop = None if propensity is None else np.asarray(propensity, dtype=float)
        w = self._weights(codes, prop, None if sample_weight is None else np.asarray(sample_weight, dtype=float))
        enc = self._encode(X)
        self.arm_rows_ = {a: int((codes == i).sum()) for i, a in enumerate(arms)}
        self.control_rows_ = int((codes == -1).sum())
        self.base_rate_ = float(y[codes == -1].mean())
        fitted = [
            a for i, a in enumerate(arms)
            if self.arm_rows_[a] >= self.min_arm_rows and 0 < y[codes == i].mean() < 1
        ]  # fmt: skip
        self.n_treated_ = {a: (self.arm_rows_[a] if a in fitted else 0) for a in arms}
        self.boosters_: dict[str, lgb.Booster] = {}
        if self.learner == "s":
            self._fit_s(enc, codes, y, w, fitted)
        elif self.learner == "lift":
            self._fit_lift(X, enc, codes, y, w, fitted)
        else:
            self._fit_t(enc, codes, y, w, fitted)
            if self.learner == "x":
                self._fit_x(enc, codes, y, w, fitted)
        return self

    def _fit_t(self, enc: pd.DataFrame, codes: np.ndarray, y: np.ndarray, w: np.ndarray, fitted: list[str]) -> None:
        ctrl = codes == -1
        self.boosters_["mu:" + self.control] = self._train(enc[ctrl], y[ctrl], w[ctrl])
        for a in fitted:
            sel = codes == self.arms_.index(a)
            self.boosters_["mu:" + a] = self._train(enc[sel], y[sel], w[sel])

    def _fit_x(self, enc: pd.DataFrame, codes: np.ndarray, y: np.ndarray, w: np.ndarray, fitted: list[str]) -> None:
        ctrl = codes == -1
        mu0 = self._mu(self.control, enc)
        self.x_share_ = {}
        for a in fitted:
            sel = codes == self.arms_.index(a)
            d1 = y[sel] - mu0[sel]
            d0 = self._mu(a, enc[ctrl]) - y[ctrl]
            self.boosters_["tau1:" + a] = self._train(enc[sel], d1, w[sel], "regression")
            self.boosters_["tau0:" + a] = self._train(enc[ctrl], d0, w[ctrl], "regression")
            self.x_share_[a] = float(sel.sum() / (sel.sum() + ctrl.sum()))

    def _fit_s(self, enc: pd.DataFrame, codes: np.ndarray, y: np.ndarray, w: np.ndarray, fitted: list[str]) -> None:
        keep = (codes == -1) | np.isin(codes, [self.arms_.index(a) for a in fitted])
        frame = enc[keep].copy()
        frame[ARM_FEATURE] = pd.Categorical(codes[keep] + 1, categories=range(len(self.arms_) + 1))
        self.boosters_["s"] = self._train(frame, y[keep], w[keep])

    def _segments(self, X: pd.DataFrame) -> np.ndarray:
        """Segment index per row into `segments_` (-1: unknown or no segment column)."""
        if not self.segment or self.segment not in X.columns:
            return np.full(len(X), -1, dtype=np.int64)
        if len(X) <= SMALL_ROWS:
            where = {name: i for i, name in enumerate(self.segments_)}
            cells = X[self.segment].to_numpy(dtype=object).tolist()
            return np.array([where.get(v, -1) if isinstance(v, str) else -1 for v in cells], dtype=np.int64)
        return np.asarray(pd.Categorical(X[self.segment].astype("object"), categories=self.segments_).codes, np.int64)

    def _fit_lift(
        self, X: pd.DataFrame, enc: pd.DataFrame, codes: np.ndarray, y: np.ndarray, w: np.ndarray, fitted: list[str]
    ) -> None:
        ctrl = codes == -1
        self.boosters_["mu:" + self.control] = self._train(enc[ctrl], y[ctrl], w[ctrl])
        p0 = np.clip(self._mu(self.control, enc), 1e-6, 1 - 1e-6)
        seg_values = X[self.segment].astype("object") if self.segment and self.segment in X.columns else None
        self.segments_ = sorted(seg_values.dropna().astype(str).unique().tolist()) if seg_values is not None else []
        seg = self._segments(X)
        self.theta_: dict[str, float] = {}
        self.theta_se_: dict[str, float] = {}
        self.theta_segment_: dict[str, dict[str, float]] = {}
        self.theta_segment_se_: dict[str, dict[str, float]] = {}
        self.prior_theta_ = {a: float(v) for a, v in (self.prior_theta or {}).items() if a in fitted}
        for a in fitted:
            sel = codes == self.arms_.index(a)
            prior_mean = float((self.prior_theta or {}).get(a, 0.0))
            pooled, pooled_se = _lift_mle(p0[sel], y[sel], w[sel], prior_mean, self.lift_prior_sd)
            self.theta_[a], self.theta_se_[a] = pooled, pooled_se
            self.theta_segment_[a], self.theta_segment_se_[a] = {}, {}
            for k, name in enumerate(self.segments_):
                cell = sel & (seg == k)
                if cell.any():
                    est, se = _lift_mle(p0[cell], y[cell], w[cell], pooled, self.segment_prior_sd)
                    self.theta_segment_[a][name], self.theta_segment_se_[a][name] = est, se

    def _lift_theta(self, X: pd.DataFrame) -> np.ndarray:
        """(n, arms) log-hazard ratio of each arm against the control; NaN for arms not modelled."""
        n = len(X)
        out = np.full((n, len(self.arms_)), np.nan)
        seg = self._segments(X)
        for i, a in enumerate(self.arms_):
            if not self.n_treated_[a]:
                continue
            z = self.lift_z
            pooled = self.theta_[a] - z * self.theta_se_.get(a, 0.0)
            cells = self.theta_segment_[a]
            cell_se = self.theta_segment_se_.get(a, {})
            by_seg = np.array([cells[k] - z * cell_se.get(k, 0.0) if k in cells else pooled for k in self.segments_])
            out[:, i] = np.where(seg >= 0, np.append(by_seg, pooled)[seg], pooled)
        return out

    def predict_log_hazard_ratio(self, X: pd.DataFrame) -> np.ndarray:
        """(n, arms) for the "lift" learner: theta with P(outcome | arm) = 1 - (1 - p0) ** exp(theta), for any
        p0 (e.g. a better calibrated base model's); NaN for arms not modelled. Other learners: ValueError."""
        if self.learner != "lift":
            raise ValueError("only the lift learner has a log-hazard ratio")
        return self._lift_theta(X)

    def _lift_outcomes(self, X: pd.DataFrame, enc: pd.DataFrame) -> np.ndarray:
        n = len(enc)
        out = np.empty((n, 1 + len(self.arms_)))
        p0 = np.clip(self._mu(self.control, enc), 0.0, 1.0)
        out[:, 0] = p0
        theta = self._lift_theta(X)
        for i in range(len(self.arms_)):
            t = theta[:, i]
            out[:, i + 1] = np.where(np.isnan(t), p0, 1.0 - (1.0 - p0) ** np.exp(np.nan_to_num(t)))
        return out

    # ---------------------------------------------------------------- prediction

    def _mu(self, arm: str, enc: pd.DataFrame) -> np.ndarray:
        # A plain float32 matrix in training column order: the same prediction without LightGBM's pandas checks.
        return np.asarray(booster_predict(self.boosters_["mu:" + arm], enc.to_numpy()), dtype=float)

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 1 + arms): P(outcome | x, arm), column 0 the control; arms in `arms_` order."""
        enc = self._encode(X)
        if self.learner == "lift":
            return self._lift_outcomes(X, enc)
        n = len(enc)
        out = np.empty((n, 1 + len(self.arms_)))
        if self.learner == "s":
            frame = enc.copy()
            cats = range(len(self.arms_) + 1)
            frame[ARM_FEATURE] = pd.Categorical(np.zeros(n, dtype=int), categories=cats)
            out[:, 0] = booster_predict(self.boosters_["s"], frame)
            for i, a in enumerate(self.arms_):
                if self.n_treated_[a]:
                    frame[ARM_FEATURE] = pd.Categorical(np.full(n, i + 1), categories=cats)
                    out[:, i + 1] = booster_predict(self.boosters_["s"], frame)
                else:
                    out[:, i + 1] = out[:, 0]
            return out
        out[:, 0] = self._mu(self.control, enc)
        for i, a in enumerate(self.arms_):
            if not self.n_treated_[a]:
                out[:, i + 1] = out[:, 0]
            elif self.learner == "x":
                g = self.x_share_[a]
                tau0 = np.asarray(booster_predict(self.boosters_["tau0:" + a], enc), dtype=float)
                tau1 = np.asarray(booster_predict(self.boosters_["tau1:" + a], enc), dtype=float)
                tau = g * tau0 + (1 - g) * tau1
                out[:, i + 1] = np.clip(out[:, 0] + tau, 0.0, 1.0)
            else:
                out[:, i + 1] = self._mu(a, enc)
        return out

    def predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        """(n, arms): P(outcome | arm) - P(outcome | control)."""
        out = self.predict_outcomes(X)
        return out[:, 1:] - out[:, [0]]

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state, boosters as LightGBM model strings."""
        state = {k: v for k, v in self.get_params().items()}
        state["features"] = list(state["features"]) if state["features"] is not None else None
        state["categorical"] = list(state["categorical"])
        state["prior_theta"] = dict(state["prior_theta"]) if state["prior_theta"] is not None else None
        return {
            "params": state,
            "feature_names": self.feature_names_,
            "categories": self.categories_,
            "arms": self.arms_,
            "arm_rows": self.arm_rows_,
            "control_rows": self.control_rows_,
            "n_treated": self.n_treated_,
            "base_rate": self.base_rate_,
            "x_share": getattr(self, "x_share_", {}),
            "segments": getattr(self, "segments_", []),
            "theta": getattr(self, "theta_", {}),
            "theta_se": getattr(self, "theta_se_", {}),
            "theta_segment": getattr(self, "theta_segment_", {}),
            "theta_segment_se": getattr(self, "theta_segment_se_", {}),
            "prior_theta_fitted": getattr(self, "prior_theta_", {}),
            "boosters": {name: b.model_to_string() for name, b in self.boosters_.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> UpliftModel:
        model = cls(**state["params"])
        model.feature_names_ = list(state["feature_names"])
        model.categories_ = {k: list(v) for k, v in state["categories"].items()}
        model._category_codes = None
        model.arms_ = list(state["arms"])
        model.arm_rows_ = {k: int(v) for k, v in state["arm_rows"].items()}
        model.control_rows_ = int(state["control_rows"])
        model.n_treated_ = {k: int(v) for k, v in state["n_treated"].items()}
        model.base_rate_ = float(state["base_rate"])
        model.x_share_ = {k: float(v) for k, v in state.get("x_share", {}).items()}
        model.segments_ = [str(v) for v in state.get("segments", [])]
        model.theta_ = {k: float(v) for k, v in state.get("theta", {}).items()}
        model.theta_se_ = {k: float(v) for k, v in state.get("theta_se", {}).items()}
        model.theta_segment_ = {
            a: {k: float(v) for k, v in d.items()} for a, d in state.get("theta_segment", {}).items()
        }
        model.theta_segment_se_ = {
            a: {k: float(v) for k, v in d.items()} for a, d in state.get("theta_segment_se", {}).items()
        }
        model.prior_theta_ = {k: float(v) for k, v in state.get("prior_theta_fitted", {}).items()}
        model.boosters_ = {name: lgb.Booster(model_str=text) for name, text in state["boosters"].items()}
        return model

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _lift_mle(p0: np.ndarray, y: np.ndarray, w: np.ndarray, prior_mean: float, prior_sd: float) -> tuple[float, float]:
    """Penalised MLE of theta in P = 1 - (1 - p0) ** exp(theta) (Newton steps on the log-hazard
    scale), and its standard error from the curvature (prior included).

    The weighted log-likelihood is divided by the mean weight so the prior counts against the
    number of rows, not the sum of inverse-propensity weights.
    """
    w = w / max(float(w.mean()), 1e-12)
    lam = -np.log1p(-np.clip(p0, 1e-9, 1 - 1e-9))  # cumulative hazard under no action
    theta = prior_mean
    hess = -1.0 / prior_sd**2
    for _ in range(50):
        h = lam * np.exp(theta)
        s = np.exp(-h)  # P(no outcome)
        p = np.clip(1 - s, 1e-12, 1)
        # d/dtheta of y log p + (1 - y) log s, with dh/dtheta = h
        grad = float(np.sum(w * h * (y * s / p - (1 - y)))) - (theta - prior_mean) / prior_sd**2
        hess = float(np.sum(w * (h * (y * s / p - (1 - y)) - y * h**2 * s / p**2))) - 1 / prior_sd**2
        step = grad / hess if hess < 0 else -np.sign(grad) * 0.1
        theta = float(np.clip(theta - step, -5.0, 5.0))
        if abs(step) < 1e-7:
            break
    return theta, float(1.0 / np.sqrt(-hess)) if hess < 0 else prior_sd


# -------------------------------------------------------------------- metrics


def _curve_arrays(
    y: Any, treated: Any, score: Any, weight: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Cumulative weighted treated / control counts and outcomes along descending score."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=bool)
    s = np.asarray(score, dtype=float)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    order = np.argsort(-s, kind="stable")
    y, t, w = y[order], t[order], w[order]
    nt = np.cumsum(w * t)
    nc = np.cumsum(w * ~t)
    yt = np.cumsum(w * y * t)
    yc = np.cumsum(w * y * ~t)
    return nt, nc, yt, yc, float(w.sum())


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _at_fractions(arr: np.ndarray, points: int) -> np.ndarray:
    n = len(arr)
    q = np.arange(1, points + 1) / points
    k = np.maximum(np.ceil(q * n).astype(int), 1) - 1
    return arr[k]


def qini_curve(
    y: Any, treated: Any, score: Any, weight: Any = None, points: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(fraction targeted, Qini) at fractions 0, 1/points, ..., 1.

    Qini(phi) = [Y_t(phi) - Y_c(phi) * N_t(phi) / N_c(phi)] / N: the incremental outcomes among
    the top phi of rows by score, per row of the whole population (weighted counts).
    """
    nt, nc, yt, yc, total = _curve_arrays(y, treated, score, weight)
    if len(nt) == 0 or total <= 0:
        return np.linspace(0, 1, points + 1), np.zeros(points + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(nc > 0, yt - yc * nt / nc, yt) / total
    frac = np.linspace(0, 1, points + 1)
    return frac, np.concatenate([[0.0], _at_fractions(q, points)])


def qini_coefficient(y: Any, treated: Any, score: Any, weight: Any = None, points: int = 100) -> float:
    """Area between the Qini curve and the straight line of random targeting (0 = random, > 0 = better)."""
    frac, q = qini_curve(y, treated, score, weight, points)
    random_line = frac * q[-1]
    return _trapezoid(q - random_line, frac)


def uplift_curve(
    y: Any, treated: Any, score: Any, weight: Any = None, points: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(fraction targeted, cumulative uplift): (mean y treated - mean y control) in the top phi, times phi."""
    nt, nc, yt, yc, total = _curve_arrays(y, treated, score, weight)
    if len(nt) == 0:
        return np.linspace(0, 1, points + 1), np.zeros(points + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where((nt > 0) & (nc > 0), yt / nt - yc / nc, 0.0)
    frac = np.linspace(0, 1, points + 1)
    return frac, np.concatenate([[0.0], _at_fractions(u, points)]) * frac


def auuc(y: Any, treated: Any, score: Any, weight: Any = None, points: int = 100) -> float:
    """Area under the uplift curve (`uplift_curve`), fraction targeted on [0, 1]."""
    frac, u = uplift_curve(y, treated, score, weight, points)
    return _trapezoid(u, frac)


def uplift_at_k(y: Any, treated: Any, score: Any, k: float = 0.1, weight: Any = None) -> float:
    """Observed uplift (treated mean - control mean) among the top k share of rows by score (NaN if an arm is empty)."""
    nt, nc, yt, yc, _ = _curve_arrays(y, treated, score, weight)
    if len(nt) == 0:
        return float("nan")
    i = max(int(np.ceil(k * len(nt))), 1) - 1
    if nt[i] <= 0 or nc[i] <= 0:
        return float("nan")
    return float(yt[i] / nt[i] - yc[i] / nc[i])


def uplift_by_decile(y: Any, treated: Any, score: Any, weight: Any = None, bins: int = 10) -> pd.DataFrame:
    """Per score decile (1 = highest predicted uplift): rows, treated, controls, observed and predicted uplift."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=bool)
    s = np.asarray(score, dtype=float)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    order = np.argsort(-s, kind="stable")
    decile = np.empty(len(y), dtype=int)
    decile[order] = np.minimum(np.arange(len(y)) * bins // max(len(y), 1), bins - 1) + 1
    rows = []
    for d in range(1, bins + 1):
        sel = decile == d
        wt, wc = (w * sel * t).sum(), (w * sel * ~t).sum()
        mt = (w * y * sel * t).sum() / wt if wt > 0 else np.nan
        mc = (w * y * sel * ~t).sum() / wc if wc > 0 else np.nan
        rows.append(
            {
                "decile": d,
                "rows": int(sel.sum()),
                "treated": int((sel & t).sum()),
                "control": int((sel & ~t).sum()),
                "rate_treated": mt,
                "rate_control": mc,
                "observed_uplift": mt - mc,
                "predicted_uplift": float(s[sel].mean()) if sel.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


# -------------------------------------------------------------------- off-policy value


def ips_terms(reward: Any, match: Any, propensity: Any, max_weight: float = 1000.0) -> np.ndarray:
    """Per-row inverse propensity terms match / propensity x reward (their mean is the IPS estimate).

    `match`: the logged action equals the target policy's action; `propensity`: the logging
    policy's probability of the logged action, floored at 1 / max_weight.
    """
    p = np.clip(np.asarray(propensity, dtype=float), 1.0 / max_weight, 1.0)
    return np.asarray(match, dtype=bool) / p * np.asarray(reward, dtype=float)


def ips_value(reward: Any, match: Any, propensity: Any, max_weight: float = 1000.0, normalise: bool = False) -> float:
    """Inverse propensity estimate of a target policy's mean reward per decision.

    `normalise=True` gives self-normalised IPS (divides by the sum of the weights, not the rows).
    """
    terms = ips_terms(reward, match, propensity, max_weight)
    if len(terms) == 0:
        return float("nan")
    if not normalise:
        return float(terms.mean())
    w = ips_terms(np.ones(len(terms)), match, propensity, max_weight)
    return float(terms.sum() / w.sum()) if w.sum() > 0 else float("nan")


def dr_terms(
    reward: Any, match: Any, propensity: Any, q_logged: Any, q_target: Any, max_weight: float = 1000.0
) -> np.ndarray:
    """Per-row doubly robust terms q(x, target) + match / propensity x (reward - q(x, logged)).

    `q_logged` / `q_target`: the outcome model's expected reward for the logged / target action.
    """
    q_t = np.asarray(q_target, dtype=float)
    return q_t + ips_terms(np.asarray(reward, dtype=float) - np.asarray(q_logged, dtype=float), match, propensity,
                           max_weight)  # fmt: skip


def dr_value(
    reward: Any, match: Any, propensity: Any, q_logged: Any, q_target: Any, max_weight: float = 1000.0
) -> float:
    """Doubly robust estimate of a target policy's mean reward per decision (the mean of `dr_terms`)."""
    terms = dr_terms(reward, match, propensity, q_logged, q_target, max_weight)
    return float(terms.mean()) if len(terms) else float("nan")
