"""A registered task model: one or more JourneyModels plus what scoring must check.

It carries the label spec hash and the feature service it was trained on, and refuses to
score against another spec. `parts[0]` is the primary model (the one whose booster MLflow
logs with the native LightGBM flavour); later parts add outputs (e.g. clv at 365 days).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import pandas as pd

from models.journey_model import JourneyModel


class SpecMismatchError(ValueError):
    """The label spec given at scoring time is not the one the model was trained on."""


@dataclass
class TaskModel:
    task: str
    spec_hash: str
    feature_service: str
    parts: list[JourneyModel]
    info: dict[str, Any] = field(default_factory=dict)  # registry version, run id, test cutoff ...

    @property
    def primary(self) -> JourneyModel:
        return self.parts[0]

    @property
    def outputs(self) -> list[str]:
        return [name for part in self.parts for name in part.outputs]

    @property
    def input_features(self) -> list[str]:
        """Feature-frame columns the model reads (BG/NBD columns are derived, not inputs)."""
        cols: list[str] = []
        for part in self.parts:
            inputs = list(part.btyd_inputs.values()) if part.btyd_inputs else []
            for c in [*part.model_features_, *inputs, *part.cold_start_.segment_columns_]:
                if not c.startswith("btyd_") and c not in cols:
                    cols.append(c)
            count = part.cold_start_.count_column
            if count and count not in cols:
                cols.append(count)
        return cols

    def check_spec(self, spec_hash: str | None) -> None:
        if spec_hash is not None and spec_hash != self.spec_hash:
            raise SpecMismatchError(
                f"the {self.task} model was trained on label spec {self.spec_hash}, not {spec_hash}: "
                "retrain it (journey train) or restore the spec it was trained on"
            )

    def predict(self, features: pd.DataFrame, spec_hash: str | None = None) -> pd.DataFrame:
        """Outputs of every part plus `cold_start` (True when the primary part fell back to priors)."""
        self.check_spec(spec_hash)
        frames = []
        cold = None
        for part in self.parts:
            out = part.predict_frame(features)
            cold = out["cold_start"] if cold is None else cold
            frames.append(out.drop(columns="cold_start"))
        result = pd.concat(frames, axis=1)
        result["cold_start"] = cold if cold is not None else False
        return result

    def to_bundle(self) -> dict[str, Any]:
        return {
            "format": 1,
            "task": self.task,
            "spec_hash": self.spec_hash,
            "feature_service": self.feature_service,
            "parts": [part.to_dict() for part in self.parts],
            "info": self.info,
        }

    def boosters(self) -> dict[str, lgb.Booster]:
        return {f"part{i}": part.estimator_.booster_ for i, part in enumerate(self.parts)}

    @classmethod
    def from_bundle(cls, bundle: Mapping[str, Any], boosters: Mapping[str, lgb.Booster]) -> TaskModel:
        parts = [JourneyModel.from_dict(data, {"main": boosters[f"part{i}"]}) for i, data in enumerate(bundle["parts"])]
        return cls(bundle["task"], bundle["spec_hash"], bundle["feature_service"], parts, dict(bundle.get("info", {})))
