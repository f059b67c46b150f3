"""The one scoring function the API and batch scoring share.

    table = score_table(features, scorer, policy, reference, tasks=None, explain=True, actions=True)

`features`: one row per customer (customer_id, cutoff, the journey features; all-NaN
rows for customers without features, which the models score with their cold-start
fallback). Returns one row per customer: each task's outputs and their percentile in the
reference population, the stage, the cold-start flag, reasons and next-best actions
(lists of dicts), and the holdout flag. `to_results` turns rows into API objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.scorer import Scorer

TASK_ORDER = ("churn", "next_purchase", "conversion", "clv")
STAGE_COLUMN = "journey_stage"
PROSPECT_STAGES = ("prospect_awareness", "consideration", "prospect-awareness")


def primary_column(task: str, columns: Sequence[str]) -> str | None:
    """The output that stands for a task (its percentile and its score in the API)."""
    preferred = {
        "churn": ["churn_probability"],
        "next_purchase": ["next_purchase_probability_30d", "next_purchase_probability_90d"],
        "conversion": ["conversion_probability"],
        "clv": ["clv_365d", "clv_90d"],
    }[task]
    for name in preferred:
        if name in columns:
            return name
    return next((c for c in columns if c.startswith(task + "_") and not c.endswith(("_reasons", "_cold_start"))), None)


class Reference:
    """Sorted score samples of a reference population, for percentiles."""

    def __init__(self, samples: Mapping[str, np.ndarray] | None = None) -> None:
        self.samples = {k: np.sort(np.asarray(v, dtype=float)[np.isfinite(v)]) for k, v in (samples or {}).items()}

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Reference:
        cols = [c for c in table.columns if c.startswith(TASK_ORDER) and table[c].dtype.kind == "f"]
        return cls({c: table[c].to_numpy() for c in cols})

    def percentile(self, column: str, values: np.ndarray) -> np.ndarray:
        ref = self.samples.get(column)
        if ref is None or ref.size == 0:
            return np.full(len(values), np.nan)
        pct = np.searchsorted(ref, values, side="right") / ref.size * 100.0
        return np.where(np.isfinite(values), np.round(pct, 1), np.nan)


def _nba_scores(table: pd.DataFrame) -> pd.DataFrame:
    cols = {"customer_id": table["customer_id"].to_numpy()}
    for task in TASK_ORDER:
        col = primary_column(task, list(table.columns))
        if col is not None:
            cols[task] = table[col].to_numpy(dtype=float)
    return pd.DataFrame(cols)


def score_table(
    features: pd.DataFrame,
    scorer: Scorer,
    policy: Any | None,
    reference: Reference,
    *,
    tasks: Sequence[str] | None = None,
    explain: bool = True,
    actions: bool = True,
    k: int = 3,
) -> pd.DataFrame:
    chosen = [t for t in (tasks or TASK_ORDER) if t in scorer.tasks]
    features = features.reset_index(drop=True)
    table = scorer.score(features, tasks=chosen, reasons=explain)
    for task in chosen:
        col = primary_column(task, list(table.columns))
        if col is not None:
            table[f"{task}_percentile"] = reference.percentile(col, table[col].to_numpy(dtype=float))
    table["stage"] = features[STAGE_COLUMN].to_numpy() if STAGE_COLUMN in features.columns else None
    if actions and policy is not None:
        from models.nba import decide, holdout_mask

        table["actions"] = decide(features, _nba_scores(table), policy, k=k)
        table["holdout"] = holdout_mask(
            features["customer_id"].to_numpy(), policy.holdout_share, getattr(policy, "holdout_salt", "journeyml-nba")
        )
    else:
        table["actions"] = [[] for _ in range(len(table))]
        table["holdout"] = False
    return table


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if np.isfinite(f) else None


def to_results(
    table: pd.DataFrame,
    features: pd.DataFrame,
    versions: Mapping[str, str],
    degraded: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """API objects (CustomerScore fields) from a score table."""
    columns = list(table.columns)
    tasks = [t for t in TASK_ORDER if f"{t}_cold_start" in columns]
    feature_times = features["feature_time"] if "feature_time" in features.columns else features.get("cutoff")
    results: list[dict[str, Any]] = []
    records = table.to_dict("records")
    for i, row in enumerate(records):
        scores: dict[str, Any] = {}
        for task in tasks:
            primary = primary_column(task, columns)
            entry: dict[str, Any] = {
                "score": _float(row.get(primary)) if primary else None,
                "percentile": _float(row.get(f"{task}_percentile")),
                "model_version": versions.get(task),
            }
            if task == "next_purchase":
                entry["horizons"] = {
                    c.rsplit("_", 1)[1]: _float(row[c])
                    for c in columns
                    if c.startswith("next_purchase_probability_") and _float(row[c]) is not None
                }
                entry["expected_days"] = _float(row.get("next_purchase_expected_days"))
            if task == "clv":
                entry["horizons"] = {
                    c.rsplit("_", 1)[1]: _float(row[c])
                    for c in columns
                    if c.startswith("clv_") and c[4:-1].isdigit() and _float(row[c]) is not None
                }
            reasons = row.get(f"{task}_reasons")
            if isinstance(reasons, list):
                entry["reasons"] = [
                    {
                        "feature": str(r.get("feature")),
                        "text": str(r.get("text")),
                        "contribution": float(r.get("contribution") or 0.0),
                    }
                    for r in reasons
                ]
            scores[task] = entry
        ftime = feature_times.iloc[i] if feature_times is not None else None
        stage = row.get("stage")
        results.append(
            {
                "customer_id": str(row["customer_id"]),
                "stage": str(stage) if stage is not None and stage == stage else None,
                "cold_start": bool(row.get("cold_start", False)),
                "feature_time": None if ftime is None or pd.isna(ftime) else pd.Timestamp(ftime).to_pydatetime(),
                "degraded": bool(degraded[i]) if degraded is not None else False,
                "holdout": bool(row.get("holdout", False)),
                "scores": scores,
                "actions": [
                    {
                        key: a.get(key)
                        for key in (
                            "action",
                            "expected_incremental_value",
                            "uplift",
                            "p_base",
                            "value",
                            "cost",
                            "reason",
                        )
                    }
                    for a in (row.get("actions") or [])
                ],
            }
        )
    return results
