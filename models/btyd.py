"""BG/NBD ("buy till you die", Fader, Hardie & Lee 2005) fitted by maximum likelihood.

Inputs per customer at a cutoff, all in days:
- `frequency` x: repeat purchases (purchases after the first one),
- `recency` t_x: time from the first to the last purchase,
- `T`: time from the first purchase to the cutoff.
Customers without a purchase have no BG/NBD summary (T undefined); callers give them NaN
and get NaN back. Everything is vectorised numpy/scipy; no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn.base import BaseEstimator

SUMMARY_COLUMNS = ("frequency", "recency", "T")


def summary_from_purchases(purchases: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """frequency / recency / T per customer from purchase rows (customer_id, event_time) <= cutoff.

    Purchases on the same day count once (the usual BTYD convention). Output indexed by customer_id.
    """
    past = purchases[purchases["event_time"] <= cutoff]
    days = past["event_time"].dt.floor("D")
    g = past.assign(day=days).groupby("customer_id")["day"]
    first, last, n = g.min(), g.max(), g.nunique()
    day = pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "frequency": (n - 1).astype(float),
            "recency": (last - first) / day,
            "T": (cutoff - first) / day,
        }
    )


def _arrays(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(frame, pd.DataFrame):
        x, tx, t = (frame[c].to_numpy(float) for c in SUMMARY_COLUMNS)
    else:
        arr = np.asarray(frame, dtype=float)
        x, tx, t = arr[:, 0], arr[:, 1], arr[:, 2]
    return x, tx, t


class BetaGeoModel(BaseEstimator):
    """BG/NBD with parameters r, alpha (purchase rate prior) and a, b (dropout prior).

    `time_scale` divides the day counts before fitting (7 = weeks) for a well-conditioned
    optimisation; predictions take and return days. `penalizer` is an L2 penalty on the
    log-parameters that keeps the fit finite on degenerate data.
    """

    def __init__(self, time_scale: float = 7.0, penalizer: float = 1e-4, max_iter: int = 500) -> None:
        self.time_scale = time_scale
        self.penalizer = penalizer
        self.max_iter = max_iter

    @staticmethod
    def _loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, t: np.ndarray) -> np.ndarray:
        r, alpha, a, b = params
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + t)
        with np.errstate(divide="ignore", invalid="ignore"):
            a3 = np.where(
                x > 0,
                special.betaln(a + 1, np.maximum(b + x - 1, 1e-12))
                - special.betaln(a, b)
                - (r + x) * np.log(alpha + tx),
                -np.inf,
            )
        return a1 + np.logaddexp(a2, a3)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> BetaGeoModel:
        x, tx, t = _arrays(X)
        ok = np.isfinite(x) & np.isfinite(tx) & np.isfinite(t) & (t > 0)
        if ok.sum() < 10:
            raise ValueError("BG/NBD needs at least 10 customers with a purchase before the cutoff")
        x, tx, t = x[ok], tx[ok] / self.time_scale, t[ok] / self.time_scale
        # Identical summaries share one likelihood term: fit on the unique rows with counts.
        uniq, counts = np.unique(np.column_stack([x, tx, t]), axis=0, return_counts=True)
        ux, utx, ut = uniq[:, 0], uniq[:, 1], uniq[:, 2]
        w = counts.astype(float)
        n = w.sum()

        def objective(log_params: np.ndarray) -> float:
            ll = self._loglik(np.exp(log_params), ux, utx, ut)
            return float(-(w * ll).sum() / n + self.penalizer * (log_params**2).sum())

        start = np.log(np.array([1.0, max(float(np.mean(t)), 1e-3), 1.0, 1.0]))
        res = optimize.minimize(objective, start, method="L-BFGS-B", options={"maxiter": self.max_iter})
        r, alpha, a, b = np.exp(res.x)
        self.params_ = {"r": float(r), "alpha": float(alpha * self.time_scale), "a": float(a), "b": float(b)}
        self.converged_ = bool(res.success)
        self.loglik_ = float(-res.fun * n)
        self.n_customers_ = int(n)
        return self

    def _scaled(self) -> tuple[float, float, float, float]:
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def _odds_dead(self, x: np.ndarray, tx: np.ndarray, t: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self._scaled()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_term = (
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) + (r + x) * (np.log(alpha + t) - np.log(alpha + tx))
            )
            return np.where(x > 0, np.exp(np.minimum(log_term, 700)), 0.0)

    def p_alive(self, X: Any) -> np.ndarray:
        """P(the customer is still "alive" at the cutoff)."""
        x, tx, t = _arrays(X)
        out = 1.0 / (1.0 + self._odds_dead(x, tx, t))
        return np.where(np.isfinite(t), out, np.nan)

    def p_purchase(self, X: Any, horizon_days: float) -> np.ndarray:
        """P(at least one purchase in (cutoff, cutoff + horizon_days]).

        Alive customers keep buying at rate lambda ~ Gamma(r + x, alpha + T) a posteriori
        until their next purchase (BG/NBD dropouts happen right after a purchase), so
        P(none in h | alive) = ((alpha + T) / (alpha + T + h)) ** (r + x).
        """
        r, alpha, _, _ = self._scaled()
        x, tx, t = _arrays(X)
        none_if_alive = np.exp((r + x) * (np.log(alpha + t) - np.log(alpha + t + horizon_days)))
        out = self.p_alive(X) * (1.0 - none_if_alive)
        return np.where(np.isfinite(t), out, np.nan)

    def expected_purchases(self, X: Any, horizon_days: float) -> np.ndarray:
        """E[number of purchases in (cutoff, cutoff + horizon_days]] (BG/NBD conditional expectation)."""
        r, alpha, a, b = self._scaled()
        x, tx, t = _arrays(X)
        h = float(horizon_days)
        z = h / (alpha + t + h)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        denom = a - 1 if abs(a - 1) > 1e-6 else 1e-6  # a < 1 is valid: both factors turn negative
        head = (a + b + x - 1) / denom
        body = 1.0 - np.exp((r + x) * (np.log(alpha + t) - np.log(alpha + t + h))) * hyp
        out = head * body / (1.0 + self._odds_dead(x, tx, t))
        return np.where(np.isfinite(t), np.maximum(out, 0.0), np.nan)
