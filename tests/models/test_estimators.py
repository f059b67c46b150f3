from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from models.baselines import BTYDBaseline, LinearValueBaseline, LogisticBaseline, RecencyRule
from models.calibration import Calibrator
from models.cold_start import ColdStartPrior
from models.estimators import DiscreteHazardModel, GBMClassifier, GBMRegressor, encode_frame
from models.journey_model import JourneyModel
from models.metrics import classification_metrics
from models.task_model import SpecMismatchError, TaskModel
from tests.models.conftest import FEATURES


def toy(n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "cat": rng.choice(["a", "b", "c"], n)})
    logit = 1.5 * X["x1"] - X["x2"] + (X["cat"] == "a") * 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y.to_numpy()


@pytest.mark.parametrize(
    "est",
    [
        GBMClassifier(n_estimators=20, categorical=("cat",)),
        GBMRegressor(n_estimators=20, tweedie_variance_power=1.3),
        DiscreteHazardModel(n_estimators=20, bins_days=(7, 30), horizons=(7, 30)),
        LogisticBaseline(categorical=("cat",)),
        LinearValueBaseline(alpha=2.0),
        RecencyRule(column="x1"),
        BTYDBaseline(horizon_days=30),
        Calibrator("sigmoid"),
        ColdStartPrior(min_events=2),
        JourneyModel(task="churn", gbm={"n_estimators": 5}),
    ],
)
def test_estimator_contract_clone_keeps_params(est) -> None:
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert not [k for k in vars(cloned) if k.endswith("_") and not k.startswith("_")]


def test_classifier_fit_returns_self_and_calibrates() -> None:
    X, y = toy()
    Xv, yv = toy(2000, seed=1)
    est = GBMClassifier(n_estimators=100, categorical=("cat",), learning_rate=0.1)
    assert est.fit(X, y, Xv, yv) is est
    Xt, yt = toy(4000, seed=2)
    p = est.predict_proba(Xt)[:, 1]
    m = classification_metrics(yt, p)
    assert m["auc"] > 0.8 and m["ece"] < 0.05
    assert est.best_iteration_ <= 100
    contrib = est.contributions(Xt.head(5))
    # SHAP values add up to the raw score (log-odds)
    raw = est.booster_.predict(encode_frame(Xt.head(5), est.feature_names_, est.categories_), raw_score=True,
                               num_iteration=est.best_iteration_)  # fmt: skip
    assert np.allclose(contrib.sum(axis=1), raw)
    assert np.allclose(est.contributions(Xt.head(5), "leaf").sum(axis=1), raw)  # leaf attributions too


def test_unseen_category_is_missing_not_an_error() -> None:
    X, y = toy()
    est = GBMClassifier(n_estimators=10, categorical=("cat",)).fit(X, y)
    new = X.head(3).assign(cat=["zzz", None, "a"])
    assert np.isfinite(est.predict_proba(new)).all()
    assert np.isnan(encode_frame(new, est.feature_names_, est.categories_)["cat"].iloc[:2]).all()


def test_hazard_probabilities_are_monotone_in_horizon(timing_fit) -> None:
    model, ds = timing_fit
    out = model.predict_frame(ds.test.features)
    p7, p30, p90 = (out[f"next_purchase_probability_{h}d"] for h in (7, 30, 90))
    assert ((p7 <= p30 + 1e-12) & (p30 <= p90 + 1e-12)).all()
    assert (out["next_purchase_expected_days"].between(0, 365)).all()


def test_models_beat_chance_on_synthetic_journeys(churn_fit, timing_fit, clv_fit) -> None:
    for model, ds in (churn_fit, timing_fit):
        col = "label" if model.kind == "binary" else "label_90d"
        m = classification_metrics(ds.test.labels[col], model.predict_frame(ds.test.features)[model.primary_output])
        assert m["auc"] > 0.8
    model, ds = clv_fit
    pred = model.predict_frame(ds.test.features)["clv_90d"]
    assert np.corrcoef(pred, ds.test.labels["label"])[0, 1] > 0.3
    assert model.btyd_ is not None and "btyd_p_alive" in model.model_features_


@pytest.mark.parametrize("fixture", ["churn_fit", "timing_fit", "clv_fit"])
def test_json_round_trip_gives_identical_scores(request, fixture) -> None:
    model, ds = request.getfixturevalue(fixture)
    data = json.loads(json.dumps(model.to_dict()))
    again = JourneyModel.from_dict(data, model.boosters())
    pd.testing.assert_frame_equal(again.predict_frame(ds.test.features), model.predict_frame(ds.test.features))


def test_task_model_refuses_another_spec(churn_fit) -> None:
    model, ds = churn_fit
    task = TaskModel("churn", "abc123", "churn_v1", [model])
    task.predict(ds.test.features.head(3), spec_hash="abc123")
    with pytest.raises(SpecMismatchError, match="trained on label spec abc123"):
        task.predict(ds.test.features.head(3), spec_hash="other")


def test_recency_rule_tunes_its_threshold() -> None:
    days = np.arange(0, 200, dtype=float)
    X = pd.DataFrame({"days_since_last_purchase": days})
    y = (days > 60).astype(int)
    rule = RecencyRule().fit(X, y)
    assert rule.n_days_ == 60
    assert rule.predict_proba(pd.DataFrame({"days_since_last_purchase": [10.0, 100.0, np.nan]}))[:, 1].tolist() == [
        0.0,
        1.0,
        1.0,
    ]


def test_calibrator_identity_without_enough_rows() -> None:
    cal = Calibrator("isotonic", min_rows=100).fit([0.2, 0.8], [0, 1])
    assert cal.method_ == "none" and cal.transform([0.3]).tolist() == [0.3]
    with pytest.raises(ValueError, match="calibration must be"):
        Calibrator("magic").fit(np.linspace(0, 1, 500), np.arange(500) % 2)


def test_cold_start_priors_shrink_to_the_mean() -> None:
    X = pd.DataFrame({"n": [5, 5, 5, 5, 0], "acquisition_channel": ["web", "web", "ads", "ads", "web"]})
    targets = pd.DataFrame({"p": [1.0, 1.0, 0.0, 0.0, 1.0]})
    prior = ColdStartPrior(min_events=1, count_column="n", segment_columns=("acquisition_channel",), strength=2)
    prior.fit(X, targets)
    assert prior.is_cold(X).tolist() == [False, False, False, False, True]
    out = prior.predict(pd.DataFrame({"acquisition_channel": ["web", "ads", "store"]}))["p"]
    overall = 0.6
    assert out.tolist() == pytest.approx([(3 + 2 * overall) / 5, (0 + 2 * overall) / 4, overall])
    unknown = pd.DataFrame({"n": [np.nan], "x": [1.0]})
    assert prior.is_cold(unknown).tolist() == [True]


def test_baselines_fit_on_features(churn_fit) -> None:
    model, ds = churn_fit
    y = ds.train.labels["label"]
    lr = LogisticBaseline(FEATURES).fit(ds.train.features, y)
    p = lr.predict_proba(ds.test.features)[:, 1]
    assert classification_metrics(ds.test.labels["label"], p)["auc"] > 0.7
    btyd = BTYDBaseline(90, "churn").fit(model.augment(ds.train.features), y)
    q = btyd.predict_proba(model.augment(ds.test.features))[:, 1]
    assert classification_metrics(ds.test.labels["label"], q)["auc"] > 0.6


# ---------------------------------------------------------------- the array path (serving)
@pytest.mark.parametrize("n", [3, 700])  # periods stacked into one call; one buffer rewritten per period
def test_hazards_from_a_matrix_equal_one_predict_per_period(n: int) -> None:
    X, y = toy(3000, seed=4)
    rng = np.random.default_rng(1)
    ev = np.where(y == 1, rng.uniform(1, 60, len(y)), np.nan)
    timing = pd.DataFrame({"event_days": ev, "followup_days": np.full(len(y), 90.0)})
    est = DiscreteHazardModel(n_estimators=30, categorical=("cat",), bins_days=(7, 30, 90), horizons=(7, 30, 90))
    est.fit(X, timing)
    Xs = X.head(n)
    enc = encode_frame(Xs, est.feature_names_, est.categories_)
    per_period = np.column_stack(
        [est.booster_.predict(enc.assign(period=np.float32(k)), num_iteration=est.best_iteration_) for k in range(3)]
    )
    np.testing.assert_array_equal(est.hazards(Xs), per_period)
    got = est.horizons_matrix(enc.to_numpy(np.float32))
    want = est.predict_horizons(Xs)
    for col in want.columns:
        np.testing.assert_array_equal(got[col], want[col].to_numpy())
    for method in ("shap", "leaf"):
        contrib = est.contributions(Xs, method).to_numpy()
        got = est.contributions_matrix(enc.to_numpy(np.float32), method)
        np.testing.assert_allclose(got, contrib, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [5, 900])  # categorical codes from a dict (few rows) and from pd.Categorical
def test_encode_columns_equals_encode_frame(n: int) -> None:
    from models.columns import FeatureColumns

    X, _ = toy(n, seed=2)
    X["flag"] = X["x1"] > 0  # bool
    X["count"] = np.arange(n)  # int
    X["text_number"] = X["x2"].astype(object)  # numbers in an object column
    X.loc[: n // 3, "cat"] = None
    X.loc[n // 2 :, "cat"] = "never-seen"
    features = ["x1", "cat", "flag", "count", "text_number", "absent"]
    categories = {"cat": ["a", "b", "c"]}
    expected = encode_frame(X, features, categories).to_numpy()
    np.testing.assert_array_equal(
        FeatureColumns(X).numeric_matrix(["x1", "flag", "count", "text_number", "absent"]).astype(np.float32),
        expected[:, [0, 2, 3, 4, 5]],
    )
    from models.columns import encode_matrix

    np.testing.assert_array_equal(encode_matrix(FeatureColumns(X), features, categories, {}), expected)
    np.testing.assert_array_equal(FeatureColumns(X).missing("cat"), X["cat"].isna().to_numpy())
