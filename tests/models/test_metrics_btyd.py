from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.btyd import BetaGeoModel, summary_from_purchases
from models.metrics import (
    calibration_noise,
    classification_metrics,
    concordance_index,
    expected_calibration_error,
    lift_at,
    lift_quality,
    regression_metrics,
)


def test_ece_known_values() -> None:
    # two bins: p=0.1 observed 0.0 (2 rows), p=0.9 observed 1.0 (2 rows) -> |0.1| and |0.1| -> 0.1
    assert expected_calibration_error([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.1)
    assert expected_calibration_error([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.0)


@pytest.mark.parametrize("n", [500, 3000, 50_000])
def test_calibration_noise_is_the_ece_of_a_perfectly_calibrated_model(n: int) -> None:
    rng = np.random.default_rng(n)
    p = rng.beta(2, 3, n)
    observed = [expected_calibration_error(rng.random(n) < p, p) for _ in range(200)]
    floor = calibration_noise(p)
    assert np.mean(observed) == pytest.approx(floor, rel=0.15)
    assert calibration_noise(p[: n // 10]) > floor, "less data, more noise"
    miscalibrated = np.clip(p + 0.1, 0, 1)  # off by 0.1 (less where clipped): stands out of the noise
    assert expected_calibration_error(rng.random(n) < p, miscalibrated) > floor + 0.02


def test_lift_and_lift_quality_bounds() -> None:
    y = np.array([1] * 10 + [0] * 90)
    perfect = np.linspace(1, 0, 100)
    assert lift_at(y, perfect, 0.1) == pytest.approx(10.0)
    assert lift_quality(y, perfect) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    y_big = rng.random(20000) < 0.2
    assert abs(lift_quality(y_big, rng.random(20000))) < 0.05
    assert lift_quality(y, -perfect) < 0


def test_classification_metrics_single_class_is_nan_not_an_error() -> None:
    m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isnan(m["auc"]) and m["base_rate"] == 0


def test_regression_metrics() -> None:
    m = regression_metrics([0, 10, 20], [0, 10, 26])
    assert m["mae"] == pytest.approx(2.0) and m["rmse"] == pytest.approx(np.sqrt(12))
    assert m["spearman"] == pytest.approx(1.0)


def brute_cindex(t, e, pred) -> float:
    num = den = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            if t[j] > t[i]:
                den += 1
                num += 1.0 if pred[j] > pred[i] else 0.5 if pred[j] == pred[i] else 0.0
    return num / den if den else float("nan")


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 20), st.booleans(), st.integers(0, 10)),
        min_size=2,
        max_size=40,
    )
)
def test_concordance_matches_brute_force(data) -> None:
    t = np.array([d[0] for d in data], float)
    e = np.array([d[1] for d in data])
    p = np.array([d[2] for d in data], float)
    expected = brute_cindex(t, e, p)
    got = concordance_index(t, e, p)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected)


def simulate_bgnbd(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r, alpha, a, b = 0.6, 15.0, 0.9, 3.0
    T = rng.uniform(100, 400, n)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    x, tx = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            tx[i] = t
            if rng.random() < p[i]:
                break
    return pd.DataFrame({"frequency": x, "recency": tx, "T": T})


def test_bgnbd_recovers_its_parameters() -> None:
    model = BetaGeoModel().fit(simulate_bgnbd(4000))
    p = model.params_
    assert p["r"] == pytest.approx(0.6, rel=0.2)
    assert p["alpha"] == pytest.approx(15.0, rel=0.3)
    assert p["a"] == pytest.approx(0.9, rel=0.35)
    assert p["b"] == pytest.approx(3.0, rel=0.45)


def test_bgnbd_expectations_behave() -> None:
    model = BetaGeoModel().fit(simulate_bgnbd(1500, seed=1))
    rows = pd.DataFrame(
        {"frequency": [0, 5, 5, np.nan], "recency": [0, 100, 300, np.nan], "T": [300, 300, 300, np.nan]}
    )
    alive = model.p_alive(rows)
    assert alive[0] == pytest.approx(1.0)  # no repeat purchase: never seen to drop out
    assert alive[2] > alive[1]  # a recent last purchase means more likely alive
    e30, e90 = model.expected_purchases(rows, 30), model.expected_purchases(rows, 90)
    assert (e90[:3] >= e30[:3]).all() and np.isnan(e90[3])
    p90 = model.p_purchase(rows, 90)
    assert ((p90[:3] >= 0) & (p90[:3] <= 1)).all()


def test_summary_from_purchases_counts_days() -> None:
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    purchases = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b"],
            "event_time": [t0, t0 + pd.Timedelta(hours=2), t0 + pd.Timedelta(days=10), t0 + pd.Timedelta(days=40)],
        }
    )
    s = summary_from_purchases(purchases, t0 + pd.Timedelta(days=30))
    assert s.loc["a"].tolist() == [1.0, 10.0, 30.0]  # two purchases the same day count once
    assert "b" not in s.index  # bought after the cutoff
