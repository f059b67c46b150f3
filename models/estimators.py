"""LightGBM estimators for one task each, honouring scikit-learn's estimator contract.

`__init__` stores parameters only; `fit` returns self; learned attributes end in `_`,
so `sklearn.base.clone` works. Each estimator keeps a native `lightgbm.Booster`
(`booster_`) so MLflow's LightGBM flavour can log it, and encodes categoricals with the
categories seen at fit time (unknown values become missing) so scoring never reorders codes.

Validation data (the time-based validation cutoff) is split in two halves by a seeded
permutation: one for early stopping, one for probability calibration, so the calibrator
never sees rows that chose the number of trees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from models.attribution import METHODS, LeafAttribution, leaf_shap_table
from models.calibration import Calibrator
from models.columns import FeatureColumns, encode_matrix

SMALL_BATCH = 4096  # rows of plain prediction below which one thread is faster than starting a team
SMALL_CONTRIB = 8  # rows of pred_contrib (TreeSHAP: ~0.3-1 ms a row here) below which the same holds


def booster_predict(booster: Any, X: Any, **kwargs: Any) -> Any:
    """Booster.predict, single-threaded for small inputs: for one API customer, starting the
    OpenMP team cost more than the trees (7 ms vs 0.3 ms per call on 2 cores). A few thousand
    rows of plain prediction take well under a millisecond, while pred_contrib costs hundreds of
    microseconds per row, so its threshold is much lower."""
    limit = SMALL_CONTRIB if kwargs.get("pred_contrib") else SMALL_BATCH
    if len(X) <= limit:
        kwargs["num_threads"] = 1
    return booster.predict(X, **kwargs)


def encode_frame(X: pd.DataFrame, features: Sequence[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """Columns in training order, all float32: numeric values as they are, categoricals as the
    integer code of the fitted category (missing or unseen values -> NaN). The booster thus
    takes a plain numeric frame, which is also what MLflow's LightGBM flavour is given.

    Built as one float32 matrix (one conversion for all numeric columns), because per-column
    conversion dominated the cost of scoring one customer in the API."""
    names = list(features)
    out = np.full((len(X), len(names)), np.nan, dtype=np.float32)
    numeric = [i for i, c in enumerate(names) if c not in categories and c in X.columns]
    if numeric:
        block = X[[names[i] for i in numeric]]
        try:
            values = block.to_numpy(dtype=np.float32, na_value=np.nan)
        except (TypeError, ValueError):  # strings or objects among the numbers: coerce column by column
            values = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        out[:, numeric] = values
    for i, col in enumerate(names):
        if col in categories and col in X.columns:
            codes = pd.Categorical(X[col].astype("string"), categories=categories[col]).codes
            out[:, i] = np.where(codes < 0, np.nan, codes)
    return pd.DataFrame(out, columns=names, index=X.index)


def learn_categories(X: pd.DataFrame, categorical: Sequence[str], max_levels: int = 200) -> dict[str, list[str]]:
    cats = {}
    for col in categorical:
        if col in X.columns:
            counts = X[col].astype("string").dropna().value_counts()
            cats[col] = sorted(counts.index[:max_levels].tolist())
    return cats


def split_validation(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for early stopping and for calibration (two halves, seeded)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


class _GBMBase(BaseEstimator):
    """Shared LightGBM parameters and training loop."""

    def __init__(
        self,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 100,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 30,
        calibration: str = "isotonic",
        num_threads: int = 2,
        seed: int = 0,
    ) -> None:
        self.features = features
        self.categorical = categorical
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.num_threads = num_threads
        self.seed = seed

    def _params(self, objective: str, **extra: Any) -> dict[str, Any]:
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
            **extra,
        }

    def _setup_columns(self, X: pd.DataFrame) -> None:
        features = list(self.features) if self.features is not None else [str(c) for c in X.columns]
        self.feature_names_ = features
        self.categories_ = learn_categories(X, [c for c in self.categorical if c in features])

    def _encode(self, X: pd.DataFrame) -> pd.DataFrame:
        return encode_frame(X, self.feature_names_, self.categories_)

    # -- the array path (serving): float32 matrices in training column order, no frames ----------
    def encode_columns(self, cols: FeatureColumns, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """`_encode` on cached arrays: the float32 matrix the booster is given."""
        return encode_matrix(cols, self.feature_names_, self.categories_, extra or {})

    def raw_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(booster_predict(self.booster_, matrix, num_iteration=self.best_iteration_), dtype=float)

    def contributions_matrix(self, matrix: np.ndarray, method: str = "leaf") -> np.ndarray:
        """Contributions of an encoded matrix in raw score units: (n, features + 1), the last column
        is the bias. `leaf`: from the leaves each row reaches (models.attribution); `shap`: LightGBM's
        pred_contrib (exact TreeSHAP). Both add up to the raw score."""
        if method == "leaf":
            leaves = booster_predict(self.booster_, matrix, pred_leaf=True, num_iteration=self.best_iteration_)
            return self.leaf_attribution().contributions(leaves)
        if method != "shap":
            raise ValueError(f"unknown attribution method {method!r}; choose one of {METHODS}")
        return np.asarray(
            booster_predict(self.booster_, matrix, pred_contrib=True, num_iteration=self.best_iteration_), dtype=float
        )

    def leaf_attribution(self) -> LeafAttribution:
        """The booster's leaf credit table, built on first use (tens of milliseconds)."""
        table = getattr(self, "_leaf_attribution", None)
        if table is None or table.booster is not self.booster_:
            table = LeafAttribution(self.booster_, self.best_iteration_, getattr(self, "leaf_shap_", None))
            table.booster = self.booster_
            self._leaf_attribution = table
        return table

    def _attribution_rows(self, X: pd.DataFrame) -> np.ndarray:
        """The training rows the leaf table averages TreeSHAP over (as the model is asked at scoring)."""
        return X.to_numpy(np.float32)

    def _train(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_stop: pd.DataFrame | None,
        y_stop: np.ndarray | None,
        params: dict[str, Any],
    ) -> lgb.Booster:
        cats = [c for c in X.columns if c in self.categories_]
        train_set = lgb.Dataset(X, label=y, categorical_feature=cats or "auto", free_raw_data=True)
        callbacks: list[Any] = []
        valid_sets = []
        if X_stop is not None and y_stop is not None and len(y_stop) and self.early_stopping_rounds:
            valid_sets = [lgb.Dataset(X_stop, label=y_stop, reference=train_set)]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            params, train_set, num_boost_round=self.n_estimators, valid_sets=valid_sets, callbacks=callbacks
        )
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.leaf_shap_ = leaf_shap_table(booster, self._attribution_rows(X), self.best_iteration_, self.seed)
        return booster

    def contributions(self, X: pd.DataFrame, method: str = "shap") -> pd.DataFrame:
        """Per-row contributions in raw score units, plus `bias`: SHAP values (LightGBM pred_contrib)
        or leaf attributions (`method="leaf"`, see `contributions_matrix`)."""
        contrib = _GBMBase.contributions_matrix(self, self._encode(X).to_numpy(np.float32), method)
        return pd.DataFrame(contrib, columns=[*self.feature_names_, "bias"], index=X.index)

    def feature_importance(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "feature": self.booster_.feature_name(),
                "gain": self.booster_.feature_importance("gain", iteration=self.best_iteration_),
                "split": self.booster_.feature_importance("split", iteration=self.best_iteration_),
            }
        ).sort_values("gain", ascending=False)


class GBMClassifier(_GBMBase, ClassifierMixin):
    """Binary LightGBM with early stopping and calibration on the validation cutoff."""

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> GBMClassifier:
        y = np.asarray(y, dtype=float)
        self._setup_columns(X)
        self.classes_ = np.array([0, 1])
        X_stop = y_stop = X_cal = y_cal = None
        if X_val is not None and y_val is not None and len(X_val) >= 2:
            y_val = np.asarray(y_val, dtype=float)
            stop_idx, cal_idx = split_validation(len(X_val), self.seed)
            X_stop, y_stop = self._encode(X_val.iloc[stop_idx]), y_val[stop_idx]
            X_cal, y_cal = X_val.iloc[cal_idx], y_val[cal_idx]
        self.booster_ = self._train(self._encode(X), y, X_stop, y_stop, self._params("binary"))
        self.calibrator_ = Calibrator(self.calibration if X_cal is not None else "none")
        self.calibrator_.fit(self.raw_proba(X_cal) if X_cal is not None else [], y_cal if y_cal is not None else [])
        return self

    def raw_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            booster_predict(self.booster_, self._encode(X), num_iteration=self.best_iteration_), dtype=float
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.calibrator_.transform(self.raw_proba(X))
        return np.column_stack([1 - p, p])

    def proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated P(y = 1) of an encoded matrix (`predict_proba(X)[:, 1]` on arrays)."""
        return self.calibrator_.transform(self.raw_matrix(matrix))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


class GBMRegressor(_GBMBase, RegressorMixin):
    """LightGBM for non-negative amounts (Tweedie objective: many zeros, a long tail).

    Labels below zero (refunds exceeding purchases) are clipped to zero for fitting.
    """

    def __init__(
        self,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 100,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 30,
        calibration: str = "isotonic",
        num_threads: int = 2,
        seed: int = 0,
        tweedie_variance_power: float = 1.5,
    ) -> None:
        super().__init__(
            features=features, categorical=categorical, n_estimators=n_estimators, learning_rate=learning_rate,
            num_leaves=num_leaves, min_child_samples=min_child_samples, feature_fraction=feature_fraction,
            bagging_fraction=bagging_fraction, lambda_l2=lambda_l2, early_stopping_rounds=early_stopping_rounds,
            calibration=calibration, num_threads=num_threads, seed=seed,
        )  # fmt: skip
        self.tweedie_variance_power = tweedie_variance_power

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> GBMRegressor:
        y = np.clip(np.asarray(y, dtype=float), 0, None)
        self._setup_columns(X)
        X_stop = y_stop = None
        if X_val is not None and y_val is not None and len(X_val) >= 2:
            X_stop, y_stop = self._encode(X_val), np.clip(np.asarray(y_val, dtype=float), 0, None)
        params = self._params("tweedie", tweedie_variance_power=self.tweedie_variance_power, metric="tweedie")
        self.booster_ = self._train(self._encode(X), y, X_stop, y_stop, params)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            booster_predict(self.booster_, self._encode(X), num_iteration=self.best_iteration_), dtype=float
        )


def _timing_targets(y: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(y, pd.DataFrame):
        return y["event_days"].to_numpy(float), y["followup_days"].to_numpy(float)
    arr = np.asarray(y, dtype=float)
    return arr[:, 0], arr[:, 1]


def person_period(
    X: pd.DataFrame, event_days: np.ndarray, followup_days: np.ndarray, bins: Sequence[int]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Discrete-time hazard rows: one per (row, period) entered event-free and fully observed
    (or holding the event). Adds `period` (0-based) as a feature; returns (rows, event)."""
    edges = np.asarray([0, *bins], dtype=float)
    idx_parts, period_parts, event_parts = [], [], []
    for k in range(len(bins)):
        lo, hi = edges[k], edges[k + 1]
        alive = np.isnan(event_days) | (event_days > lo)
        here = ~np.isnan(event_days) & (event_days > lo) & (event_days <= hi)
        keep = np.flatnonzero(alive & ((followup_days >= hi) | here))
        idx_parts.append(keep)
        period_parts.append(np.full(len(keep), k, dtype="float32"))
        event_parts.append(here[keep].astype(float))
    idx = np.concatenate(idx_parts)
    rows = X.iloc[idx].reset_index(drop=True)
    rows["period"] = np.concatenate(period_parts)
    return rows, np.concatenate(event_parts)


class DiscreteHazardModel(_GBMBase):
    """Time to next event as a discrete-time hazard: LightGBM on (customer, period) rows.

    `fit(X, y)` takes y with columns (event_days, followup_days): days from the cutoff to
    the first event (NaN if none seen) and days of follow-up observed. Censoring is honest:
    a period contributes only when fully observed. Outputs per row: P(event within h days)
    for each h in `horizons` (each calibrated on the validation half, then made monotone in
    h) and `expected_days`, the mean time to the event restricted to the last bin (an event
    later than that counts as the last bin's end: the data cannot say more).
    """

    def __init__(
        self,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 100,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 30,
        calibration: str = "isotonic",
        num_threads: int = 2,
        seed: int = 0,
        bins_days: Sequence[int] = (7, 14, 30, 60, 90, 180, 365),
        horizons: Sequence[int] = (7, 30, 90),
    ) -> None:
        super().__init__(
            features=features, categorical=categorical, n_estimators=n_estimators, learning_rate=learning_rate,
            num_leaves=num_leaves, min_child_samples=min_child_samples, feature_fraction=feature_fraction,
            bagging_fraction=bagging_fraction, lambda_l2=lambda_l2, early_stopping_rounds=early_stopping_rounds,
            calibration=calibration, num_threads=num_threads, seed=seed,
        )  # fmt: skip
        self.bins_days = bins_days
        self.horizons = horizons

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> DiscreteHazardModel:
        bins = list(self.bins_days)
        if not set(self.horizons) <= set(bins):
            raise ValueError("every horizon must be a bin end")
        self._setup_columns(X)
        ev, fu = _timing_targets(y)
        rows, target = person_period(self._encode(X), ev, fu, bins)
        X_stop = y_stop = None
        X_cal = None
        if X_val is not None and y_val is not None and len(X_val) >= 2:
            ev_v, fu_v = _timing_targets(y_val)
            stop_idx, cal_idx = split_validation(len(X_val), self.seed)
            X_stop, y_stop = person_period(self._encode(X_val.iloc[stop_idx]), ev_v[stop_idx], fu_v[stop_idx], bins)
            X_cal, ev_cal, fu_cal = X_val.iloc[cal_idx], ev_v[cal_idx], fu_v[cal_idx]
        self.booster_ = self._train(rows, target, X_stop, y_stop, self._params("binary"))
        self.calibrators_ = {}
        raw = self.raw_horizons(X_cal) if X_cal is not None else None
        for h in self.horizons:
            cal = Calibrator(self.calibration if X_cal is not None else "none")
            if raw is not None:
                known = fu_cal >= h
                hit = (~np.isnan(ev_cal) & (ev_cal <= h)).astype(float)
                cal.fit(raw[f"p_{h}d"].to_numpy()[known], hit[known])
            else:
                cal.fit([], [])
            self.calibrators_[int(h)] = cal
        return self

    @staticmethod
    def with_periods(matrix: np.ndarray, periods: Sequence[int]) -> np.ndarray:
        """(len(periods) * n, features + 1) float32: the encoded rows once per period, period-major,
        with the period as the last column (as in `person_period`)."""
        n, width = matrix.shape
        out = np.empty((len(periods) * n, width + 1), dtype=np.float32)
        for i, k in enumerate(periods):
            out[i * n : (i + 1) * n, :width] = matrix
            out[i * n : (i + 1) * n, width] = np.float32(k)
        return out

    def hazards_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """(n_rows, n_bins) conditional probability of the event in each period, from an encoded
        matrix. Few rows (an API request): every period stacked into one predict call, since the
        per-call cost dominates. Many rows (batch): one copy of the matrix with a period column,
        rewritten in place for each period, so memory stays at one matrix instead of one per period."""
        n, bins = len(matrix), len(self.bins_days)
        if n * bins <= SMALL_BATCH:
            stacked = self.with_periods(matrix, range(bins))
            flat = np.asarray(booster_predict(self.booster_, stacked, num_iteration=self.best_iteration_), dtype=float)
            return flat.reshape(bins, n).T
        buffer = self.with_periods(matrix, [0])
        out = np.empty((n, bins))
        for k in range(bins):
            buffer[:, -1] = np.float32(k)
            out[:, k] = booster_predict(self.booster_, buffer, num_iteration=self.best_iteration_)
        return out

    def hazards(self, X: pd.DataFrame) -> np.ndarray:
        """(n_rows, n_bins) conditional probability of the event in each period."""
        return self.hazards_matrix(self._encode(X).to_numpy(dtype=np.float32))

    def _encode_with_period(self, X: pd.DataFrame, period: int) -> pd.DataFrame:
        rows = self._encode(X)
        rows["period"] = np.float32(period)
        return rows

    def _horizons_from_hazards(self, haz: np.ndarray) -> dict[str, np.ndarray]:
        surv = np.cumprod(1 - haz, axis=1)
        bins = list(self.bins_days)
        out = {f"p_{h}d": 1 - surv[:, bins.index(h)] for h in self.horizons}
        widths = np.diff([0, *bins])
        start = np.column_stack([np.ones(len(haz)), surv[:, :-1]])
        out["expected_days"] = ((start + surv) / 2 * widths).sum(axis=1)
        return out

    def _calibrate_horizons(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(raw)
        running = np.zeros(len(raw["expected_days"]))
        for h in sorted(self.horizons):
            running = np.maximum(running, self.calibrators_[int(h)].transform(raw[f"p_{h}d"]))
            out[f"p_{h}d"] = running
        return out

    def raw_horizons(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self._horizons_from_hazards(self.hazards(X)), index=X.index)

    def predict_horizons(self, X: pd.DataFrame) -> pd.DataFrame:
        raw = self._horizons_from_hazards(self.hazards(X))
        return pd.DataFrame(self._calibrate_horizons(raw), index=X.index)

    def horizons_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """`predict_horizons` on an encoded matrix: calibrated p_<h>d per horizon and expected_days."""
        return self._calibrate_horizons(self._horizons_from_hazards(self.hazards_matrix(matrix)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Expected days to the event (restricted to the last bin)."""
        return self.raw_horizons(X)["expected_days"].to_numpy()

    def _attribution_rows(self, X: pd.DataFrame) -> np.ndarray:
        """Person-period rows with the period set to the one reasons explain."""
        rows = X.to_numpy(np.float32)
        rows[:, -1] = self.reference_period()
        return rows

    def reference_period(self) -> int:
        """The period reasons explain: the one ending at the first horizon of at least 30 days
        (else the longest horizon). One period, not a sum over all: pred_contrib costs about as
        much as a prediction per tree and leaf, and hazards share most of their structure."""
        bins = list(self.bins_days)
        ends = [h for h in sorted(self.horizons) if h >= 30] or [max(self.horizons)]
        return bins.index(ends[0])

    def contributions(
        self, X: pd.DataFrame, method: str = "shap", periods: Sequence[int] | None = None
    ) -> pd.DataFrame:
        """Contributions to the log-odds of the period hazard (`method` as in `_GBMBase.contributions`)
        summed over `periods` (default: the reference period)."""
        if periods is None:
            periods = [self.reference_period()]
        total = None
        for k in periods:
            c = _GBMBase.contributions_matrix(self, self._encode_with_period(X, k).to_numpy(np.float32), method)
            total = c if total is None else total + c
        frame = pd.DataFrame(total, columns=[*self.feature_names_, "period", "bias"], index=X.index)
        return frame.drop(columns="period")

    def contributions_matrix(self, matrix: np.ndarray, method: str = "leaf") -> np.ndarray:
        """Contributions of the reference period's hazard for an encoded matrix: (n, features + 1),
        bias last (the period's own column dropped, as `contributions` does)."""
        stacked = self.with_periods(matrix, [self.reference_period()])
        return np.delete(super().contributions_matrix(stacked, method), -2, axis=1)
