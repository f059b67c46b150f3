"""The one scoring function the API and batch scoring share. Pure: frames in, frames out.

    scorer = Scorer({"churn": churn_model, "clv": clv_model})
    scores = scorer.score(features)            # features: one row per customer (and cutoff)

Output, one row per input row in the same order: `customer_id` (and `cutoff` when given),
every task's outputs (`churn_probability`, `next_purchase_probability_7d` ...
`next_purchase_expected_days`, `conversion_probability`, `clv_90d` ...), per task
`<task>_cold_start` and `<task>_reasons` (a list of dicts: feature, value, signed
contribution in raw score units, direction, text), and `cold_start` (any task fell back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from models.reasons import Describe, definitions_describer, top_reasons
from models.task_model import TaskModel

KEYS = ("customer_id", "cutoff")


class Scorer:
    def __init__(
        self,
        models: Mapping[str, TaskModel],
        *,
        spec_hashes: Mapping[str, str] | None = None,
        top_k: int = 3,
        describe: Describe | None = None,
    ) -> None:
        """`spec_hashes` (task -> hash of the label spec in force) makes every model check it was trained
        on that spec; a mismatch raises SpecMismatchError here, before anything is scored."""
        self.models = dict(models)
        self.spec_hashes = dict(spec_hashes or {})
        self.top_k = top_k
        self.describe = describe or definitions_describer()
        for task, model in self.models.items():
            model.check_spec(self.spec_hashes.get(task))

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    @property
    def input_features(self) -> list[str]:
        cols: list[str] = []
        for model in self.models.values():
            cols += [c for c in model.input_features if c not in cols]
        return cols

    def score(self, features: pd.DataFrame, tasks: Iterable[str] | None = None, reasons: bool = True) -> pd.DataFrame:
        """Scores with reasons for every row of `features` (customers with no features: all-missing
        rows, which get the cold-start fallback)."""
        frame = features.reset_index(drop=True)
        out = frame[[c for c in KEYS if c in frame.columns]].copy()
        chosen = list(tasks) if tasks is not None else self.tasks
        unknown = [t for t in chosen if t not in self.models]
        if unknown:
            raise KeyError(f"no model loaded for {unknown}; loaded: {self.tasks}")
        cold_any = pd.Series(False, index=frame.index)
        for task in chosen:
            model = self.models[task]
            pred = model.predict(frame)
            cold = pred.pop("cold_start").astype(bool)
            for col in pred.columns:
                out[col] = pred[col].to_numpy()
            out[f"{task}_cold_start"] = cold.to_numpy()
            cold_any |= cold
            if reasons:
                out[f"{task}_reasons"] = self._reasons(model, frame, cold.to_numpy())
        out["cold_start"] = cold_any.to_numpy()
        return out

    def _reasons(self, model: TaskModel, frame: pd.DataFrame, cold: Any) -> list[list[dict[str, Any]]]:
        part = model.primary
        result: list[list[dict[str, Any]]] = [[] for _ in range(len(frame))]
        warm = [i for i in range(len(frame)) if not cold[i]]
        if warm:
            rows = frame.iloc[warm]
            contrib = part.contributions(rows)
            values = part.feature_values(rows)
            for i, r in zip(warm, top_reasons(contrib, values, self.describe, self.top_k), strict=True):
                result[i] = r
        segments = part.cold_start_.segment_columns_
        for i in range(len(frame)):
            if cold[i]:
                seg = ", ".join(f"{c}={frame.iloc[i][c]}" for c in segments if c in frame.columns)
                text = "too little history: prior from similar customers" + (f" ({seg})" if seg else "")
                result[i] = [{"feature": "cold_start", "value": None, "contribution": 0.0, "direction": "none",
                              "text": text}]  # fmt: skip
        return result
