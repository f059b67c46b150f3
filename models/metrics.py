"""Evaluation metrics as pure functions of arrays (no plotting, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)


def expected_calibration_error(y: Any, p: Any, n_bins: int = 10) -> float:
    """ECE with equal-width bins on [0, 1], weighted by the share of rows in each bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    used = count > 0
    return float(np.abs(sum_p[used] - sum_y[used]).sum() / len(y))


def calibration_noise(p: Any, n_bins: int = 10) -> float:
    """The ECE a perfectly calibrated model would show on this sample, in expectation.

    With outcomes drawn as Bernoulli(p), each bin's |sum(y) - sum(p)| is about normal with variance
    sum(p (1 - p)); its mean absolute value is sqrt(2/pi) times the standard deviation. On a few
    thousand rows this is 0.01-0.03, so a fixed ECE bound alone would reject well-calibrated models
    on small data; the promotion gate adds it to the configured bound.
    """
    p = np.asarray(p, dtype=float)
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    var = np.bincount(idx, weights=p * (1.0 - p), minlength=n_bins)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(var).sum() / len(p))


def gains_curve(y: Any, score: Any, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gains: share of positives captured when targeting the top q of rows by score.

    Returns (q, captured) at q = 1/points ... 1. Ties are broken by row order after a stable sort.
    """
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    cum = np.cumsum(y[order])
    total = cum[-1] if len(cum) else 0.0
    q = np.arange(1, points + 1) / points
    k = np.clip(np.ceil(q * len(y) - 1e-9).astype(int), 1, max(len(y), 1))
    captured = cum[k - 1] / total if total > 0 else np.zeros_like(q)
    return q, captured


def lift_at(y: Any, score: Any, share: float = 0.1) -> float:
    """Positive rate in the top `share` of rows by score divided by the overall positive rate."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    base = y.mean() if len(y) else 0.0
    if base <= 0:
        return float("nan")
    k = max(int(np.ceil(share * len(y))), 1)
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean() / base)


def lift_quality(y: Any, score: Any, points: int = 100) -> float:
    """Average lift over audience sizes, normalised: 0 = random targeting, 1 = perfect.

    The area between the model's cumulative gains curve and the diagonal, divided by the
    same area for a perfect ranking (the "accuracy ratio" over audience sizes 1%..100%).
    """
    y = np.asarray(y, dtype=float)
    base = y.mean() if len(y) else 0.0
    if base <= 0 or base >= 1:
        return float("nan")
    q, captured = gains_curve(y, score, points)
    perfect = np.minimum(q / base, 1.0)
    return float((captured - q).sum() / (perfect - q).sum())


def classification_metrics(y: Any, p: Any) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier, ECE, lift in the top decile, lift quality, base rate."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    out = {"n": float(len(y)), "base_rate": float(y.mean()) if len(y) else float("nan")}
    if len(np.unique(y)) < 2:
        return {**out, "auc": float("nan"), "pr_auc": float("nan"), "log_loss": float("nan"),
                "brier": float("nan"), "ece": float("nan"), "ece_noise": float("nan"), "lift_top_decile": float("nan"),
                "lift_quality": float("nan")}  # fmt: skip
    out.update(
        auc=float(skm.roc_auc_score(y, p)),
        pr_auc=float(skm.average_precision_score(y, p)),
        log_loss=float(skm.log_loss(y, _clip(p), labels=[0, 1])),
        brier=float(skm.brier_score_loss(y, p)),
        ece=expected_calibration_error(y, p),
        ece_noise=calibration_noise(p),
        lift_top_decile=lift_at(y, p, 0.1),
        lift_quality=lift_quality(y, p),
    )
    return out


def regression_metrics(y: Any, pred: Any) -> dict[str, float]:
    """MAE, RMSE, Spearman rank correlation, and the lift quality of ranking by predicted value."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    err = pred - y
    spearman = float(stats.spearmanr(y, pred).statistic) if len(y) > 2 and np.std(pred) > 0 else float("nan")
    return {
        "n": float(len(y)),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "spearman": spearman,
        "mean_label": float(y.mean()),
        "mean_prediction": float(pred.mean()),
        "value_capture_top_decile": _value_capture(y, pred, 0.1),
    }


def _value_capture(y: np.ndarray, pred: np.ndarray, share: float) -> float:
    total = np.clip(y, 0, None).sum()
    if total <= 0:
        return float("nan")
    k = max(int(np.ceil(share * len(y))), 1)
    top = np.argsort(-pred, kind="stable")[:k]
    return float(np.clip(y[top], 0, None).sum() / total)


def concordance_index(time: Any, event: Any, predicted_time: Any) -> float:
    """Harrell's C for right-censored times: P(shorter predicted time | comparable pair).

    A pair (i, j) is comparable when i had the event and time_i < time_j (j may be
    censored). Ties in prediction count one half. O(n log n) with a Fenwick tree.
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=bool)
    pred = np.asarray(predicted_time, dtype=float)
    n = len(t)
    if n < 2 or not e.any():
        return float("nan")
    ranks = stats.rankdata(pred, method="dense").astype(int)
    m = int(ranks.max())
    tree = np.zeros(m + 1, dtype=np.int64)

    def add(i: int) -> None:
        while i <= m:
            tree[i] += 1
            i += i & -i

    def prefix(i: int) -> int:
        s = 0
        while i > 0:
            s += int(tree[i])
            i -= i & -i
        return s

    order = np.argsort(-t, kind="stable")
    ts, es, rs = t[order], e[order], ranks[order]
    concordant = tied = comparable = 0.0
    inserted = 0
    i = 0
    while i < n:
        j = i
        while j < n and ts[j] == ts[i]:
            j += 1
        # rows i..j-1 share one time; the tree holds rows with strictly longer times.
        for k in range(i, j):
            if es[k] and inserted:
                below = prefix(rs[k] - 1)
                equal = prefix(rs[k]) - below
                above = inserted - below - equal
                concordant += above
                tied += equal
                comparable += inserted
        for k in range(i, j):
            add(int(rs[k]))
        inserted += j - i
        i = j
    if comparable == 0:
        return float("nan")
    return float((concordant + 0.5 * tied) / comparable)
