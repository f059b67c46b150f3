"""Leaf attributions (models.attribution): exact additivity with and without the TreeSHAP leaf table,
agreement with TreeSHAP where the two must agree, the path credit of a hand-computed stump, and
the table surviving a model's save and load."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.attribution import LeafAttribution, leaf_shap_table
from models.columns import FeatureColumns
from models.estimators import _GBMBase
from models.journey_model import JourneyModel

PARAMS = {"objective": "binary", "verbose": -1, "num_threads": 1, "deterministic": True, "min_data_in_leaf": 5}


def _data(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    logit = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1 % k] * X[:, 2 % k])
    y = (logit + rng.normal(size=n) > 0).astype(float)
    return X, y


def _contrib(
    booster: lgb.Booster, X: np.ndarray, num_iteration: int | None = None, table: dict | None = None
) -> np.ndarray:
    leaves = booster.predict(X, pred_leaf=True, num_iteration=num_iteration)
    return LeafAttribution(booster, num_iteration, table).contributions(leaves)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 6),
    leaves=st.integers(2, 15),
    rounds=st.integers(1, 25),
    cut=st.integers(1, 25),
)
def test_contributions_add_up_to_the_raw_score(seed: int, k: int, leaves: int, rounds: int, cut: int) -> None:
    X, y = _data(400, k, seed)
    booster = lgb.train({**PARAMS, "num_leaves": leaves, "seed": seed}, lgb.Dataset(X, y), rounds)
    used = min(cut, booster.current_iteration())
    raw = booster.predict(X, raw_score=True, num_iteration=used)
    table = leaf_shap_table(booster, X[:150], used)  # leaves the sample missed keep their path credit
    for got, atol in ((_contrib(booster, X, used), 1e-9), (_contrib(booster, X, used, table), 1e-6)):
        np.testing.assert_allclose(got.sum(axis=1), raw, rtol=0, atol=atol)
        assert got.shape == (len(X), k + 1)


def test_the_table_keeps_treeshap_means_on_its_sample() -> None:
    """Averaging TreeSHAP per leaf keeps its mean over the rows averaged: on the table's own sample,
    the column means of the leaf attributions equal TreeSHAP's; row by row they agree closely."""
    X, y = _data(1_500, 5, 3)
    booster = lgb.train({**PARAMS, "num_leaves": 15}, lgb.Dataset(X, y), 40)
    table = leaf_shap_table(booster, X)
    got = _contrib(booster, X, table=table)
    shap = booster.predict(X, pred_contrib=True)
    np.testing.assert_allclose(got.mean(axis=0), shap.mean(axis=0), rtol=0, atol=1e-6)
    # a few rows take a dense gather, many a sparse product: the same numbers
    np.testing.assert_allclose(_contrib(booster, X[:3], table=table), got[:3], rtol=0, atol=1e-12)
    assert np.corrcoef(got[:, :-1].ravel(), shap[:, :-1].ravel())[0, 1] > 0.95
    top_leaf, top_shap = np.abs(got[:, :-1]).argmax(axis=1), np.abs(shap[:, :-1]).argmax(axis=1)
    assert (top_leaf == top_shap).mean() > 0.85


def test_stump_credit_is_the_leaf_minus_the_expected_root() -> None:
    X, y = _data(2_000, 3, 0)
    booster = lgb.train({**PARAMS, "num_leaves": 2}, lgb.Dataset(X, y), 1)
    tree = booster.dump_model()["tree_info"][0]["tree_structure"]
    feature = tree["split_feature"]
    sides = [tree[s] for s in ("left_child", "right_child")]
    root = sum(c["leaf_value"] * c["leaf_count"] for c in sides) / sum(c["leaf_count"] for c in sides)
    got = _contrib(booster, X)
    leaf = booster.predict(X, pred_leaf=True).ravel()
    values = {c["leaf_index"]: c["leaf_value"] for c in sides}
    np.testing.assert_allclose(got[:, feature], [values[i] - root for i in leaf])
    others = [j for j in range(3) if j != feature]
    assert not got[:, others].any()
    np.testing.assert_allclose(got[:, -1], root)


def test_one_feature_model_agrees_with_treeshap() -> None:
    """When the trees split on one feature only, every attribution gives it everything: path and
    TreeSHAP must agree exactly."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3_000, 4)).astype(np.float32)
    y = (X[:, 2] + 0.3 * rng.normal(size=3_000) > 0).astype(float)
    wide = np.zeros_like(X)  # columns 0, 1 and 3 constant: never split on
    wide[:, 2] = X[:, 2]
    booster = lgb.train({**PARAMS, "num_leaves": 7}, lgb.Dataset(wide, y), 20)
    shap = booster.predict(wide, pred_contrib=True)
    np.testing.assert_allclose(_contrib(booster, wide), shap, rtol=0, atol=1e-9)
    assert np.abs(shap[:, 2]).max() > 0.5


def test_one_leaf_trees_only_move_the_bias() -> None:
    X = np.zeros((100, 2), dtype=np.float32)
    y = np.r_[np.zeros(30), np.ones(70)]
    booster = lgb.train(PARAMS, lgb.Dataset(X, y), 3)
    got = _contrib(booster, X)
    assert not got[:, :-1].any()
    np.testing.assert_allclose(got[:, -1], booster.predict(X, raw_score=True))


@pytest.mark.parametrize("fit", ["churn_fit", "timing_fit"])
def test_the_table_is_saved_with_the_model(fit: str, request: pytest.FixtureRequest) -> None:
    model, ds = request.getfixturevalue(fit)
    est = model.estimator_
    assert est.leaf_shap_["rows"] > 0
    loaded = JourneyModel.from_dict(json.loads(json.dumps(model.to_dict())), model.boosters())
    enc = est.encode_columns(FeatureColumns(model.augment(ds.test.features)))
    np.testing.assert_array_equal(loaded.estimator_.contributions_matrix(enc), est.contributions_matrix(enc))
    exact = est.contributions_matrix(enc, "shap")
    # the reasons agree with exact TreeSHAP on held-out customers for most rows
    top_leaf = np.abs(est.contributions_matrix(enc)[:, :-1]).argmax(axis=1)
    assert (top_leaf == np.abs(exact[:, :-1]).argmax(axis=1)).mean() > 0.8
    del loaded.estimator_.leaf_shap_  # as a model saved before the table existed: path credit alone
    loaded.estimator_._leaf_attribution = None
    assert not np.allclose(loaded.estimator_.contributions_matrix(enc), est.contributions_matrix(enc))
    full = est.with_periods(enc, [est.reference_period()]) if hasattr(est, "with_periods") else enc
    raw = est.booster_.predict(full, raw_score=True, num_iteration=est.best_iteration_)
    for e in (est, loaded.estimator_):  # both add up to the raw score (period column included)
        np.testing.assert_allclose(_GBMBase.contributions_matrix(e, full).sum(axis=1), raw, atol=1e-6)


def test_unknown_method_is_a_clear_error() -> None:
    from models.estimators import GBMClassifier

    X, y = _data(500, 3, 2)
    est = GBMClassifier(n_estimators=5).fit(pd.DataFrame(X, columns=["a", "b", "c"]), y)
    with pytest.raises(ValueError, match="unknown attribution method"):
        est.contributions_matrix(X, "lime")
