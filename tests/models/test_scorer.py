from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.reasons import definitions_describer, top_reasons
from models.scorer import Scorer
from models.task_model import SpecMismatchError, TaskModel
from tests.models.conftest import FEATURES, fitted


@pytest.fixture(scope="module")
def scorer(churn_fit, timing_fit, clv_fit) -> Scorer:
    models = {
        "churn": TaskModel("churn", "h-churn", "churn_v1", [churn_fit[0]]),
        "next_purchase": TaskModel("next_purchase", "h-np", "next_purchase_v1", [timing_fit[0]]),
        "clv": TaskModel("clv", "h-clv", "clv_v1", [clv_fit[0]]),
    }
    return Scorer(models, spec_hashes={"churn": "h-churn"})


def test_scores_reasons_and_flags(scorer: Scorer, churn_fit) -> None:
    _, ds = churn_fit
    out = scorer.score(ds.test.features.head(50))
    assert len(out) == 50 and out["customer_id"].tolist() == ds.test.features["customer_id"].head(50).tolist()
    for col in ("churn_probability", "next_purchase_probability_30d", "next_purchase_expected_days", "clv_90d",
                "cold_start", "churn_cold_start", "churn_reasons"):  # fmt: skip
        assert col in out.columns
    assert out["churn_probability"].between(0, 1).all()
    reasons = out.loc[0, "churn_reasons"]
    assert 1 <= len(reasons) <= 3
    assert all({"feature", "value", "contribution", "direction", "text"} <= set(r) for r in reasons)
    contributions = [abs(r["contribution"]) for r in reasons]
    assert contributions == sorted(contributions, reverse=True)


def test_customer_without_events_gets_the_cold_start_flag(scorer: Scorer, churn_fit) -> None:
    _, ds = churn_fit
    known = ds.test.features.head(1)
    nobody = pd.DataFrame({"customer_id": ["never-seen"], "cutoff": known["cutoff"].to_numpy(),
                           "acquisition_channel": ["ads"]})  # fmt: skip
    out = scorer.score(pd.concat([known, nobody], ignore_index=True))
    assert out["cold_start"].tolist() == [False, True]
    assert out.loc[1, "churn_cold_start"] and out.loc[1, "clv_cold_start"]
    assert np.isfinite(
        out.loc[1, ["churn_probability", "next_purchase_probability_90d", "clv_90d"]].astype(float)
    ).all()
    assert out.loc[1, "churn_reasons"][0]["feature"] == "cold_start"
    assert "acquisition_channel=ads" in out.loc[1, "churn_reasons"][0]["text"]


def test_scores_do_not_depend_on_customer_id(scorer: Scorer, churn_fit) -> None:
    _, ds = churn_fit
    frame = ds.test.features.head(200)
    renamed = frame.assign(customer_id=[f"x{i}" for i in range(len(frame))][::-1])
    a = scorer.score(frame, reasons=False).drop(columns="customer_id")
    b = scorer.score(renamed, reasons=False).drop(columns="customer_id")
    pd.testing.assert_frame_equal(a, b)


def test_a_more_recent_purchase_does_not_raise_churn_risk_on_average(scorer: Scorer, churn_fit) -> None:
    _, ds = churn_fit
    frame = ds.test.features
    # the same customers, had their last purchase (an activity too) been 3 days before the cutoff
    recent = frame.assign(
        days_since_last_purchase=np.minimum(frame["days_since_last_purchase"], 3.0),
        days_since_last_activity=np.minimum(frame["days_since_last_activity"], 3.0),
    )
    before = scorer.score(frame, tasks=["churn"], reasons=False)["churn_probability"]
    after = scorer.score(recent, tasks=["churn"], reasons=False)["churn_probability"]
    assert after.mean() <= before.mean()


def test_scorer_refuses_a_changed_label_spec(churn_fit) -> None:
    model = TaskModel("churn", "trained-hash", "churn_v1", [churn_fit[0]])
    with pytest.raises(SpecMismatchError):
        Scorer({"churn": model}, spec_hashes={"churn": "edited-hash"})


def test_unknown_task_is_a_clear_error(scorer: Scorer, churn_fit) -> None:
    with pytest.raises(KeyError, match="no model loaded"):
        scorer.score(churn_fit[1].test.features.head(2), tasks=["conversion"])


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("days_since_last_purchase", 74.4, "no purchase in 74 days"),
        ("cart_adds_7d", 3, "3 items added to a cart in the last 7 days"),
        ("btyd_p_alive", 0.25, "25% chance of still being an active customer (BG/NBD)"),
        ("email_open_rate_30d", 0.4, "email open rate 40% in the last 30 days"),
        ("journey_stage", "lapsing", "journey stage: lapsing"),
        ("something_new", 2.5, "something new = 2.5"),
    ],
)
def test_reason_words(name: str, value, expected: str) -> None:
    assert definitions_describer()(name, value) == expected


def test_reason_templates_from_definitions() -> None:
    describe = definitions_describer(
        {"carts_abandoned_7d": {"reason": "{value:.0f} carts abandoned in the last 7 days"}}
    )
    assert describe("carts_abandoned_7d", 3.0) == "3 carts abandoned in the last 7 days"


def test_a_frame_without_any_feature_columns_is_all_cold_start(scorer: Scorer) -> None:
    nobody = pd.DataFrame({"customer_id": ["a", "b"], "cutoff": [pd.Timestamp("2025-01-01", tz="UTC")] * 2})
    out = scorer.score(nobody)
    assert out["cold_start"].all() and out["churn_probability"].between(0, 1).all()


# ---------------------------------------------------------------- the array path equals the pandas path
def reference_score(scorer: Scorer, frame: pd.DataFrame) -> pd.DataFrame:
    """What Scorer.score computed before the array path: each model's pandas methods (augment,
    encode_frame, one predict per hazard period, top_reasons on frames)."""
    frame = frame.reset_index(drop=True)
    out = frame[["customer_id", "cutoff"]].copy()
    for task, model in scorer.models.items():
        pred = model.predict(frame)
        cold = pred.pop("cold_start").astype(bool).to_numpy()
        for col in pred.columns:
            out[col] = pred[col].to_numpy()
        out[f"{task}_cold_start"] = cold
        part = model.primary
        warm = np.flatnonzero(~cold)
        reasons: list[list[dict]] = [[] for _ in range(len(frame))]
        rows = frame.iloc[warm]
        words = top_reasons(
            part.contributions(rows, scorer.attribution), part.feature_values(rows), scorer.describe, scorer.top_k
        )
        for i, r in zip(warm, words, strict=True):
            reasons[i] = r
        for i in np.flatnonzero(cold):
            reasons[i] = [{"feature": "cold_start"}]
        out[f"{task}_reasons"] = reasons
    return out


@pytest.fixture(scope="module")
def categorical_scorer(synth_world, scorer: Scorer) -> Scorer:
    """The test scorer plus a churn model reading a categorical feature (codes, unseen values)."""
    model, _ = fitted(
        synth_world, "churn", features=[*FEATURES, "acquisition_channel"], categorical=("acquisition_channel",)
    )
    models = dict(scorer.models)
    models["churn"] = TaskModel("churn", "h-churn", "churn_v1", [model])
    return Scorer(models, top_k=20)  # every feature with a contribution, the category among them


@pytest.mark.parametrize("rows", [300, 1500])  # below and above FeatureColumns' dict-lookup threshold
def test_the_array_path_equals_the_pandas_path(categorical_scorer: Scorer, churn_fit, rows: int) -> None:
    scorer = categorical_scorer
    _, ds = churn_fit
    frame = ds.test.features.sample(rows, random_state=0, replace=True).reset_index(drop=True)
    assert frame["acquisition_channel"].notna().any()
    frame.loc[:9, FEATURES] = np.nan  # ten customers with nothing known: cold starts
    frame.loc[10:14, "acquisition_channel"] = "a-channel-never-seen"  # unseen category: NaN code
    frame.loc[15:19, "acquisition_channel"] = None
    frame["aov_lifetime"] = frame["aov_lifetime"].astype(object)  # an object column read as numbers
    frame["events_30d"] = frame["events_30d"].fillna(0).astype(np.int64)  # an int column
    expected = reference_score(scorer, frame)
    got = scorer.score(frame)
    assert set(expected.columns) <= set(got.columns)
    assert got["cold_start"].sum() >= 10
    assert any(r["feature"] == "acquisition_channel" for rs in got["churn_reasons"] for r in rs)
    for col in expected.columns:
        if col.endswith("_reasons"):
            for a, b in zip(expected[col], got[col], strict=True):
                if a and a[0]["feature"] == "cold_start":
                    assert b[0]["feature"] == "cold_start"
                    continue
                assert [r["feature"] for r in a] == [r["feature"] for r in b]
                assert [r["text"] for r in a] == [r["text"] for r in b]
                assert [r["value"] for r in a] == [r["value"] for r in b]
                assert np.allclose([r["contribution"] for r in a], [r["contribution"] for r in b], atol=1e-12)
        elif expected[col].dtype.kind == "f":
            np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), rtol=0, atol=1e-12)
        else:
            assert got[col].tolist() == expected[col].tolist(), col


def test_one_row_at_a_time_equals_the_whole_frame(scorer: Scorer, churn_fit) -> None:
    """The API scores one customer per call (small-frame code paths); batch scores thousands."""
    _, ds = churn_fit
    frame = ds.test.features.head(40).reset_index(drop=True)
    whole = scorer.score(frame)
    for i in (0, 7, 39):
        one = scorer.score(frame.iloc[[i]])
        for col in ("churn_probability", "next_purchase_probability_30d", "next_purchase_expected_days", "clv_90d"):
            assert one[col].iloc[0] == pytest.approx(whole[col].iloc[i], abs=1e-12)
        assert one["churn_reasons"].iloc[0] == whole["churn_reasons"].iloc[i]
