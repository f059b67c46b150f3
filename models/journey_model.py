"""One task's model as a scikit-learn estimator: BG/NBD features + LightGBM + calibration + cold start.

`JourneyModel.fit(X, y, X_val, y_val)` takes feature frames (one row per customer and
cutoff, columns from the feature engine) and label frames from `training.labels.labels`
(`label` for binary and value tasks; `event_days`, `followup_days` for timing tasks).
Predictions are frames of named outputs plus `cold_start`. Serialisation is plain JSON
(`to_dict`) with the LightGBM boosters kept apart, so MLflow can log each booster with
its native flavour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from models.btyd import BetaGeoModel
from models.calibration import Calibrator
from models.cold_start import MISSING, ColdStartPrior
from models.columns import FeatureColumns
from models.estimators import DiscreteHazardModel, GBMClassifier, GBMRegressor, _GBMBase

BTYD_COLUMNS = ("btyd_frequency", "btyd_recency", "btyd_T")
BTYD_FEATURES = ("btyd_p_alive", "btyd_expected_purchases", "btyd_p_purchase")


def btyd_summary(X: pd.DataFrame, inputs: Mapping[str, str]) -> pd.DataFrame:
    """frequency / recency / T (days) from feature columns named by `inputs`:
    `purchases` (count up to the cutoff), `days_since_first_purchase`, `days_since_last_purchase`.
    Rows without a purchase get NaN, and so does every row when a column is absent (a frame of
    customers the feature store has never seen: they are cold-start rows)."""

    def col(key: str) -> np.ndarray:
        name = inputs[key]
        if name not in X.columns:
            return np.full(len(X), np.nan)
        return pd.to_numeric(X[name], errors="coerce").to_numpy(float)

    frequency, recency, T = summary_arrays(
        col("purchases"), col("days_since_first_purchase"), col("days_since_last_purchase")
    )
    return pd.DataFrame({"frequency": frequency, "recency": recency, "T": T}, index=X.index)


def summary_arrays(n: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) from purchase counts and days since the first and last purchase."""
    has = (n >= 1) & np.isfinite(first) & np.isfinite(last)
    T = np.where(has, first, np.nan)
    recency = np.where(has, np.clip(first - last, 0, None), np.nan)
    frequency = np.where(has, np.maximum(n - 1, 0), np.nan)
    return frequency, recency, T


@dataclass
class PartScores:
    """What the array path computes for one JourneyModel: outputs (cold-start fallback applied),
    the cold flag, and the encoded matrix and derived columns the reasons are read from."""

    outputs: dict[str, np.ndarray]
    cold: np.ndarray
    matrix: np.ndarray
    derived: dict[str, np.ndarray]


def output_names(task: str, kind: str, horizon_days: int, horizons: Sequence[int]) -> list[str]:
    if kind == "binary":
        return [f"{task}_probability"]
    if kind == "timing":
        return [f"{task}_probability_{h}d" for h in sorted(horizons)] + [f"{task}_expected_days"]
    return [f"{task}_{horizon_days}d"]


class JourneyModel(BaseEstimator):
    """A task model. `kind`: binary (calibrated probability), timing (discrete-time hazard:
    probabilities per horizon and restricted expected days), regression (value in the horizon)."""

    def __init__(
        self,
        task: str = "churn",
        kind: str = "binary",
        horizon_days: int = 90,
        horizons: Sequence[int] = (),
        bins_days: Sequence[int] = (),
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        btyd_inputs: Mapping[str, str] | None = None,
        gbm: Mapping[str, Any] | None = None,
        cold_start: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.kind = kind
        self.horizon_days = horizon_days
        self.horizons = horizons
        self.bins_days = bins_days
        self.features = features
        self.categorical = categorical
        self.btyd_inputs = btyd_inputs
        self.gbm = gbm
        self.cold_start = cold_start

    # -- features -----------------------------------------------------------------------
    def augment(self, X: pd.DataFrame) -> pd.DataFrame:
        """The input frame plus BG/NBD summary and expectation columns (when configured)."""
        btyd = getattr(self, "btyd_", None)
        if not self.btyd_inputs or btyd is None:
            return X
        summary = btyd_summary(X, self.btyd_inputs)
        extra = pd.DataFrame(
            {
                "btyd_frequency": summary["frequency"],
                "btyd_recency": summary["recency"],
                "btyd_T": summary["T"],
                "btyd_p_alive": btyd.p_alive(summary),
                "btyd_expected_purchases": btyd.expected_purchases(summary, self.horizon_days),
                "btyd_p_purchase": btyd.p_purchase(summary, self.horizon_days),
            },
            index=X.index,
        )
        return pd.concat([X.drop(columns=[c for c in extra.columns if c in X.columns]), extra], axis=1)

    @property
    def outputs(self) -> list[str]:
        return output_names(self.task, self.kind, self.horizon_days, self.horizons or (self.horizon_days,))

    def _make_estimator(self, features: list[str]) -> _GBMBase:
        params = dict(self.gbm or {})
        cat = [c for c in self.categorical if c in features]
        if self.kind == "binary":
            return GBMClassifier(features=features, categorical=cat, **params)
        if self.kind == "regression":
            return GBMRegressor(features=features, categorical=cat, **params)
        if self.kind == "timing":
            return DiscreteHazardModel(
                features=features,
                categorical=cat,
                bins_days=tuple(self.bins_days),
                horizons=tuple(self.horizons or (self.horizon_days,)),
                **params,
            )
        raise ValueError(f"unknown kind {self.kind!r}")

    @staticmethod
    def _target(kind: str, y: pd.DataFrame) -> Any:
        if kind == "timing":
            return y[["event_days", "followup_days"]]
        return y["label"].to_numpy(float)

    # -- fit ----------------------------------------------------------------------------
    def fit(
        self, X: pd.DataFrame, y: pd.DataFrame, X_val: pd.DataFrame | None = None, y_val: pd.DataFrame | None = None
    ) -> JourneyModel:
        base_features = list(self.features) if self.features is not None else [str(c) for c in X.columns]
        self.btyd_ = None
        if self.btyd_inputs:
            summary = btyd_summary(X, self.btyd_inputs)
            if summary["T"].gt(0).sum() >= 10:
                self.btyd_ = BetaGeoModel().fit(summary)
        X_aug = self.augment(X)
        X_val_aug = self.augment(X_val) if X_val is not None else None
        model_features = base_features + ([c for c in BTYD_FEATURES] if self.btyd_ is not None else [])
        self.model_features_ = model_features
        self.estimator_ = self._make_estimator(model_features)
        self.estimator_.fit(X_aug, self._target(self.kind, y), X_val_aug,
                            None if y_val is None else self._target(self.kind, y_val))  # fmt: skip
        self.cold_start_ = ColdStartPrior(**dict(self.cold_start or {}))
        self.cold_start_.fit(X, self._prior_targets(X_aug, y))
        return self

    def _prior_targets(self, X_aug: pd.DataFrame, y: pd.DataFrame) -> pd.DataFrame:
        names = self.outputs
        if self.kind == "timing":
            ev, fu = y["event_days"].to_numpy(float), y["followup_days"].to_numpy(float)
            out = {}
            for h, name in zip(sorted(self.horizons or (self.horizon_days,)), names[:-1], strict=True):
                hit = (~np.isnan(ev) & (ev <= h)).astype(float)
                out[name] = np.where(fu >= h, hit, np.nan)
            out[names[-1]] = self.estimator_.predict(X_aug)
            return pd.DataFrame(out, index=X_aug.index)
        return pd.DataFrame({names[0]: y["label"].to_numpy(float)}, index=X_aug.index)

    # -- predict ------------------------------------------------------------------------
    def raw_outputs(self, X: pd.DataFrame) -> pd.DataFrame:
        """Model outputs for every row, ignoring cold start."""
        X_aug = self.augment(X)
        names = self.outputs
        est = self.estimator_
        if isinstance(est, GBMClassifier):
            return pd.DataFrame({names[0]: est.predict_proba(X_aug)[:, 1]}, index=X.index)
        if isinstance(est, DiscreteHazardModel):
            pred = est.predict_horizons(X_aug)
            cols = [f"p_{h}d" for h in sorted(est.horizons)] + ["expected_days"]
            return pd.DataFrame({n: pred[c].to_numpy() for n, c in zip(names, cols, strict=True)}, index=X.index)
        return pd.DataFrame({names[0]: est.predict(X_aug)}, index=X.index)

    def is_cold(self, X: pd.DataFrame) -> np.ndarray:
        return self.cold_start_.is_cold(X, [f for f in self.model_features_ if not f.startswith("btyd_")])

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Outputs with the cold-start fallback applied, plus a `cold_start` flag column."""
        out = self.raw_outputs(X)
        cold = self.is_cold(X)
        if cold.any():
            prior = self.cold_start_.predict(X.loc[cold])
            for col in out.columns:
                out.loc[cold, col] = prior[col].to_numpy()
        out["cold_start"] = cold
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X)[self.outputs[0] if self.kind != "timing" else self._primary_name()].to_numpy()

    def _primary_name(self) -> str:
        if self.kind == "timing":
            return f"{self.task}_probability_{self.horizon_days}d"
        return self.outputs[0]

    @property
    def primary_output(self) -> str:
        return self._primary_name()

    def contributions(self, X: pd.DataFrame, method: str = "shap") -> pd.DataFrame:
        """Contributions to the primary output in raw score units (log-odds for probabilities,
        log-value for amounts), plus `bias`: SHAP values (pred_contrib) or leaf attributions."""
        return self.estimator_.contributions(self.augment(X), method)

    # -- the array path (serving and batch scoring) ------------------------------------------
    # The same numbers as augment / raw_outputs / predict_frame / contributions above, computed
    # on cached numpy columns: one encoded matrix per model, one predict call per booster.
    def derived_columns(self, cols: FeatureColumns) -> dict[str, np.ndarray]:
        """The BG/NBD columns `augment` adds, as arrays (empty without a fitted BG/NBD model)."""
        btyd = getattr(self, "btyd_", None)
        if not self.btyd_inputs or btyd is None:
            return {}
        inputs = self.btyd_inputs
        frequency, recency, T = summary_arrays(
            cols.numeric(inputs["purchases"]),
            cols.numeric(inputs["days_since_first_purchase"]),
            cols.numeric(inputs["days_since_last_purchase"]),
        )
        summary = np.column_stack([frequency, recency, T])
        return {
            "btyd_frequency": frequency,
            "btyd_recency": recency,
            "btyd_T": T,
            "btyd_p_alive": btyd.p_alive(summary),
            "btyd_expected_purchases": btyd.expected_purchases(summary, self.horizon_days),
            "btyd_p_purchase": btyd.p_purchase(summary, self.horizon_days),
        }

    def is_cold_columns(self, cols: FeatureColumns) -> np.ndarray:
        """`is_cold` on cached columns."""
        prior = self.cold_start_
        cold = np.zeros(cols.n, dtype=bool)
        if prior.count_column:
            if prior.count_column in cols.columns:
                count = cols.numeric(prior.count_column)
                with np.errstate(invalid="ignore"):
                    cold |= np.isnan(count) | (count < prior.min_events)
            else:
                cold |= True
        base = [f for f in self.model_features_ if not f.startswith("btyd_")]
        if base:
            present = [c for c in base if c in cols.columns]
            if present:
                all_missing = np.ones(cols.n, dtype=bool)
                for c in present:
                    all_missing &= cols.missing(c)
                    if not all_missing.any():
                        break
                cold |= all_missing
            else:
                cold |= True
        return cold

    def prior_rows(self, cols: FeatureColumns, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The cold-start prior of each output for `rows` (ColdStartPrior.predict on arrays)."""
        prior = self.cold_start_
        segments = [c for c in prior.segment_columns_ if c in cols.columns]
        keys = []
        for i in rows:
            parts = []
            for c in segments:
                v = cols.objects(c)[i]
                parts.append(MISSING if v is None or v is pd.NA or v != v else str(v))
            keys.append("|".join(parts) if parts else MISSING)
        out = {}
        for col, table in prior.priors_.items():
            values = [table.get(k) for k in keys]
            out[col] = np.array(
                [prior.overall_[col] if v is None or v != v else v for v in values], dtype=float
            )  # fmt: skip
        return out

    def score_columns(self, cols: FeatureColumns) -> PartScores:
        """`predict_frame` on cached columns, keeping the encoded matrix for `contributions_rows`."""
        derived = self.derived_columns(cols)
        est = self.estimator_
        matrix = est.encode_columns(cols, derived)
        names = self.outputs
        if isinstance(est, GBMClassifier):
            outputs = {names[0]: est.proba_matrix(matrix)}
        elif isinstance(est, DiscreteHazardModel):
            pred = est.horizons_matrix(matrix)
            keys = [f"p_{h}d" for h in sorted(est.horizons)] + ["expected_days"]
            outputs = {n: pred[k] for n, k in zip(names, keys, strict=True)}
        else:
            outputs = {names[0]: est.raw_matrix(matrix)}
        cold = self.is_cold_columns(cols)
        if cold.any():
            rows = np.flatnonzero(cold)
            prior = self.prior_rows(cols, rows)
            for name in outputs:
                outputs[name] = outputs[name].copy()
                outputs[name][rows] = prior[name]
        return PartScores(outputs=outputs, cold=cold, matrix=matrix, derived=derived)

    def contributions_rows(
        self, scored: PartScores, rows: np.ndarray, method: str = "leaf"
    ) -> tuple[np.ndarray, list[str]]:
        """(contributions of the primary output for `rows` without the bias column, feature names),
        the values `contributions(..., method)` gives."""
        est = self.estimator_
        contrib = est.contributions_matrix(scored.matrix[rows], method)
        return contrib[:, :-1], list(est.feature_names_)

    def feature_column(self, cols: FeatureColumns, scored: PartScores, name: str, rows: np.ndarray) -> list[Any]:
        """The values the model saw for one feature at `rows` (`feature_values` cells, as Python
        scalars: floats for numbers, None where the column is absent)."""
        if name in scored.derived:
            return np.asarray(scored.derived[name], dtype=float)[rows].tolist()
        return cols.column_values(name, rows)

    def feature_values(self, X: pd.DataFrame) -> pd.DataFrame:
        """The values the model saw (input features plus BG/NBD columns)."""
        aug = self.augment(X)
        return aug[[c for c in self.model_features_ if c in aug.columns]]

    # -- serialisation ------------------------------------------------------------------
    def boosters(self) -> dict[str, lgb.Booster]:
        return {"main": self.estimator_.booster_}

    def to_dict(self) -> dict[str, Any]:
        """Everything but the boosters, as JSON-ready values."""
        est = self.estimator_
        data: dict[str, Any] = {
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
            "model_features": self.model_features_,
            "estimator": {
                "class": type(est).__name__,
                "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in est.get_params().items()},
                "feature_names": est.feature_names_,
                "categories": est.categories_,
                "best_iteration": est.best_iteration_,
                "leaf_shap": getattr(est, "leaf_shap_", None),
            },
            "btyd": None if self.btyd_ is None else self.btyd_.params_,
            "cold_start": self.cold_start_.to_dict(),
        }
        if isinstance(est, GBMClassifier):
            data["estimator"]["calibrator"] = est.calibrator_.to_dict()
        if isinstance(est, DiscreteHazardModel):
            data["estimator"]["calibrators"] = {str(h): c.to_dict() for h, c in est.calibrators_.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], boosters: Mapping[str, lgb.Booster]) -> JourneyModel:
        params = dict(data["params"])
        model = cls(**params)
        model.model_features_ = list(data["model_features"])
        model.btyd_ = None
        if data.get("btyd"):
            model.btyd_ = BetaGeoModel()
            model.btyd_.params_ = dict(data["btyd"])
        e = data["estimator"]
        classes = {
            "GBMClassifier": GBMClassifier,
            "GBMRegressor": GBMRegressor,
            "DiscreteHazardModel": DiscreteHazardModel,
        }
        est = classes[e["class"]](**e["params"])
        est.feature_names_ = list(e["feature_names"])
        est.categories_ = {k: list(v) for k, v in e["categories"].items()}
        est.best_iteration_ = int(e["best_iteration"])
        if e.get("leaf_shap"):  # models saved before the table existed explain with path credit alone
            est.leaf_shap_ = e["leaf_shap"]
        est.booster_ = boosters["main"]
        if isinstance(est, GBMClassifier):
            est.classes_ = np.array([0, 1])
            est.calibrator_ = Calibrator.from_dict(e["calibrator"])
        if isinstance(est, DiscreteHazardModel):
            est.calibrators_ = {int(h): Calibrator.from_dict(c) for h, c in e["calibrators"].items()}
        model.estimator_ = est
        model.cold_start_ = ColdStartPrior.from_dict(data["cold_start"])
        return model
