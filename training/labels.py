"""Label specs (versioned YAML in conf/labels) and the pure label function.

A spec says who is eligible at a cutoff T (using events <= T only), the horizon H,
and what the label is (using events in (T, T + H] only). Windows are half-open the
way the rest of the project counts them: an event exactly at the cutoff belongs to
the past, an event exactly at T + H belongs to the horizon.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from core.time import to_utc

LABELS_DIR = Path(__file__).resolve().parents[1] / "conf" / "labels"
TASKS: tuple[str, ...] = ("churn", "next_purchase", "conversion", "clv")

Kind = Literal["binary", "timing", "regression"]
PopulationKind = Literal["purchasers", "prospects", "all"]
LabelKind = Literal["no_event", "any_event", "sum_value", "count"]
DAY = pd.Timedelta(days=1)


class SpecError(ValueError):
    """A label spec that cannot be used (unknown keys, bad values, missing file)."""


@dataclass(frozen=True)
class Population:
    kind: PopulationKind = "all"
    lookback_days: int | None = None  # purchasers: a purchase in (T - lookback, T]; None = ever
    active_days: int | None = None  # a customer-initiated event in (T - active_days, T]; None = no rule
    event_types: tuple[str, ...] = ("purchase",)
    # events the business initiates do not make a customer "active"
    activity_excludes: tuple[str, ...] = ("ad_impression", "email_sent", "marketing_contact")


@dataclass(frozen=True)
class LabelRule:
    kind: LabelKind
    event_types: tuple[str, ...] = ("purchase",)
    subtract_event_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSpec:
    """A parsed label spec. `hash` is over the canonical content, so comments and key order do not change it."""

    name: str
    version: int
    kind: Kind
    population: Population
    label: LabelRule
    horizon_days: int
    horizons: tuple[int, ...] = ()
    bins_days: tuple[int, ...] = ()
    feature_service: str = ""
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def all_horizons(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.horizons) | {self.horizon_days}))

    @property
    def max_followup_days(self) -> int:
        """The longest window after the cutoff the label looks at."""
        return max([*self.all_horizons, *self.bins_days])

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LabelSpec:
        known = {"name", "version", "kind", "description", "feature_service", "population", "label", "horizon_days",
                 "horizons", "timing"}  # fmt: skip
        unknown = set(raw) - known
        if unknown:
            raise SpecError(f"unknown keys in label spec: {sorted(unknown)}")
        try:
            pop_raw = dict(raw.get("population") or {})
            label_raw = dict(raw["label"])
            population = Population(
                kind=pop_raw.pop("kind", "all"),
                lookback_days=pop_raw.pop("lookback_days", None),
                active_days=pop_raw.pop("active_days", None),
                event_types=tuple(pop_raw.pop("event_types", ["purchase"])),
                activity_excludes=tuple(
                    pop_raw.pop("activity_excludes", ["ad_impression", "email_sent", "marketing_contact"])
                ),
            )
            if pop_raw:
                raise SpecError(f"unknown population keys: {sorted(pop_raw)}")
            rule = LabelRule(
                kind=label_raw.pop("kind"),
                event_types=tuple(label_raw.pop("event_types", ["purchase"])),
                subtract_event_types=tuple(label_raw.pop("subtract_event_types", [])),
            )
            if label_raw:
                raise SpecError(f"unknown label keys: {sorted(label_raw)}")
            timing = dict(raw.get("timing") or {})
            spec = cls(
                name=str(raw["name"]),
                version=int(raw.get("version", 1)),
                kind=raw["kind"],
                population=population,
                label=rule,
                horizon_days=int(raw["horizon_days"]),
                horizons=tuple(int(h) for h in raw.get("horizons", [])),
                bins_days=tuple(int(b) for b in timing.get("bins_days", [])),
                feature_service=str(raw.get("feature_service", "")),
                description=str(raw.get("description", "")),
                raw=raw,
            )
        except KeyError as exc:
            raise SpecError(f"label spec is missing {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"bad label spec: {exc}") from exc
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.kind not in ("binary", "timing", "regression"):
            raise SpecError(f"kind must be binary, timing or regression, not {self.kind!r}")
        if self.population.kind not in ("purchasers", "prospects", "all"):
            raise SpecError(f"population.kind must be purchasers, prospects or all, not {self.population.kind!r}")
        if self.label.kind not in ("no_event", "any_event", "sum_value", "count"):
            raise SpecError(f"label.kind must be no_event, any_event, sum_value or count, not {self.label.kind!r}")
        if any(h <= 0 for h in self.all_horizons):
            raise SpecError("horizons must be positive numbers of days")
        if self.kind == "timing" and (not self.bins_days or list(self.bins_days) != sorted(set(self.bins_days))):
            raise SpecError("a timing spec needs timing.bins_days, strictly increasing")
        if self.kind == "timing" and not set(self.all_horizons) <= set(self.bins_days):
            raise SpecError("every horizon of a timing spec must be one of timing.bins_days")
        for days in (self.population.lookback_days, self.population.active_days):
            if days is not None and days <= 0:
                raise SpecError("lookback_days / active_days must be positive or null")


def load_spec(task_or_path: str | Path, labels_dir: Path | None = None) -> LabelSpec:
    """Load `conf/labels/<task>.yaml`, or a YAML file given by path."""
    path = Path(task_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = (labels_dir or LABELS_DIR) / f"{task_or_path}.yaml"
    if not path.is_file():
        raise SpecError(f"no label spec at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping")
    return LabelSpec.from_dict(raw)


def label_columns(spec: LabelSpec) -> list[str]:
    cols = ["label"] + [f"label_{h}d" for h in spec.all_horizons]
    if spec.kind == "timing":
        cols += ["event_days", "followup_days"]
    return cols


def _as_frame(events: Any) -> pd.DataFrame:
    if hasattr(events, "to_pandas") and not isinstance(events, pd.DataFrame):
        events = events.to_pandas()
    if not isinstance(events, pd.DataFrame):
        raise TypeError("events must be a pandas DataFrame or an Arrow table")
    missing = {"customer_id", "event_time", "event_type"} - set(events.columns)
    if missing:
        raise ValueError(f"events lack columns {sorted(missing)}")
    cols = ["customer_id", "event_time", "event_type"] + (["value"] if "value" in events.columns else [])
    frame = events[cols].copy()
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    if "value" not in frame.columns:
        frame["value"] = np.nan
    return frame


def _last_before(times: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Series:
    """Per customer, the latest event_time <= cutoff."""
    past = times[times["event_time"] <= cutoff]
    return past.groupby("customer_id", sort=False)["event_time"].max()


def labels(
    events: Any,
    spec: LabelSpec,
    cutoffs: Iterable[Any],
    *,
    customers: pd.DataFrame | None = None,
    observed_until: Any = None,
) -> pd.DataFrame:
    """Eligible customers at each cutoff with their labels.

    Inputs: events in the event contract (customer_id, event_time, event_type, value;
    a pandas frame or Arrow table), the spec, cutoffs (anything `core.time.to_utc` reads),
    optionally a customers frame (customer_id, first_seen) adding customers with no events,
    and `observed_until`, the end of the data (default: the latest event). Rows of any
    event type other than the label/population types only mark activity (unless listed in
    `population.activity_excludes`), so a caller may pass one row per customer-day for them
    and give first-seen times through `customers`.

    Output: one row per (customer_id, cutoff) eligible at the cutoff, with `label` (the
    primary horizon), `label_<h>d` for every horizon, `complete_<h>d` (True when
    cutoff + h <= observed_until, i.e. the label is final) and `complete` (primary), and
    for timing specs `event_days` (days from the cutoff to the first event in
    (T, T + max bin], NaN if none seen) and `followup_days` (days observed after T, at
    most the last bin). Eligibility uses events <= T only; labels use events in
    (T, T + H] only, so later events never change a complete label.
    """
    frame = _as_frame(events)
    cutoff_list = sorted({to_utc(c) for c in cutoffs})
    if not cutoff_list:
        raise ValueError("no cutoffs given")
    end = to_utc(observed_until) if observed_until is not None else frame["event_time"].max()
    if end is pd.NaT or pd.isna(end):
        end = cutoff_list[-1]

    first_seen = frame.groupby("customer_id", sort=False)["event_time"].min()
    if customers is not None and len(customers) and "first_seen" in customers.columns:
        extra = customers[["customer_id", "first_seen"]].dropna().copy()
        extra["customer_id"] = extra["customer_id"].astype(str)
        extra_first = pd.to_datetime(extra["first_seen"], utc=True).groupby(extra["customer_id"]).min()
        first_seen = pd.concat([first_seen, extra_first]).groupby(level=0).min()

    activity = frame.loc[~frame["event_type"].isin(spec.population.activity_excludes), ["customer_id", "event_time"]]
    pop_types = list(spec.population.event_types)
    pop_events = frame[frame["event_type"].isin(pop_types)][["customer_id", "event_time"]]
    label_events = frame[frame["event_type"].isin(spec.label.event_types)]
    minus_events = frame[frame["event_type"].isin(spec.label.subtract_event_types)]
    horizons = spec.all_horizons
    follow = spec.max_followup_days

    out = []
    for cutoff in cutoff_list:
        universe = first_seen[first_seen <= cutoff].index
        base = pd.DataFrame({"customer_id": universe.astype(str)})
        pop = spec.population
        if pop.kind in ("purchasers", "prospects"):
            last_pop = _last_before(pop_events, cutoff)
            if pop.kind == "purchasers":
                keep = last_pop if pop.lookback_days is None else last_pop[last_pop > cutoff - pop.lookback_days * DAY]
                base = base[base["customer_id"].isin(keep.index)]
            else:
                base = base[~base["customer_id"].isin(last_pop.index)]
        if pop.active_days is not None:
            last_any = _last_before(activity, cutoff)
            active = last_any[last_any > cutoff - pop.active_days * DAY].index
            base = base[base["customer_id"].isin(active)]
        base = base.set_index("customer_id")

        after = label_events[
            (label_events["event_time"] > cutoff) & (label_events["event_time"] <= cutoff + follow * DAY)
        ]
        after_minus = minus_events[
            (minus_events["event_time"] > cutoff) & (minus_events["event_time"] <= cutoff + follow * DAY)
        ]
        after = after[after["customer_id"].isin(base.index)]
        after_minus = after_minus[after_minus["customer_id"].isin(base.index)]
        offset = (after["event_time"] - cutoff) / DAY
        offset_minus = (after_minus["event_time"] - cutoff) / DAY
        for h in horizons:
            in_h = after[offset <= h]
            if spec.label.kind in ("no_event", "any_event"):
                hit = base.index.isin(in_h["customer_id"].unique())
                value = (~hit if spec.label.kind == "no_event" else hit).astype(np.int8)
            elif spec.label.kind == "count":
                value = in_h.groupby("customer_id").size().reindex(base.index, fill_value=0).to_numpy(float)
            else:
                plus = in_h.groupby("customer_id")["value"].sum().reindex(base.index, fill_value=0.0)
                minus_h = after_minus[offset_minus <= h]
                minus = minus_h.groupby("customer_id")["value"].sum().reindex(base.index, fill_value=0.0)
                value = (plus.fillna(0.0) - minus.fillna(0.0)).to_numpy(float)
            base[f"label_{h}d"] = value
            base[f"complete_{h}d"] = bool(cutoff + h * DAY <= end)
        base["label"] = base[f"label_{spec.horizon_days}d"]
        base["complete"] = base[f"complete_{spec.horizon_days}d"]
        if spec.kind == "timing":
            first_after = after.assign(days=offset).groupby("customer_id")["days"].min()
            observed = max(0.0, min(float(follow), (end - cutoff) / DAY))
            event_days = first_after.reindex(base.index)
            base["event_days"] = event_days.where(event_days <= observed)
            base["followup_days"] = observed
        base.insert(0, "cutoff", cutoff)
        out.append(base.reset_index())
    result = pd.concat(out, ignore_index=True)
    return result.sort_values(["cutoff", "customer_id"], kind="stable").reset_index(drop=True)


def hazard_rows(label_frame: pd.DataFrame, bins_days: Sequence[int]) -> pd.DataFrame:
    """Expand (customer, cutoff) timing labels into discrete-time person-period rows.

    Period k covers (bins[k-1], bins[k]] days after the cutoff. A row exists only for
    periods the customer entered event-free and that were fully observed (bin end <=
    followup_days), or that hold the event; `event` is 1 in the period of the first
    event. Censored follow-up is thus used honestly: partial periods are dropped.
    Output: the input's index as `row`, `period` (0-based), `period_start`, `period_days`, `event`.
    """
    edges = np.asarray([0, *bins_days], dtype=float)
    ev = label_frame["event_days"].to_numpy(float)
    fu = label_frame["followup_days"].to_numpy(float)
    parts = []
    for k in range(len(bins_days)):
        lo, hi = edges[k], edges[k + 1]
        alive = np.isnan(ev) | (ev > lo)
        event_here = ~np.isnan(ev) & (ev > lo) & (ev <= hi)
        observed = (fu >= hi) | event_here
        keep = alive & observed
        idx = np.flatnonzero(keep)
        parts.append(
            pd.DataFrame(
                {
                    "row": idx,
                    "period": k,
                    "period_start": lo,
                    "period_days": hi - lo,
                    "event": event_here[idx].astype(np.int8),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
