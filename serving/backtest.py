"""`journey backtest --as-of T`: the scores made at T against what happened after T.

Once a task's horizon has passed (T + horizon <= the last event in the store), the customers
eligible at T get their labels from the events in (T, T + horizon] (training/labels.py, the
same specs the models were trained on) and are compared with their scores at T:

- the scores `journey score` wrote for T (default $JOURNEY_HOME/scores/scores_<T>.parquet, or
  --scores FILE) when present: what was really sent out, even if the champions moved since;
- else the current champions' scores, recomputed on the features as of T.

Per task: AUC and the usual classification metrics (models/metrics.py) for probabilities,
error and rank correlation for values; by decile of the score (1 = highest), the mean score,
the observed rate (or mean value), expected against actual counts (sum of scores against
events) and the lift over the base rate. Logged to MLflow, experiment `journeyml-backtests`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import typer

from core.output import emit, err, fail
from core.settings import Settings, get_settings
from serving.batch import TASK_ORDER, BatchError, default_destination, plan_features

EXPERIMENT = "journeyml-backtests"
DECILES = 10


def deciles(y: np.ndarray, score: np.ndarray, ids: np.ndarray, kind: str) -> pd.DataFrame:
    """Calibration and lift by decile of the score (1 = highest; ties broken by customer id).

    Columns: decile, n, mean_score, actual_rate (binary) or mean_actual (values), expected
    (sum of scores), actual (sum of outcomes), lift (actual rate or mean over the overall one)
    and cumulative_capture (share of all events or value in this decile and the ones above).
    """
    order = np.lexsort((ids, -score))
    groups = np.array_split(order, DECILES)
    base = float(y.mean()) if len(y) else float("nan")
    total = float(np.clip(y, 0, None).sum()) if kind == "regression" else float(y.sum())
    rows, captured = [], 0.0
    for k, idx in enumerate(groups, start=1):
        if len(idx) == 0:
            continue
        actual = float(y[idx].sum())
        captured += float(np.clip(y[idx], 0, None).sum()) if kind == "regression" else actual
        mean_actual = actual / len(idx)
        rows.append(
            {
                "decile": k,
                "n": len(idx),
                "mean_score": float(score[idx].mean()),
                ("mean_actual" if kind == "regression" else "actual_rate"): mean_actual,
                "expected": float(score[idx].sum()),
                "actual": actual,
                "lift": mean_actual / base if base else float("nan"),
                "cumulative_capture": captured / total if total else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _metrics(kind: str, y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    from models.metrics import classification_metrics, regression_metrics

    metrics: dict[str, float] = (
        classification_metrics(y.astype(int), p) if kind == "binary" else regression_metrics(y, p)
    )
    metrics["expected_total"] = float(p.sum())
    metrics["actual_total"] = float(y.sum())
    return {k: (round(v, 6) if np.isfinite(v) else None) for k, v in metrics.items()}


def _targets(task: str, spec: Any, outputs: list[str]) -> list[tuple[str, str, str, int]]:
    """(score column, label column, kind, horizon days) pairs a task's outputs can be judged on."""
    pairs = []
    for h in spec.all_horizons:
        if task == "next_purchase":
            col = f"next_purchase_probability_{h}d"
        elif task == "clv":
            col = f"clv_{h}d"
        else:
            col = outputs[0] if h == spec.horizon_days else ""
        if col in outputs:
            pairs.append((col, f"label_{h}d", "regression" if spec.kind == "regression" else "binary", h))
    return pairs


def _scores_file(path: Path, columns: list[str]) -> pd.DataFrame | None:
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype={"customer_id": str})
    else:
        available = set(pq.ParquetFile(path).schema_arrow.names)
        frame = pq.read_table(path, columns=[c for c in ["customer_id", *columns] if c in available]).to_pandas()
    return frame if "customer_id" in frame.columns else None


def run_backtest(settings: Settings, cutoff: pd.Timestamp, scores_path: Path | None = None) -> dict[str, Any]:
    """Labels after the cutoff against the scores at it, per champion task. Raises BatchError."""
    from serving.runtime import load_champions
    from training.labels import labels, load_spec
    from training.store import StoreError, load_label_events, store_glob

    started = time.perf_counter()
    try:
        events = load_label_events(store_glob(settings.events_dir))
    except StoreError as exc:
        raise BatchError(str(exc)) from exc
    models, infos, _ = load_champions(settings)
    if not models:
        raise BatchError("no champion models yet: run `journey train --task <task>` (and promote a version) first")
    if cutoff >= events.data_end:
        raise BatchError(f"no events after {cutoff.isoformat()} (data end {events.data_end.isoformat()}): nothing "
                         "happened yet to compare the scores with")  # fmt: skip
    path = scores_path or Path(default_destination(settings, cutoff))
    if scores_path is not None and not scores_path.is_file():
        raise BatchError(f"--scores: no file at {scores_path}")

    tasks: dict[str, dict[str, Any]] = {}
    plans: dict[str, tuple[Any, pd.DataFrame, list[tuple[str, str, str, int]]]] = {}
    for task in [t for t in TASK_ORDER if t in models]:
        spec = load_spec(task)
        lab = labels(events.events, spec, [cutoff], customers=events.first_seen, observed_until=events.data_end)
        # A horizon is over when the data reaches its end (the labels' `complete_<h>d`).
        targets = [
            t
            for t in _targets(task, spec, models[task].outputs)
            if cutoff + pd.Timedelta(days=t[3]) <= events.data_end
        ]
        horizon_end = cutoff + pd.Timedelta(days=spec.horizon_days)
        if lab.empty or not targets:
            tasks[task] = {"status": "pending" if not targets else "no eligible customers",
                           "horizon_end": horizon_end.isoformat(), "eligible": len(lab)}  # fmt: skip
            continue
        plans[task] = (spec, lab, targets)
    if not plans:
        raise BatchError(
            f"no task can be judged at {cutoff.date()} yet: every horizon ends after the data end "
            f"{events.data_end.isoformat()} - " + ", ".join(f"{t} {v['horizon_end'][:10]}" for t, v in tasks.items())
        )

    needed = sorted({col for _, _, targets in plans.values() for col, *_ in targets})
    from_file = _scores_file(path, needed) if path.is_file() else None
    file_cols = set(from_file.columns) if from_file is not None else set()
    recompute = sorted({t for t, (_, _, targets) in plans.items() if any(c not in file_cols for c, *_ in targets)})
    scored = from_file.drop_duplicates("customer_id").set_index("customer_id") if from_file is not None else None
    recomputed = None
    if recompute:
        ids = sorted(set().union(*(set(plans[t][1]["customer_id"]) for t in recompute)))
        recomputed = _recompute(settings, models, cutoff, ids, recompute)

    for task, (spec, lab, targets) in plans.items():
        source = "recomputed" if task in recompute else str(path)
        table = recomputed if task in recompute else scored
        assert table is not None
        joined = lab.set_index("customer_id").join(table[[c for c, *_ in targets]], how="left")
        entry: dict[str, Any] = {
            "status": "judged",
            "scores": source,
            "version": infos[task].get("version") if task in recompute else _file_version(path, task),
            "eligible": len(lab),
            "horizon_end": (cutoff + pd.Timedelta(days=spec.horizon_days)).isoformat(),
            "targets": {},
        }
        for col, label_col, kind, horizon in targets:
            known = joined[col].notna() & joined[label_col].notna()
            part = joined[known]
            y = part[label_col].to_numpy(dtype=float)
            p = part[col].to_numpy(dtype=float)
            entry["targets"][col] = {
                "horizon_days": horizon,
                "kind": kind,
                "customers": int(known.sum()),
                "unscored": int((~known).sum()),
                "metrics": _metrics(kind, y, p),
                "deciles": deciles(y, p, part.index.to_numpy(dtype=str), kind).round(6).to_dict("records"),
            }
        tasks[task] = entry
    summary = {
        "ok": True,
        "cutoff": cutoff.isoformat(),
        "data_end": events.data_end.isoformat(),
        "tasks": tasks,
        "seconds": round(time.perf_counter() - started, 3),
    }
    summary["mlflow_run_id"] = log_backtest(settings, summary)
    return summary


def _file_version(path: Path, task: str) -> str | None:
    col = f"{task}_model_version"
    try:
        if path.suffix.lower() == ".csv":
            values = pd.read_csv(path, usecols=[col], dtype=str)[col]
        else:
            values = pq.read_table(path, columns=[col]).column(col).to_pandas()
    except (KeyError, ValueError):
        return None
    versions = sorted(values.dropna().unique().tolist())
    return ",".join(versions) if versions else None


def _recompute(
    settings: Settings, models: dict[str, Any], cutoff: pd.Timestamp, ids: list[str], tasks: list[str]
) -> pd.DataFrame:
    """The current champions' outputs at the cutoff for `ids` (features as `journey score` reads them)."""
    from models.scorer import Scorer
    from serving.scoring import Reference, score_table

    scorer = Scorer({t: models[t] for t in tasks})
    plan = plan_features(settings, cutoff, ids)
    parts = []
    for feats in plan.chunks(50_000):
        table = score_table(feats, scorer, None, Reference(), tasks=tasks, explain=False, actions=False)
        keep = [c for c in table.columns if c.startswith(tuple(tasks)) and table[c].dtype.kind == "f"]
        parts.append(table[["customer_id", *keep]])
    return pd.concat(parts, ignore_index=True).set_index("customer_id")


def _plot(task: str, target: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = pd.DataFrame(target["deciles"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].bar(d["decile"] - 0.2, d["expected"], width=0.4, label="expected (sum of scores)", color="#8da0cb")
    axes[0].bar(d["decile"] + 0.2, d["actual"], width=0.4, label="actual", color="#fc8d62")
    axes[0].set(xlabel="score decile (1 = highest)", ylabel="count" if target["kind"] == "binary" else "value",
                title=f"{task}: expected vs actual")  # fmt: skip
    axes[0].legend(fontsize=8)
    axes[1].bar(d["decile"], d["lift"], color="#66c2a5")
    axes[1].axhline(1.0, color="grey", lw=1, ls="--")
    axes[1].set(xlabel="score decile (1 = highest)", ylabel="lift over the base rate", title=f"{task}: lift")
    fig.tight_layout()
    return fig


def log_backtest(settings: Settings, summary: dict[str, Any]) -> str | None:
    import mlflow

    from training.registry import client, default_artifact_root, use_experiment

    uri = settings.tracking_uri
    try:
        client(uri)
        use_experiment(EXPERIMENT, default_artifact_root(uri, settings.root))
        with mlflow.start_run(run_name=f"backtest-{summary['cutoff'][:10]}", tags={"cutoff": summary["cutoff"]}) as run:
            mlflow.log_params({"cutoff": summary["cutoff"], "data_end": summary["data_end"]})
            metrics: dict[str, float] = {}
            for task, entry in summary["tasks"].items():
                for col, target in entry.get("targets", {}).items():
                    metrics.update({f"{col}_{k}": v for k, v in target["metrics"].items() if v is not None})
                    mlflow.log_table(pd.DataFrame(target["deciles"]), f"deciles/{col}.json")
                    fig = _plot(task, target)
                    mlflow.log_figure(fig, f"plots/{col}.png")
                    import matplotlib.pyplot as plt

                    plt.close(fig)
                mlflow.set_tag(f"{task}_scores", str(entry.get("scores", entry.get("status"))))
            mlflow.log_metrics(metrics)
            mlflow.log_dict(summary, "backtest.json")
            return str(run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - the comparison is done; a tracking failure must not hide it
        err.print(f"[yellow]warning[/yellow]: could not log the backtest to MLflow ({type(exc).__name__}: {exc})")
        return None


def human(summary: dict[str, Any]) -> str:
    lines = [f"backtest of the scores at {summary['cutoff']} (events until {summary['data_end']})"]
    for task, entry in summary["tasks"].items():
        if entry["status"] != "judged":
            lines.append(f"  {task}: {entry['status']} (horizon ends {entry['horizon_end'][:10]})")
            continue
        for col, target in entry["targets"].items():
            m = target["metrics"]
            main = (f"AUC {m.get('auc')}, lift@10% {m.get('lift_top_decile')}, ECE {m.get('ece')}"
                    if target["kind"] == "binary" else f"Spearman {m.get('spearman')}, MAE {m.get('mae')}")  # fmt: skip
            lines.append(f"  {col} ({target['customers']:,} customers, scores {entry['scores']}): {main}; expected "
                         f"{m['expected_total']:.1f} vs actual {m['actual_total']:.1f}")  # fmt: skip
    return "\n".join(lines)


def command(
    as_of: str = typer.Option(..., "--as-of", help="The cutoff whose scores are judged (UTC)."),
    scores: Path | None = typer.Option(
        None, "--scores", help="Scores written by `journey score` for this cutoff (default: the one in $JOURNEY_HOME)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Compare the scores made at a past cutoff with what happened since: AUC, calibration, lift."""
    import os

    from core.time import to_utc

    try:
        cutoff = to_utc(as_of)
    except ValueError as exc:
        fail(str(exc), json_out)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        summary = run_backtest(get_settings(), cutoff, scores)
    except BatchError as exc:
        fail(str(exc), json_out)
    emit(summary, json_out, human(summary))
