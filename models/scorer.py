"""The one scoring function the API and batch scoring share. Pure: a frame in, columns (or a frame) out.

    scorer = Scorer({"churn": churn_model, "clv": clv_model})
    scores = scorer.score(features)            # features: one row per customer (and cutoff)

Output, one row per input row in the same order: `customer_id` (and `cutoff` when given),
every task's outputs (`churn_probability`, `next_purchase_probability_7d` ...
`next_purchase_expected_days`, `conversion_probability`, `clv_90d` ...), per task
`<task>_cold_start` and `<task>_reasons` (a list of dicts: feature, value, signed
contribution in raw score units, direction, text), and `cold_start` (any task fell back).
`score_columns` returns the same as a dict of numpy columns, computed on arrays (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from models.attribution import METHODS
from models.columns import FeatureColumns, default_index
from models.journey_model import PartScores
from models.reasons import Describe, definitions_describer, top_reasons_matrix
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
        attribution: str = "leaf",
    ) -> None:
        """`spec_hashes` (task -> hash of the label spec in force) makes every model check it was trained
        on that spec; a mismatch raises SpecMismatchError here, before anything is scored.
        `attribution` is how reasons are computed: `leaf` (TreeSHAP's expectation given the leaves a row
        reaches, models.attribution) or `shap` (exact TreeSHAP, 20-80 times the cost)."""
        if attribution not in METHODS:
            raise ValueError(f"unknown attribution method {attribution!r}; choose one of {METHODS}")
        self.attribution = attribution
        self.models = dict(models)
        self.spec_hashes = dict(spec_hashes or {})
        self.top_k = top_k
        self.describe = describe or definitions_describer()
        for task, model in self.models.items():
            model.check_spec(self.spec_hashes.get(task))
        if attribution == "leaf":  # build the leaf credit tables now, not on the first request
            for model in self.models.values():
                est = model.primary.estimator_
                if hasattr(est, "leaf_attribution"):
                    est.leaf_attribution()

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
        return pd.DataFrame(self.score_columns(features, tasks, reasons))

    def score_columns(
        self, features: pd.DataFrame, tasks: Iterable[str] | None = None, reasons: bool = True
    ) -> dict[str, Any]:
        """`score` as a dict of columns (numpy arrays; lists for reasons), without building a frame.

        The array path: the frame's columns are read once (FeatureColumns), each model encodes one
        float32 matrix and asks its booster once (a hazard model stacks its periods), and
        attributions run only for the warm rows of the tasks whose reasons are asked for."""
        frame = default_index(features)
        chosen = list(tasks) if tasks is not None else self.tasks
        unknown = [t for t in chosen if t not in self.models]
        if unknown:
            raise KeyError(f"no model loaded for {unknown}; loaded: {self.tasks}")
        cols = FeatureColumns(frame)
        out: dict[str, Any] = {c: frame[c] for c in KEYS if c in frame.columns}
        cold_any = np.zeros(len(frame), dtype=bool)
        for task in chosen:
            model = self.models[task]
            scored = [part.score_columns(cols) for part in model.parts]
            for part_scores in scored:
                out.update(part_scores.outputs)
            cold = scored[0].cold
            out[f"{task}_cold_start"] = cold
            cold_any |= cold
            if reasons:
                out[f"{task}_reasons"] = self._reasons(model, cols, scored[0])
        out["cold_start"] = cold_any
        return out

    def _reasons(self, model: TaskModel, cols: FeatureColumns, scored: PartScores) -> list[list[dict[str, Any]]]:
        part = model.primary
        cold = scored.cold
        result: list[list[dict[str, Any]]] = [[] for _ in range(cols.n)]
        warm = np.flatnonzero(~cold)
        if len(warm):
            contrib, names = part.contributions_rows(scored, warm, self.attribution)

            def column_of(name: str) -> list[Any]:
                return part.feature_column(cols, scored, name, warm)

            found = top_reasons_matrix(contrib, names, column_of, self.describe, self.top_k)
            for i, r in zip(warm.tolist(), found, strict=True):
                result[i] = r
        if cold.any():
            segments = [c for c in part.cold_start_.segment_columns_ if c in cols.columns]
            for i in np.flatnonzero(cold).tolist():
                seg = ", ".join(f"{c}={cols.objects(c)[i]}" for c in segments)
                text = "too little history: prior from similar customers" + (f" ({seg})" if seg else "")
                result[i] = [{"feature": "cold_start", "value": None, "contribution": 0.0, "direction": "none",
                              "text": text}]  # fmt: skip
        return result
