"""Metrics of a fitted task model (or baseline) on a split, and the evaluation plots.

Metric names are the same for the LightGBM run and every baseline run, so runs compare
column by column in the MLflow UI: `auc`, `pr_auc`, `log_loss`, `brier`, `ece`,
`lift_top_decile`, `lift_quality` for probabilities (suffixed `_<h>d` for secondary
horizons), `mae`, `rmse`, `spearman` for values, `concordance` for timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.metrics import classification_metrics, concordance_index, gains_curve, regression_metrics

CONCORDANCE_MAX_ROWS = 50_000


def timing_targets(labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ev = labels["event_days"].to_numpy(float)
    fu = labels["followup_days"].to_numpy(float)
    return np.where(np.isnan(ev), fu, ev), ~np.isnan(ev)


def score_metrics(kind: str, labels: pd.DataFrame, outputs: pd.DataFrame, task: str, horizons: list[int],
                  primary_horizon: int) -> dict[str, float]:  # fmt: skip
    """Metrics from label and output frames (rows aligned). Primary metrics are unsuffixed."""
    metrics: dict[str, float] = {}
    if kind == "binary":
        metrics.update(classification_metrics(labels["label"], outputs[f"{task}_probability"]))
    elif kind == "timing":
        for h in horizons:
            m = classification_metrics(labels[f"label_{h}d"], outputs[f"{task}_probability_{h}d"])
            suffix = "" if h == primary_horizon else f"_{h}d"
            metrics.update({f"{k}{suffix}": v for k, v in m.items()})
        if f"{task}_expected_days" in outputs.columns:
            time, event = timing_targets(labels)
            pred = outputs[f"{task}_expected_days"].to_numpy(float)
            if len(time) > CONCORDANCE_MAX_ROWS:
                pick = np.random.default_rng(0).choice(len(time), CONCORDANCE_MAX_ROWS, replace=False)
                time, event, pred = time[pick], event[pick], pred[pick]
            metrics["concordance"] = concordance_index(time, event, pred)
    else:
        metrics.update(regression_metrics(labels["label"], outputs[f"{task}_{primary_horizon}d"]))
    return metrics


def per_cutoff_metrics(kind: str, labels: pd.DataFrame, outputs: pd.DataFrame, task: str, horizons: list[int],
                       primary_horizon: int) -> dict[str, dict[str, float]]:  # fmt: skip
    out = {}
    for cutoff, idx in labels.groupby("cutoff").groups.items():
        rows = labels.index.get_indexer(idx)
        out[pd.Timestamp(cutoff).date().isoformat()] = score_metrics(
            kind, labels.iloc[rows], outputs.iloc[rows], task, horizons, primary_horizon
        )
    return out


def _fig() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def classification_plots(y: np.ndarray, scores: dict[str, np.ndarray], title: str) -> dict[str, Any]:
    """ROC, precision-recall, calibration (reliability) and cumulative gains, one curve per model."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _fig()
    figs = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC - {title}")
    ax.legend(loc="lower right", fontsize=8)
    figs["roc.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=name)
    ax.axhline(float(np.mean(y)), color="k", ls=":", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall - {title}")
    ax.legend(fontsize=8)
    figs["pr.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        bins = np.minimum((np.asarray(p) * 10).astype(int), 9)
        frame = pd.DataFrame({"b": bins, "p": p, "y": y}).groupby("b").mean()
        ax.plot(frame["p"], frame["y"], marker="o", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"Calibration - {title}")
    ax.legend(fontsize=8)
    figs["calibration.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        q, captured = gains_curve(y, p)
        ax.plot(np.r_[0, q], np.r_[0, captured], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="share of customers targeted", ylabel="share of positives captured", title=f"Gains - {title}")
    ax.legend(fontsize=8)
    figs["cumulative_gains.png"] = fig
    return figs


def regression_plots(y: np.ndarray, scores: dict[str, np.ndarray], title: str) -> dict[str, Any]:
    plt = _fig()
    figs = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        order = np.argsort(-np.asarray(p), kind="stable")
        captured = np.cumsum(np.clip(y[order], 0, None))
        total = captured[-1] if len(captured) and captured[-1] > 0 else 1.0
        ax.plot(np.arange(1, len(y) + 1) / len(y), captured / total, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="share of customers targeted", ylabel="share of value captured", title=f"Value gains - {title}")
    ax.legend(fontsize=8)
    figs["cumulative_gains.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    first = next(iter(scores))
    ax.scatter(scores[first], y, s=3, alpha=0.3)
    hi = float(np.nanpercentile(np.r_[y, scores[first]], 99)) if len(y) else 1.0
    ax.plot([0, hi], [0, hi], "k:", lw=1)
    ax.set(xlim=(0, hi), ylim=(min(0.0, float(np.nanmin(y))) if len(y) else 0, hi), xlabel="predicted",
           ylabel="actual", title=f"Predicted vs actual - {title}")  # fmt: skip
    figs["predicted_vs_actual.png"] = fig
    return figs


def shap_plots(contrib: pd.DataFrame, values: pd.DataFrame, importance: pd.DataFrame, top: int = 20) -> dict[str, Any]:
    """SHAP summary (from LightGBM pred_contrib) and gain importance."""
    plt = _fig()
    figs = {}
    shap = contrib.drop(columns="bias", errors="ignore")
    mean_abs = shap.abs().mean().sort_values(ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(mean_abs) + 1.5))
    rng = np.random.default_rng(0)
    for i, feat in enumerate(reversed(mean_abs.index.tolist())):
        s = shap[feat].to_numpy(float)
        v = pd.to_numeric(values[feat], errors="coerce").to_numpy(float) if feat in values.columns else np.zeros(len(s))
        lo, hi = np.nanpercentile(v, [5, 95]) if np.isfinite(v).any() else (0.0, 1.0)
        color = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        ax.scatter(s, i + rng.uniform(-0.3, 0.3, len(s)), c=np.nan_to_num(color, nan=0.5), cmap="coolwarm", s=3)
    ax.set_yticks(range(len(mean_abs)))
    ax.set_yticklabels(list(reversed(mean_abs.index.tolist())), fontsize=8)
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlabel="SHAP value (raw score units; colour = feature value, blue low, red high)", title="SHAP summary")
    fig.tight_layout()
    figs["shap_summary.png"] = fig

    imp = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(imp) + 1.5))
    ax.barh(imp["feature"], imp["gain"])
    ax.set(xlabel="total gain", title="Feature importance (gain)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    figs["feature_importance.png"] = fig
    return figs


def save_figures(figs: dict[str, Any], folder: Path) -> list[Path]:
    plt = _fig()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = folder / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
