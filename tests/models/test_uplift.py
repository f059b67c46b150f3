"""Uplift estimators and metrics on small synthetic experiments with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from models.uplift import (
    UpliftModel,
    _lift_mle,
    auuc,
    dr_value,
    ips_value,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_by_decile,
)

SMALL = {"n_estimators": 40, "num_leaves": 7, "min_child_samples": 40, "min_arm_rows": 50}


def experiment(
    n: int = 6000, seed: int = 0, confounded: bool = False
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Customers with a base rate from x1; action "a" helps only in segment "hot", "b" never helps.

    Returns (X, treatment, y, propensity). With `confounded`, "hot" customers get "a" far more often.
    """
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 1, n)
    segment = np.where(rng.random(n) < 0.5, "hot", "cold")
    if confounded:
        p_a = np.where(segment == "hot", 0.6, 0.05)
    else:
        p_a = np.full(n, 1 / 3)
    p_b = np.full(n, 1 / 3) if not confounded else np.full(n, 0.2)
    u = rng.random(n)
    treatment = np.where(u < p_a, "a", np.where(u < p_a + p_b, "b", "no_action"))
    propensity = np.where(treatment == "a", p_a, np.where(treatment == "b", p_b, 1 - p_a - p_b))
    base = 0.1 + 0.3 * x1
    p = np.where((treatment == "a") & (segment == "hot"), np.minimum(base * 1.8, 1), base)
    y = (rng.random(n) < p).astype(int)
    X = pd.DataFrame({"x1": x1, "noise": rng.normal(size=n), "segment": segment})
    return X, treatment, y, propensity


@pytest.mark.parametrize("learner", ["t", "x", "s", "lift"])
def test_learners_find_who_responds(learner: str) -> None:
    X, t, y, _ = experiment()
    model = UpliftModel(learner=learner, categorical=["segment"], segment="segment", **SMALL).fit(X, t, y)
    assert model.arms_ == ["a", "b"]
    up = model.predict_uplift(X)
    hot = (X["segment"] == "hot").to_numpy()
    assert up[hot, 0].mean() > up[~hot, 0].mean() + 0.03
    assert up[hot, 0].mean() > up[hot, 1].mean() + 0.03
    outcomes = model.predict_outcomes(X)
    assert outcomes.shape == (len(X), 3) and ((outcomes >= 0) & (outcomes <= 1)).all()
    assert np.allclose(outcomes[:, 1:] - outcomes[:, [0]], up)
    assert qini_coefficient(y[t != "b"], t[t != "b"] == "a", up[t != "b", 0]) > 0


def test_lift_learner_recovers_the_hazard_ratio() -> None:
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0.05, 0.6, 20_000)
    theta = 0.4
    p1 = 1 - (1 - p0) ** np.exp(theta)
    y = (rng.random(len(p0)) < p1).astype(float)
    est, se = _lift_mle(p0, y, np.ones(len(y)), 0.0, 10.0)
    assert est == pytest.approx(theta, abs=3 * se) and 0.005 < se < 0.05
    # a strong prior pulls a small sample towards its mean
    est, se = _lift_mle(p0[:30], y[:30], np.ones(30), 0.0, 0.01)
    assert abs(est) < 0.01 and se <= 0.01


def test_propensity_weights_are_normalised_per_arm() -> None:
    model = UpliftModel(max_weight=10.0)
    codes = np.array([0, 0, 0, -1, -1])
    w = model._weights(codes, np.array([0.5, 0.05, 0.01, np.nan, np.nan]), None)
    assert w[:3].mean() == pytest.approx(1.0) and w[3:].tolist() == [1.0, 1.0]
    assert w[1] == pytest.approx(w[2])  # 1/0.05 = 20 and 1/0.01 = 100 are both clipped at 10
    assert w[0] < w[1]


def test_weighted_lift_is_unbiased_under_confounded_logging() -> None:
    X, t, y, prop = experiment(n=12_000, seed=2, confounded=True)
    hot = (X["segment"] == "hot").to_numpy()
    model = UpliftModel(learner="lift", segment="segment", categorical=["segment"], **SMALL)
    model.fit(X, t, y, propensity=prop)
    up = model.predict_uplift(X)[:, 0]
    true = np.where(hot, np.minimum((0.1 + 0.3 * X["x1"]) * 1.8, 1) - (0.1 + 0.3 * X["x1"]), 0.0)
    assert abs(up.mean() - true.mean()) < 0.03


def test_small_arms_fall_back_to_the_control() -> None:
    X, t, y, _ = experiment(n=3000)
    t = t.copy()
    t[np.flatnonzero(t == "b")[20:]] = "no_action"  # 20 rows of "b" left
    model = UpliftModel(learner="t", **SMALL).fit(X, t, y)
    assert model.n_treated_["b"] == 0 and model.arm_rows_["b"] == 20
    assert np.allclose(model.predict_uplift(X)[:, 1], 0.0)


def test_fit_is_deterministic_and_round_trips() -> None:
    X, t, y, prop = experiment(n=1500)
    for learner in ("t", "x", "s", "lift"):
        params = {**SMALL, "n_estimators": 15}
        a = UpliftModel(learner=learner, segment="segment", categorical=["segment"], **params).fit(X, t, y, prop)
        b = clone(a).fit(X, t, y, prop)
        assert np.array_equal(a.predict_outcomes(X), b.predict_outcomes(X))
        back = UpliftModel.from_dict(a.to_dict())
        assert np.allclose(back.predict_outcomes(X), a.predict_outcomes(X))


def test_fit_rejects_bad_input() -> None:
    X, t, y, _ = experiment(n=300)
    with pytest.raises(ValueError, match="learner"):
        UpliftModel(learner="magic").fit(X, t, y)
    with pytest.raises(ValueError, match="no control rows"):
        UpliftModel().fit(X, np.full(len(X), "a"), y)


# ---------------------------------------------------------------- metrics


def test_qini_and_auuc_rank_scores() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    effect = rng.uniform(0, 0.3, n)
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < 0.2 + treated * effect).astype(float)
    good = qini_coefficient(y, treated, effect)
    assert good > 0.005
    assert abs(qini_coefficient(y, treated, rng.random(n))) < good / 3
    assert qini_coefficient(y, treated, -effect) < 0
    assert auuc(y, treated, effect) > auuc(y, treated, -effect)
    frac, q = qini_curve(y, treated, effect, points=10)
    assert frac[0] == 0 and frac[-1] == 1 and q[0] == 0 and len(q) == 11


def test_uplift_at_k_and_deciles_by_hand() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    treated = np.array([True, False, True, False, True, False, False, True])
    score = np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=float)
    # top half: rows 0-3 -> treated (1, 1): 1.0, control (0, 1): 0.5
    assert uplift_at_k(y, treated, score, 0.5) == pytest.approx(0.5)
    table = uplift_by_decile(y, treated, score, bins=2)
    assert table["rows"].tolist() == [4, 4]
    assert table["observed_uplift"].tolist() == pytest.approx([0.5, -0.5])
    assert np.isnan(uplift_at_k(y, treated, score, 0.1))  # the top row has no control


def test_off_policy_estimators_by_hand() -> None:
    reward = np.array([1.0, 0.0, 2.0, 4.0])
    match = np.array([True, False, True, False])
    prop = np.array([0.5, 0.5, 0.25, 1.0])
    # mean of match / p * r = (2 + 0 + 8 + 0) / 4
    assert ips_value(reward, match, prop) == pytest.approx(2.5)
    assert ips_value(reward, match, prop, normalise=True) == pytest.approx(10 / 6)
    q = np.array([1.0, 1.0, 1.0, 1.0])
    # mean of q_target + match / p (r - q_logged) = (1 + 0) + 1 + (1 + 4) + 1 over 4
    assert dr_value(reward, match, prop, q, q) == pytest.approx(2.0)
    # with a perfect outcome model, DR ignores the propensities
    assert dr_value(reward, match, prop, reward, reward) == pytest.approx(reward.mean())


def test_lift_learner_starts_from_the_documented_prior() -> None:
    # Action "a" truly multiplies the hazard by 1.8 (theta 0.59) in the hot segment and does nothing in the cold one.
    X, t, y, _ = experiment(n=6000, seed=3)
    prior = {"a": float(np.log1p(0.05)), "b": float(np.log1p(0.05))}
    tight = UpliftModel(learner="lift", categorical=["segment"], segment="segment", prior_theta=prior,
                        lift_prior_sd=0.01, segment_prior_sd=0.01, **SMALL).fit(X, t, y)  # fmt: skip
    loose = UpliftModel(learner="lift", categorical=["segment"], segment="segment", prior_theta=prior,
                        lift_prior_sd=1.0, segment_prior_sd=1.0, **SMALL).fit(X, t, y)  # fmt: skip
    hot = (X["segment"] == "hot").to_numpy()
    theta_tight, theta_loose = tight.predict_log_hazard_ratio(X), loose.predict_log_hazard_ratio(X)
    assert np.abs(theta_tight - np.log1p(0.05)).max() < 0.06  # a tight prior moves little for 2,000 rows per arm
    assert theta_loose[hot, 0].mean() > 0.35 and abs(theta_loose[~hot, 0].mean()) < 0.2  # a loose one lets data speak
    assert tight.prior_theta_ == prior
    # P(outcome | arm) = 1 - (1 - p0) ** exp(theta), and the state survives a round trip
    out = loose.predict_outcomes(X)
    assert np.allclose(out[:, 1:], 1 - (1 - out[:, [0]]) ** np.exp(theta_loose))
    again = UpliftModel.from_dict(loose.to_dict())
    assert again.prior_theta_ == loose.prior_theta_
    assert np.allclose(again.predict_outcomes(X), out)
    with pytest.raises(ValueError, match="lift"):
        UpliftModel(learner="t", **SMALL).fit(X, t, y).predict_log_hazard_ratio(X)


def test_few_rows_are_encoded_and_predicted_as_many_rows_are() -> None:
    from models.estimators import encode_frame
    from models.uplift import SMALL_ROWS

    X, t, y, _ = experiment(n=3000, seed=4)
    X["flag"] = np.random.default_rng(0).random(len(X)) < 0.5
    model = UpliftModel(learner="lift", categorical=["segment"], segment="segment", **SMALL).fit(X, t, y)
    rows = X.iloc[:SMALL_ROWS].copy().astype({"segment": object, "x1": object})
    rows.loc[rows.index[0], "segment"] = "never seen"
    rows.loc[rows.index[1], "segment"] = None
    rows.loc[rows.index[2], "x1"] = None
    rows.loc[rows.index[3], "x1"] = "0.25"  # a number as text, as to_numeric reads it
    rows.loc[rows.index[4], "x1"] = "n/a"
    rows = rows.drop(columns=["noise"])  # a feature the request lacks
    small = model._encode(rows)
    assert np.array_equal(small.to_numpy(), encode_frame(rows, model.feature_names_, model.categories_).to_numpy(),
                          equal_nan=True)  # fmt: skip
    many = pd.concat([rows] * 3, ignore_index=True)  # above SMALL_ROWS: the vectorised path
    assert np.allclose(model.predict_outcomes(rows), model.predict_outcomes(many)[: len(rows)], rtol=0, atol=1e-12)
