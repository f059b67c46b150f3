from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.synth import make_events, simple_features
from training.dataset import CachedFeatureSource, SplitError, build_training_set, join_features, plan_splits
from training.labels import load_spec

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2024-01-01", tz="UTC")


@settings(max_examples=60, deadline=None)
@given(
    days=st.integers(min_value=120, max_value=1500),
    horizon=st.sampled_from([7, 30, 90, 365]),
    n=st.integers(min_value=1, max_value=8),
    step=st.sampled_from([7, 15, 30]),
)
def test_splits_are_by_time_only(days: int, horizon: int, n: int, step: int) -> None:
    end = START + days * DAY + pd.Timedelta(hours=13)
    try:
        plan = plan_splits(START, end, horizon, n_train_cutoffs=n, step_days=step, min_history_days=30)
    except SplitError as exc:
        assert "not enough history" in str(exc)
        return
    h = horizon * DAY
    # the test cutoff is the latest midnight whose horizon has fully passed
    assert plan.test_cutoff + h <= end < plan.test_cutoff + DAY + h
    assert plan.validation_cutoff + h <= plan.test_cutoff
    for c in plan.train_cutoffs:
        assert c + h <= plan.test_cutoff  # every training horizon ends before the test cutoff
        assert c < plan.validation_cutoff
        assert c >= START + 30 * DAY
    assert list(plan.train_cutoffs) == sorted(plan.train_cutoffs)


def test_fixed_test_cutoff_must_have_a_complete_horizon() -> None:
    with pytest.raises(SplitError, match="after the data end"):
        plan_splits(START, START + 200 * DAY, 90, test_cutoff=START + 150 * DAY)


@pytest.fixture(scope="module")
def synth():
    return make_events(300, 540, seed=1)


@pytest.mark.parametrize("task", ["churn", "next_purchase", "clv"])
def test_training_rows_know_nothing_after_the_test_cutoff(synth, task: str) -> None:
    """Dropping every event after the test cutoff + H changes no training or validation label, and
    training/validation rows never use outcomes after the test cutoff."""
    events, customers = synth
    spec = load_spec(task)
    end = events["event_time"].max()
    plan = plan_splits(events["event_time"].min(), end, spec.horizon_days, min_history_days=60)
    full = build_training_set(events, spec, plan, simple_features(events, customers), customers=customers)
    horizon_end = plan.test_cutoff + spec.horizon_days * DAY
    cut_events = events[events["event_time"] <= plan.test_cutoff]
    cut = build_training_set(cut_events, spec, plan, simple_features(cut_events, customers), customers=customers)
    for a, b in ((full.train, cut.train), (full.validation, cut.validation)):
        cols = ["customer_id", "cutoff", "label"] + (["event_days", "followup_days"] if spec.kind == "timing" else [])
        pd.testing.assert_frame_equal(a.labels[cols], b.labels[cols])
        pd.testing.assert_frame_equal(a.features, b.features)
        if spec.kind == "timing":
            known = (plan.test_cutoff - a.labels["cutoff"]) / DAY
            assert (a.labels["followup_days"] <= known + 1e-9).all()
    assert (full.test.labels["cutoff"] == plan.test_cutoff).all()
    assert horizon_end <= end
    assert set(full.train.labels["cutoff"]) <= set(plan.train_cutoffs)


def test_features_are_joined_row_by_row(synth) -> None:
    events, customers = synth
    entity = pd.DataFrame(
        {"customer_id": ["c00003", "nobody", "c00001"], "cutoff": [pd.Timestamp("2025-01-01", tz="UTC")] * 3}
    )
    source = simple_features(events, customers)

    def known_only(frame: pd.DataFrame) -> pd.DataFrame:  # a source that skips unknown customers, reordered
        return source(frame[frame["customer_id"] != "nobody"]).iloc[::-1]

    out = join_features(entity, known_only)
    assert out["customer_id"].tolist() == ["c00003", "nobody", "c00001"]
    assert out.loc[1, ["purchase_days_lifetime", "days_since_last_purchase"]].isna().all()
    direct = source(entity.iloc[[0]])
    assert out.loc[0, "active_days_lifetime"] == direct.loc[0, "active_days_lifetime"]


def test_too_short_history_is_a_clear_error(synth) -> None:
    events, _ = synth
    short = events[events["event_time"] < events["event_time"].min() + 120 * DAY]
    with pytest.raises(SplitError, match="not enough history for a 90-day horizon"):
        plan_splits(short["event_time"].min(), short["event_time"].max(), 90)


def test_sampling_caps_training_rows(synth) -> None:
    events, customers = synth
    spec = load_spec("churn")
    plan = plan_splits(events["event_time"].min(), events["event_time"].max(), 90)
    ds = build_training_set(events, spec, plan, simple_features(events, customers), customers=customers,
                            max_train_rows=100)  # fmt: skip
    assert len(ds.train) == 100
    assert np.isin(ds.train.labels["cutoff"].unique(), plan.train_cutoffs).all()


def test_cached_source_computes_each_cutoff_once_in_bounded_calls(synth) -> None:
    events, customers = synth
    inner = simple_features(events, customers)
    calls: list[list[pd.Timestamp]] = []

    def compute(cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
        calls.append(cutoffs)
        ids = events["customer_id"].unique()
        return inner(pd.DataFrame([(c, t) for t in cutoffs for c in ids], columns=["customer_id", "cutoff"]))

    source = CachedFeatureSource(compute, cutoffs_per_call=2)
    cutoffs = [START + pd.Timedelta(days=d) for d in (200, 230, 260, 290, 320)]
    source.prefetch(cutoffs)
    assert [len(c) for c in calls] == [2, 2, 1]
    entity = pd.DataFrame({"customer_id": ["c00002", "c00001"], "cutoff": [cutoffs[0], cutoffs[4]]})
    out = join_features(entity, source)
    assert len(calls) == 3  # served from the cache
    pd.testing.assert_frame_equal(out, join_features(entity, inner))
