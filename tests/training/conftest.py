from __future__ import annotations

import os

# Before LightGBM loads (see training.cli._quiet): spinning OpenMP threads crawl on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contract import EVENT_SCHEMA
from tests.training.synth import make_events
from training.store import LabelEvents, known_customers

FAST = {
    "gbm.n_estimators": 40,
    "gbm.learning_rate": 0.1,
    "gbm.min_child_samples": 20,
    "gbm.early_stopping_rounds": 10,
    "splits.n_train_cutoffs": 3,
    "gbm.num_threads": 1,  # tiny data: one thread is as fast and immune to a busy machine
}


@pytest.fixture(autouse=True)
def _quiet_mlflow():
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="session")
def world() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_events(700, 540, seed=5)


def label_events(events: pd.DataFrame) -> LabelEvents:
    first = (
        events.groupby("customer_id", as_index=False)["event_time"].min().rename(columns={"event_time": "first_seen"})
    )
    return LabelEvents(events, first, events["event_time"].min(), events["event_time"].max(), len(events), "synthetic")


def customers_of(world) -> pd.DataFrame:
    events, customers = world
    return known_customers(label_events(events).first_seen, customers)


def write_store(events: pd.DataFrame, events_dir: Path) -> None:
    """The event store layout the ingestion writes: event_date=YYYY-MM-DD/part-*.parquet."""
    frame = events.copy()
    frame["session_id"] = None
    frame["properties"] = None
    frame = frame[[f.name for f in EVENT_SCHEMA]]
    days = frame["event_time"].dt.strftime("%Y-%m-%d")
    for day, part in frame.groupby(days):
        folder = events_dir / f"event_date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part, schema=EVENT_SCHEMA, preserve_index=False), folder / "part-0.parquet")
