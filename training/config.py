"""Per-task training configuration (conf/models/<task>.yaml), parsed into typed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODELS_DIR = Path(__file__).resolve().parents[1] / "conf" / "models"


class ConfigError(ValueError):
    """A model config that cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GBMParams(_Strict):
    n_estimators: int = Field(default=600, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    early_stopping_rounds: int = Field(default=40, ge=0)
    calibration: str = Field(default="isotonic", pattern="^(isotonic|sigmoid|none)$")
    num_threads: int = Field(default=2, ge=1)
    seed: int = 0


class BTYDInputs(_Strict):
    purchases: str = "purchase_days_lifetime"
    days_since_first_purchase: str = "days_since_first_purchase"
    days_since_last_purchase: str = "days_since_last_purchase"


class ColdStartParams(_Strict):
    min_events: int = Field(default=1, ge=0)
    count_column: str | None = "active_days_lifetime"
    segment_columns: list[str] = ["acquisition_channel", "segment"]
    strength: float = Field(default=20.0, ge=0)


class SplitParams(_Strict):
    n_train_cutoffs: int = Field(default=4, ge=1)
    step_days: int = Field(default=30, ge=1)
    min_history_days: int = Field(default=60, ge=0)
    max_train_rows: int | None = Field(default=400_000, ge=100)
    max_eval_rows: int | None = None


class GateParams(_Strict):
    metric: str = "auc"  # test metric (of the primary output) compared with champion and baselines
    higher_is_better: bool = True
    min_improvement: float = Field(default=0.002, ge=0)  # over the current champion on the same test cutoff
    max_ece: float | None = Field(default=0.02, ge=0)  # calibration bound for probability outputs


class ModelConfig(_Strict):
    task: str
    label_spec: str
    registered_model: str
    btyd: bool = True
    btyd_inputs: BTYDInputs = BTYDInputs()
    recency_column: str = "days_since_last_purchase"
    aov_column: str | None = None  # value tasks: average order value column for the BTYD value baseline
    exclude_features: list[str] = []
    categorical: list[str] | None = None  # None: the feature engine's categorical_features()
    gbm: GBMParams = GBMParams()
    cold_start: ColdStartParams = ColdStartParams()
    splits: SplitParams = SplitParams()
    gate: GateParams = GateParams()
    backtest_folds: int = Field(default=0, ge=0)  # extra rolling origins refitted for per-cutoff backtest metrics


def load_config(task: str, models_dir: Path | None = None, overrides: dict[str, Any] | None = None) -> ModelConfig:
    path = (models_dir or MODELS_DIR) / f"{task}.yaml"
    if not path.is_file():
        raise ConfigError(f"no model config at {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    for key, value in (overrides or {}).items():
        _set_path(raw, key, value)
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
