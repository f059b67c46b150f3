"""Reasons: leaf attributions (the default) against exact TreeSHAP on a workspace's champions, cost and agreement.

    python benchmarks/bench_reasons.py --home $JOURNEY_HOME [--rows 2000] [--json]

For every champion (the primary output each task explains), on the warm customers of the newest
feature table: the CPU time of the contributions for 1 row and for 100 rows (`pred_contrib`
against `pred_leaf` plus the table gather (models.attribution); medians of interleaved repeats, one thread), and how
often the two methods agree on the top reason, on the set of the top 3, and on each top-3
reason's sign. Both add up to the same raw score (tests/models/test_attribution.py); a timing
model's period column is left out of both, as the API does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from bench_batch import open_workspace


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=os.environ.get("JOURNEY_HOME", ".journey"), help="a trained workspace")
    parser.add_argument("--rows", type=int, default=2_000, help="customers for the agreement figures")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings, tables = open_workspace(args.home)
    import pandas as pd

    from models.columns import FeatureColumns
    from models.estimators import booster_predict
    from serving.runtime import load_champions

    frame = pd.read_parquet(tables[-1]).rename(columns={"event_timestamp": "cutoff"})
    frame = frame.sample(n=min(args.rows, len(frame)), random_state=0).reset_index(drop=True)
    models, infos, _ = load_champions(settings)
    cols = FeatureColumns(frame)
    results: dict[str, Any] = {}
    for task, model in models.items():
        part = model.primary
        est = part.estimator_
        scored = part.score_columns(cols)
        warm = np.flatnonzero(~scored.cold)
        shap = est.contributions_matrix(scored.matrix[warm], "shap")
        leaf = est.contributions_matrix(scored.matrix[warm], "leaf")
        s, p = shap[:, :-1], leaf[:, :-1]
        top_s = np.argsort(-np.abs(s), axis=1)[:, :3]
        top_p = np.argsort(-np.abs(p), axis=1)[:, :3]
        same_sign = [
            np.sign(p[i, j]) == np.sign(s[i, j]) for i in range(len(p)) for j in top_p[i]
        ]  # fmt: skip
        one, hundred = scored.matrix[warm[:1]], scored.matrix[warm[:100]]
        timing: dict[str, float] = {}
        for _ in range(2):  # interleave the methods so load hits both
            for label, rows in (("1", one), ("100", hundred)):
                for method in ("shap", "leaf"):
                    ms = _median_ms(lambda e=est, m=method, r=rows: e.contributions_matrix(r, m), args.repeats // 2)
                    timing[f"{method}_{label}"] = min(timing.get(f"{method}_{label}", ms), ms)
        plain = est.with_periods(hundred, [0]) if hasattr(est, "with_periods") else hundred
        predict_100 = _median_ms(
            lambda e=est, x=plain: booster_predict(e.booster_, x, num_iteration=e.best_iteration_), args.repeats
        )
        results[task] = {
            "version": infos.get(task, {}).get("version"),
            "trees": est.best_iteration_,
            "rows": len(warm),
            "top1_agree": float(np.mean(top_s[:, 0] == top_p[:, 0])),
            "top3_set_agree": float(np.mean([set(a) == set(b) for a, b in zip(top_s, top_p, strict=True)])),
            "top1_in_shap_top3": float(np.mean([top_p[i, 0] in top_s[i] for i in range(len(top_p))])),
            "top3_sign_agree": float(np.mean(same_sign)),
            "ms_shap_1": timing["shap_1"],
            "ms_leaf_1": timing["leaf_1"],
            "ms_shap_100": timing["shap_100"],
            "ms_leaf_100": timing["leaf_100"],
            "ms_predict_100": predict_100,
            "speedup_100": timing["shap_100"] / max(timing["leaf_100"], 1e-9),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for task, r in results.items():
        print(
            f"{task} v{r['version']} ({r['trees']} trees, {r['rows']} warm rows): top-1 agree {r['top1_agree']:.0%}, "
            f"leaf top-1 in SHAP top 3 {r['top1_in_shap_top3']:.0%}, top-3 set agree {r['top3_set_agree']:.0%}, "
            f"top-3 signs agree {r['top3_sign_agree']:.0%}; CPU ms 1 row shap {r['ms_shap_1']:.3f} / leaf "
            f"{r['ms_leaf_1']:.3f}; 100 rows shap {r['ms_shap_100']:.2f} / leaf {r['ms_leaf_100']:.2f} "
            f"({r['speedup_100']:.0f}x; plain predict {r['ms_predict_100']:.2f})"
        )


if __name__ == "__main__":
    main()
