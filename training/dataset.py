"""Honest training sets: rolling-origin (customer, cutoff) examples, time-only splits,
and a point-in-time feature join through a pluggable feature source.

Split rule (all cutoffs at midnight UTC):
- test cutoff: the latest cutoff whose horizon has fully passed (test + H <= data end),
  or a fixed one given by the caller;
- validation cutoff: test - H, so its labels are final before the test cutoff
  (half of its rows choose the number of trees, the other half fit the calibrator);
- training cutoffs: validation - k * step for k = 1..n, each at least
  `min_history_days` after the data start; each one's horizon ends before the test
  cutoff. For timing labels, follow-up is cut at the test cutoff for training and
  validation rows, so no outcome after the test cutoff is ever seen in fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.time import to_utc
from training.labels import LabelSpec, labels

DAY = pd.Timedelta(days=1)

# A feature source takes the entity frame [customer_id, cutoff] and returns
# [customer_id, cutoff, <features...>] with values as known at each cutoff.
FeatureSource = Callable[[pd.DataFrame], pd.DataFrame]


class SplitError(ValueError):
    """The data does not cover the horizon honestly (too short a history)."""


@dataclass(frozen=True)
class SplitPlan:
    horizon_days: int
    train_cutoffs: tuple[pd.Timestamp, ...]
    validation_cutoff: pd.Timestamp
    test_cutoff: pd.Timestamp
    data_start: pd.Timestamp
    data_end: pd.Timestamp

    @property
    def cutoffs(self) -> list[pd.Timestamp]:
        return [*self.train_cutoffs, self.validation_cutoff, self.test_cutoff]

    def as_dict(self) -> dict[str, Any]:
        return {
            "horizon_days": self.horizon_days,
            "train_cutoffs": [c.date().isoformat() for c in self.train_cutoffs],
            "validation_cutoff": self.validation_cutoff.date().isoformat(),
            "test_cutoff": self.test_cutoff.date().isoformat(),
            "data_start": self.data_start.isoformat(),
            "data_end": self.data_end.isoformat(),
        }

    def window(self) -> str:
        return f"{self.train_cutoffs[0].date()}..{self.test_cutoff.date()}+{self.horizon_days}d"


def plan_splits(
    data_start: Any,
    data_end: Any,
    horizon_days: int,
    *,
    n_train_cutoffs: int = 4,
    step_days: int = 30,
    min_history_days: int = 60,
    test_cutoff: Any = None,
) -> SplitPlan:
    """Cutoffs for training, validation and test (see the module docstring)."""
    start, end = to_utc(data_start), to_utc(data_end)
    h = pd.Timedelta(days=horizon_days)
    if test_cutoff is None:
        test = (end - h).floor("D")
    else:
        test = to_utc(test_cutoff)
        if test + h > end:
            raise SplitError(f"test cutoff {test.date()} + {horizon_days} days is after the data end {end.date()}")
    val = test - h
    earliest = start + pd.Timedelta(days=min_history_days)
    train = [val - k * pd.Timedelta(days=step_days) for k in range(n_train_cutoffs, 0, -1)]
    train = [c for c in train if c >= earliest]
    if val < earliest or not train:
        need = 2 * horizon_days + step_days + min_history_days
        have = (end - start) / DAY
        raise SplitError(
            f"not enough history for a {horizon_days}-day horizon: need about {need} days of events "
            f"(history, a training cutoff, validation and test horizons), have {have:.0f}"
        )
    return SplitPlan(horizon_days, tuple(train), val, test, start, end)


@dataclass
class Split:
    name: str
    cutoffs: list[pd.Timestamp]
    labels: pd.DataFrame  # customer_id, cutoff, label columns
    features: pd.DataFrame  # aligned row by row with labels

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainingSet:
    spec: LabelSpec
    plan: SplitPlan
    train: Split
    validation: Split
    test: Split
    feature_columns: list[str]
    source: str = "store"
    notes: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> list[Split]:
        return [self.train, self.validation, self.test]


def _cut_followup(frame: pd.DataFrame, until: pd.Timestamp) -> pd.DataFrame:
    """Timing labels as they were known at `until`: follow-up and events after it are dropped."""
    out = frame.copy()
    known = ((until - out["cutoff"]) / DAY).clip(lower=0).astype(float)
    out["followup_days"] = np.minimum(out["followup_days"].to_numpy(float), known.to_numpy())
    out["event_days"] = out["event_days"].where(out["event_days"] <= out["followup_days"])
    return out


def _sample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).sort_values(["cutoff", "customer_id"], kind="stable")


def join_features(entity: pd.DataFrame, source: FeatureSource) -> pd.DataFrame:
    """Features for each (customer_id, cutoff) row of `entity`, in the same row order.

    Customers the source does not know keep all-missing features (cold start downstream).
    """
    feats = source(entity[["customer_id", "cutoff"]].copy())
    if not {"customer_id", "cutoff"} <= set(feats.columns):
        raise ValueError("the feature source must return customer_id and cutoff columns")
    feats = feats.copy()
    feats["customer_id"] = feats["customer_id"].astype(str)
    feats["cutoff"] = pd.to_datetime(feats["cutoff"], utc=True).dt.as_unit("us")
    keys = entity[["customer_id", "cutoff"]].copy()
    keys["cutoff"] = pd.to_datetime(keys["cutoff"], utc=True).dt.as_unit("us")
    merged = keys.merge(feats.drop_duplicates(["customer_id", "cutoff"]), on=["customer_id", "cutoff"], how="left")
    merged.index = entity.index
    return merged


ATTRIBUTE_SKIP = ("customer_id", "first_seen")


def add_customer_attributes(features: pd.DataFrame, customers: pd.DataFrame | None) -> pd.DataFrame:
    """Static customer attributes (segment, acquisition_channel, ...) joined by customer_id for the
    cold-start priors; columns the feature frame already has are left alone."""
    if customers is None or customers.empty:
        return features
    cols = [c for c in customers.columns if c not in ATTRIBUTE_SKIP and c not in features.columns]
    if not cols:
        return features
    table = customers[["customer_id", *cols]].drop_duplicates("customer_id").copy()
    table["customer_id"] = table["customer_id"].astype(str)
    out = features.merge(table, on="customer_id", how="left")
    out.index = features.index
    return out


def build_training_set(
    events: pd.DataFrame,
    spec: LabelSpec,
    plan: SplitPlan,
    feature_source: FeatureSource,
    *,
    customers: pd.DataFrame | None = None,
    max_train_rows: int | None = None,
    max_eval_rows: int | None = None,
    feature_columns: Sequence[str] | None = None,
    source: str = "store",
    seed: int = 0,
) -> TrainingSet:
    """Labels at every cutoff of the plan, split by time, joined point-in-time with features.

    Binary and value labels keep only rows whose horizon is complete. `max_*_rows` sample
    rows (seeded) to bound training time; the test split is never sampled unless asked.
    """
    lab = labels(events, spec, plan.cutoffs, customers=customers, observed_until=plan.data_end)
    if spec.kind == "timing":
        lab = lab.copy()
    parts: dict[str, pd.DataFrame] = {}
    for name, cutoffs in (
        ("train", list(plan.train_cutoffs)),
        ("validation", [plan.validation_cutoff]),
        ("test", [plan.test_cutoff]),
    ):
        frame = lab[lab["cutoff"].isin(cutoffs)]
        if name == "test":
            frame = frame[frame["complete"]]
        elif spec.kind == "timing":
            frame = _cut_followup(frame, plan.test_cutoff)
        else:
            frame = frame[frame["cutoff"] + spec.horizon_days * DAY <= plan.test_cutoff]
        limit = {"train": max_train_rows, "validation": max_eval_rows, "test": max_eval_rows}[name]
        parts[name] = _sample(frame, limit, seed).reset_index(drop=True)
        if parts[name].empty:
            raise SplitError(f"no eligible customers in the {name} split (cutoffs {[c.date() for c in cutoffs]})")
    entity = pd.concat(
        [parts[n][["customer_id", "cutoff"]] for n in ("train", "validation", "test")], ignore_index=True
    )
    feats = join_features(entity, feature_source)
    cols = (
        list(feature_columns)
        if feature_columns is not None
        else [c for c in feats.columns if c not in ("customer_id", "cutoff")]
    )
    feats = add_customer_attributes(feats, customers)
    splits = {}
    offset = 0
    for name in ("train", "validation", "test"):
        n = len(parts[name])
        f = feats.iloc[offset : offset + n].reset_index(drop=True)
        offset += n
        cutoffs = sorted(parts[name]["cutoff"].unique())
        splits[name] = Split(name, [pd.Timestamp(c) for c in cutoffs], parts[name], f)
    return TrainingSet(spec, plan, splits["train"], splits["validation"], splits["test"], cols, source)


class CachedFeatureSource:
    """Features of every customer per cutoff, computed once and shared by every task and split.

    `compute(cutoffs)` returns [customer_id, cutoff, features...] for all customers at those
    cutoffs (many cutoffs in one pass is what the feature engine is fast at); `prefetch`
    computes the union of cutoffs the tasks of one `journey train` will ask for.
    """

    def __init__(self, compute: Callable[[list[pd.Timestamp]], pd.DataFrame], cutoffs_per_call: int = 4) -> None:
        """`cutoffs_per_call` bounds memory: the engine's peak grows with the cutoffs of one call
        (about 2.5 GB per cutoff for 100k customers and 17M events) while its time barely does."""
        self.compute = compute
        self.cutoffs_per_call = cutoffs_per_call
        self._frames: dict[pd.Timestamp, pd.DataFrame] = {}

    def prefetch(self, cutoffs: Sequence[Any]) -> None:
        missing = sorted({to_utc(c) for c in cutoffs} - set(self._frames))
        step = max(self.cutoffs_per_call, 1)
        for i in range(0, len(missing), step):
            chunk = missing[i : i + step]
            feats = self.compute(chunk)
            feats = feats.assign(
                customer_id=feats["customer_id"].astype(str),
                cutoff=pd.to_datetime(feats["cutoff"], utc=True).dt.as_unit("us"),
            )
            for cutoff in chunk:
                part = feats[feats["cutoff"] == cutoff]
                self._frames[cutoff] = part.set_index("customer_id", drop=False)

    def __call__(self, entity: pd.DataFrame) -> pd.DataFrame:
        cutoffs = [to_utc(c) for c in pd.to_datetime(entity["cutoff"], utc=True).unique()]
        self.prefetch(cutoffs)
        parts = []
        for cutoff in cutoffs:
            ids = entity.loc[pd.to_datetime(entity["cutoff"], utc=True) == cutoff, "customer_id"].astype(str)
            frame = self._frames[cutoff]
            parts.append(frame.loc[frame.index.intersection(pd.Index(ids.unique()))])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["customer_id", "cutoff"])


def compute_features_source(events: Any, customers: pd.DataFrame | None = None) -> CachedFeatureSource:
    """The default feature source: `features.journeys.compute_features` on the store glob (or a frame),
    cached per cutoff."""

    def compute(cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
        from features.journeys import compute_features

        return compute_features(events, cutoffs, customers=customers)

    return CachedFeatureSource(compute)


def feast_feature_source(service_name: str, settings: Any) -> FeatureSource:
    """Point-in-time features from Feast (`features.online.historical_features` over the offline tables)."""

    def source(entity: pd.DataFrame) -> pd.DataFrame:
        from features.online import historical_features

        entity_df = entity.rename(columns={"cutoff": "event_timestamp"})
        out = historical_features(entity_df, service_name, settings)
        return out.rename(columns={"event_timestamp": "cutoff"})

    return source
