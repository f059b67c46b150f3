"""The one scoring function the API and batch scoring share.

    columns = score_columns(features, scorer, policy, reference, tasks=None, explain=True, actions=True)
    table = score_table(...)   # the same, as a DataFrame

`features`: one row per customer (customer_id, cutoff, the journey features; all-NaN
rows for customers without features, which the models score with their cold-start
fallback). Returns one row per customer: each task's outputs and their percentile in the
reference population, the stage, the cold-start flag, reasons and next-best actions
(lists of dicts), and the holdout flag. `to_results` turns the columns into API objects; batch
scoring asks for the actions as `decide_columnar`'s long frame instead (`action_rows=True`).
Everything below works on numpy columns, not frames: see docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.columns import default_index
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


def _nba_scores(table: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The scores the action policy reads, as columns: customer_id and each task's primary output."""
    cols: dict[str, Any] = {"customer_id": np.asarray(table["customer_id"])}
    for task in TASK_ORDER:
        col = primary_column(task, list(table.keys()))
        if col is not None:
            cols[task] = np.asarray(table[col], dtype=float)
    return cols


def score_columns(
    features: pd.DataFrame,
    scorer: Scorer,
    policy: Any | None,
    reference: Reference,
    *,
    tasks: Sequence[str] | None = None,
    explain: bool = True,
    actions: bool = True,
    k: int = 3,
    action_rows: bool = False,
) -> dict[str, Any]:
    """The scoring function, as a dict of columns (numpy arrays; lists of dicts for reasons and
    actions). `score_table` is the same as a frame; the API formats these columns directly.

    `action_rows=True` (batch scoring) keeps the decision as `models.nba.decide_columnar`'s long
    frame under "action_rows" (one row per customer and rank) instead of building an "actions"
    list of dicts per customer: the same decision (`decide` is that frame, regrouped), without
    the dicts that batch output would turn straight back into columns."""
    chosen = [t for t in (tasks or TASK_ORDER) if t in scorer.tasks]
    features = default_index(features)
    n = len(features)
    table = scorer.score_columns(features, tasks=chosen, reasons=explain)
    for task in chosen:
        col = primary_column(task, list(table.keys()))
        if col is not None:
            table[f"{task}_percentile"] = reference.percentile(col, np.asarray(table[col], dtype=float))
    table["stage"] = features[STAGE_COLUMN].to_numpy() if STAGE_COLUMN in features.columns else np.full(n, None)
    if actions and policy is not None and action_rows and n:
        from models.nba import decide_columnar

        long = decide_columnar(features, pd.DataFrame(_nba_scores(table)), policy, k)
        table["action_rows"] = long
        first = long["rank"].to_numpy() == 1  # every customer has a rank-1 row, in feature-row order
        table["holdout"] = long["holdout"].to_numpy(dtype=bool)[first]
    elif actions and policy is not None:
        from models.nba import decide, holdout_mask

        table["actions"] = decide(features, _nba_scores(table), policy, k=k)
        table["holdout"] = holdout_mask(
            features["customer_id"].to_numpy(), policy.holdout_share, getattr(policy, "holdout_salt", "journeyml-nba")
        )
    else:
        table["actions"] = [[] for _ in range(n)]
        table["holdout"] = np.zeros(n, dtype=bool)
    return table


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
    """`score_columns` as a frame (one row per customer)."""
    return pd.DataFrame(
        score_columns(features, scorer, policy, reference, tasks=tasks, explain=explain, actions=actions, k=k)
    )


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _values(column: Any) -> list[Any]:
    return column.tolist() if hasattr(column, "tolist") else list(column)


_ACTION_KEYS = ("action", "expected_incremental_value", "uplift", "p_base", "value", "cost", "reason")


def to_results(
    table: Mapping[str, Any] | pd.DataFrame,
    features: pd.DataFrame,
    versions: Mapping[str, str],
    degraded: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """API objects (CustomerScore fields) from `score_columns` (or a `score_table` frame)."""
    columns = [str(c) for c in table.keys()]
    n = len(features)
    values = {c: _values(table[c]) for c in columns}
    tasks = [t for t in TASK_ORDER if f"{t}_cold_start" in columns]
    plan = []
    for task in tasks:
        horizons: list[tuple[str, str]] = []
        if task == "next_purchase":
            horizons = [(c.rsplit("_", 1)[1], c) for c in columns if c.startswith("next_purchase_probability_")]
        elif task == "clv":
            horizons = [(c.rsplit("_", 1)[1], c) for c in columns if c.startswith("clv_") and c[4:-1].isdigit()]
        plan.append((task, primary_column(task, columns), horizons))
    if "feature_time" in features.columns:
        times = features["feature_time"].tolist()
    elif "cutoff" in features.columns:
        times = features["cutoff"].tolist()
    else:
        times = [None] * n
    empty: list[Any] = [None] * n
    stages, colds, holdouts = values.get("stage", empty), values.get("cold_start", empty), values.get("holdout", empty)
    actions = values.get("actions", empty)
    flags = degraded.tolist() if degraded is not None else [False] * n
    results: list[dict[str, Any]] = []
    for i, cid in enumerate(values["customer_id"]):
        scores: dict[str, Any] = {}
        for task, primary, horizons in plan:
            entry: dict[str, Any] = {
                "score": _float(values[primary][i]) if primary else None,
                "percentile": _float(values[f"{task}_percentile"][i]) if f"{task}_percentile" in values else None,
                "model_version": versions.get(task),
            }
            if task in ("next_purchase", "clv"):
                entry["horizons"] = {h: v for h, c in horizons if (v := _float(values[c][i])) is not None}
            if task == "next_purchase":
                entry["expected_days"] = (
                    _float(values["next_purchase_expected_days"][i])
                    if "next_purchase_expected_days" in values
                    else None
                )
            reasons = values[f"{task}_reasons"][i] if f"{task}_reasons" in values else None
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
        ftime = times[i]
        stage = stages[i]
        results.append(
            {
                "customer_id": str(cid),
                "stage": str(stage) if stage is not None and stage == stage else None,
                "cold_start": bool(colds[i]) if colds[i] is not None else False,
                "feature_time": None if ftime is None or pd.isna(ftime) else pd.Timestamp(ftime).to_pydatetime(),
                "degraded": bool(flags[i]),
                "holdout": bool(holdouts[i]) if holdouts[i] is not None else False,
                "scores": scores,
                "actions": [{key: a.get(key) for key in _ACTION_KEYS} for a in (actions[i] or [])],
            }
        )
    return results
