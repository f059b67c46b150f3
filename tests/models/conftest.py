from __future__ import annotations

import os

# Before LightGBM loads (see training.cli._quiet): spinning OpenMP threads crawl on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd
import pytest

from models.journey_model import JourneyModel
from tests.training.synth import make_events, simple_features
from training.dataset import TrainingSet, build_training_set, plan_splits
from training.labels import load_spec
from training.store import known_customers

BTYD_INPUTS = {
    "purchases": "purchase_days_lifetime",
    "days_since_first_purchase": "days_since_first_purchase",
    "days_since_last_purchase": "days_since_last_purchase",
}
SMALL_GBM = {
    "n_estimators": 60,
    "learning_rate": 0.1,
    "min_child_samples": 20,
    "early_stopping_rounds": 10,
    "num_threads": 1,  # tiny data: one thread is as fast and immune to a busy machine
}


@pytest.fixture(scope="session")
def synth_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    events, customers = make_events(1200, 540, seed=3)
    first = (
        events.groupby("customer_id", as_index=False)["event_time"].min().rename(columns={"event_time": "first_seen"})
    )
    return events, known_customers(first, customers)


def dataset(world: tuple[pd.DataFrame, pd.DataFrame], task: str) -> TrainingSet:
    events, customers = world
    spec = load_spec(task)
    plan = plan_splits(events["event_time"].min(), events["event_time"].max(), spec.horizon_days)
    return build_training_set(events, spec, plan, simple_features(events, customers), customers=customers)


FEATURES = [
    "active_days_lifetime",
    "events_30d",
    "days_since_last_activity",
    "purchase_days_lifetime",
    "days_since_first_purchase",
    "days_since_last_purchase",
    "aov_lifetime",
]


def fitted(world: tuple[pd.DataFrame, pd.DataFrame], task: str, **overrides) -> tuple[JourneyModel, TrainingSet]:
    ds = dataset(world, task)
    spec = ds.spec
    params = dict(
        task=task,
        kind=spec.kind,
        horizon_days=spec.horizon_days,
        horizons=tuple(spec.horizons or (spec.horizon_days,)) if spec.kind == "timing" else (spec.horizon_days,),
        bins_days=spec.bins_days,
        features=FEATURES,
        btyd_inputs=None if task == "conversion" else BTYD_INPUTS,
        gbm=SMALL_GBM,
        cold_start={"count_column": "active_days_lifetime", "segment_columns": ["acquisition_channel"]},
    )
    params.update(overrides)
    model = JourneyModel(**params).fit(ds.train.features, ds.train.labels, ds.validation.features, ds.validation.labels)
    return model, ds


@pytest.fixture(scope="session")
def churn_fit(synth_world):
    return fitted(synth_world, "churn")


@pytest.fixture(scope="session")
def timing_fit(synth_world):
    return fitted(synth_world, "next_purchase")


@pytest.fixture(scope="session")
def clv_fit(synth_world):
    return fitted(synth_world, "clv")
