"""Reading what training needs from the workspace event store (DuckDB over the Parquet glob)."""

from __future__ import annotations

import glob as globmod
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.contract import NOT_ACTIVITY
from core.time import to_utc

LABEL_EVENT_TYPES = ("purchase", "refund")
STORE_GLOB = "event_date=*/*.parquet"


class StoreError(RuntimeError):
    """The event store is missing or empty."""


@dataclass
class LabelEvents:
    """Events reduced to what labels and eligibility need.

    `events`: every purchase and refund, plus, for all other event types, one row at the
    first and one at the last event time of each customer-day (event_type `_activity`),
    which is enough to answer "any event in (T - d, T]" for d >= 1 day. Events the business
    initiates (`not_activity`) do not count as activity; they only count in `first_seen`.
    """

    events: pd.DataFrame
    first_seen: pd.DataFrame  # customer_id, first_seen (first event of any type)
    data_start: pd.Timestamp
    data_end: pd.Timestamp
    n_events: int
    source: str


def store_glob(events_dir: Path) -> str:
    return str(Path(events_dir) / STORE_GLOB)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def load_label_events(
    glob: str,
    label_event_types: tuple[str, ...] = LABEL_EVENT_TYPES,
    not_activity: tuple[str, ...] = NOT_ACTIVITY,
) -> LabelEvents:
    """Read the store through DuckDB. Raises StoreError when no files match."""
    import duckdb

    root = Path(glob.split("event_date=")[0]) if "event_date=" in glob else Path(glob).parent
    if not list(root.glob("event_date=*/*.parquet")) and not globmod.glob(glob):
        raise StoreError(f"no events at {glob}: run `journey ingest` (or `journey simulate`) first")
    types = _sql_list(label_event_types)
    skip = _sql_list(label_event_types + not_activity)
    src = f"read_parquet('{glob}', hive_partitioning=false, union_by_name=true)"
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        events = con.execute(
            f"""
            SELECT customer_id, event_time, event_type, value FROM {src} WHERE event_type IN ({types})
            UNION ALL
            SELECT customer_id, t, '_activity' AS event_type, NULL::DOUBLE AS value FROM (
                SELECT customer_id, min(event_time) AS lo, max(event_time) AS hi
                FROM {src} WHERE event_type NOT IN ({skip})
                GROUP BY customer_id, date_trunc('day', event_time)
            ) UNPIVOT (t FOR which IN (lo, hi))
            """
        ).df()
        first_seen = con.execute(f"SELECT customer_id, min(event_time) AS first_seen FROM {src} GROUP BY 1").df()
        stats = con.execute(f"SELECT min(event_time), max(event_time), count(*) FROM {src}").fetchone()
    finally:
        con.close()
    if stats is None or stats[2] == 0:
        raise StoreError(f"the event store at {glob} is empty")
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    first_seen["first_seen"] = pd.to_datetime(first_seen["first_seen"], utc=True)
    events = events.drop_duplicates(["customer_id", "event_time", "event_type", "value"]).reset_index(drop=True)
    return LabelEvents(
        events=events,
        first_seen=first_seen,
        data_start=to_utc(stats[0]),
        data_end=to_utc(stats[1]),
        n_events=int(stats[2]),
        source=dataset_source(root),
    )


def known_customers(first_seen: pd.DataFrame, customers: pd.DataFrame | None) -> pd.DataFrame:
    """customer_id, first_seen (the earlier of the first event and the customers table), plus the
    table's attribute columns (segment, acquisition_channel, ...) when there is a table."""
    base = first_seen[["customer_id", "first_seen"]].copy()
    base["customer_id"] = base["customer_id"].astype(str)
    if customers is None or customers.empty:
        return base
    table = customers.copy()
    table["customer_id"] = table["customer_id"].astype(str)
    merged = base.merge(table, on="customer_id", how="outer", suffixes=("", "_table"))
    if "first_seen_table" in merged.columns:
        table_first = pd.to_datetime(merged["first_seen_table"], utc=True)
        merged["first_seen"] = pd.concat([merged["first_seen"], table_first], axis=1).min(axis=1)
        merged = merged.drop(columns="first_seen_table")
    return merged


def load_customers(path: Path) -> pd.DataFrame | None:
    """The customers table (customer_id, first_seen, segment, acquisition_channel, ...) if present."""
    if not Path(path).is_file():
        return None
    frame = pd.read_parquet(path)
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame


def simulator_meta(root: Path) -> dict[str, Any] | None:
    """meta.json written by the simulator next to (or above) the event store, if any."""
    for candidate in (Path(root) / "meta.json", Path(root).parent / "meta.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
            return data if isinstance(data, dict) else None
    return None


def dataset_source(root: Path) -> str:
    meta = simulator_meta(root)
    if meta is not None:
        return "simulator"
    return "store"
