"""Next-best-action benchmark: the policy judged against the simulator's truth, and decision speed.

    python benchmarks/bench_nba.py                      # 50,000 customers, 365 days, seed 0
    python benchmarks/bench_nba.py --customers 100000 --seeds 0 1 2
    python benchmarks/bench_nba.py --speed-only --rows 1000000

Part 1 prints, per seed, the value per 1,000 customers of random actions, a stage-to-action rule,
propensity targeting, journeyml's uplift policy and the oracle (`training.nba.evaluate_on_simulator`,
the same code as `journey nba evaluate`), plus the off-policy estimates. Part 2 times `decide_columnar`
and `decide` on a synthetic feature/score matrix with the default catalog (priors only, so the time is
the decision itself, not model inference), and `decide` / `decide_columnar` for one customer (the API's
case; `decide` then works row by row).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def speed(rows: int, seed: int = 0) -> dict[str, float]:
    from models.nba import Policy, decide, decide_columnar
    from training.nba import load_catalog

    catalog = load_catalog()
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.arange(rows)).map("c{:07d}".format).to_numpy(dtype=object)
    never = rng.random(rows) < 0.4
    features = pd.DataFrame(
        {
            "customer_id": ids,
            "journey_stage": rng.choice(catalog.stages, rows),
            "days_since_last_contact": np.where(never, np.nan, rng.uniform(0, 90, rows)),
            "last_contact_action": np.where(never, None, rng.choice(catalog.action_ids, rows)),
            "contacts_7d": rng.integers(0, 2, rows).astype(float),
            "contacts_30d": rng.integers(0, 4, rows).astype(float),
            "contacts_90d": rng.integers(0, 8, rows).astype(float),
            "tenure_days": rng.uniform(0, 700, rows),
            "orders_lifetime": rng.integers(0, 6, rows).astype(float),
            "aov_lifetime": rng.gamma(2.0, 30.0, rows),
        }
    )
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "churn": rng.random(rows),
            "next_purchase": rng.random(rows),
            "conversion": rng.random(rows),
        }
    )
    policy = Policy(catalog)
    out = {"rows": float(rows), "actions": float(len(catalog.actions))}
    t = time.perf_counter()
    decide_columnar(features, scores, policy, k=3, with_reasons=False)
    out["columnar_no_reasons_s"] = time.perf_counter() - t
    t = time.perf_counter()
    decide_columnar(features, scores, policy, k=3)
    out["columnar_s"] = time.perf_counter() - t
    n_list = min(rows, 100_000)
    t = time.perf_counter()
    decide(features.iloc[:n_list], scores.iloc[:n_list], policy, k=3)
    out[f"list_{n_list}_s"] = time.perf_counter() - t
    # One customer, as the API asks: the row-by-row path against the vectorised one on the same row.
    one, one_scores = features.iloc[:1].copy(), scores.iloc[:1].copy()
    for name, fn in (("decide_1_customer_ms", decide), ("columnar_1_customer_ms", decide_columnar)):
        fn(one, one_scores, policy, k=3)
        calls = 300 if fn is decide else 30
        t = time.perf_counter()
        for _ in range(calls):
            fn(one, one_scores, policy, k=3)
        out[name] = (time.perf_counter() - t) / calls * 1000.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--learner", default="lift", choices=["lift", "t", "x", "s"])
    parser.add_argument(
        "--treated-per-customer",
        type=float,
        default=2.0,
        help="logged contacts to learn from per simulated customer (the CLI caps them at 40,000)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the decision-speed part")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    args = parser.parse_args()

    if not args.speed_only:
        from training.nba import SimEvalConfig, TrainConfig, UpliftParams, evaluate_on_simulator, evaluation_table

        for seed in args.seeds:
            cfg = SimEvalConfig(
                customers=args.customers, days=args.days, seed=seed, budget_share=args.budget,
                train=TrainConfig(max_treated=int(args.treated_per_customer * args.customers),
                                  uplift=UpliftParams(learner=args.learner, seed=seed)),
            )  # fmt: skip
            result = evaluate_on_simulator(cfg, progress=lambda m: print(f"  {m}", flush=True))
            print(f"\n== {args.customers:,} customers, {args.days} days, seed {seed}, budget {args.budget:.0%} "
                  f"({result['seconds']} s)")  # fmt: skip
            print(evaluation_table(result))
            if args.json:
                print(json.dumps(result))
    timing = speed(args.rows)
    print(f"\n== decision speed, {int(timing['rows']):,} customers x {int(timing['actions'])} actions, k = 3")
    for key, value in timing.items():
        if key.endswith("_s"):
            print(f"  {key[:-2]:24} {value:8.2f} s")
        elif key.endswith("_ms"):
            print(f"  {key[:-3]:24} {value:8.3f} ms")
    if args.json:
        print(json.dumps(timing))


if __name__ == "__main__":
    main()
