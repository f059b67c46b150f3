"""compute_features: events + cutoffs -> one row of journey features per (customer, cutoff)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.contract import EVENT_SCHEMA
from core.time import to_utc
from features.journeys.assemble import assemble
from features.journeys.sql import journey_plan, run_plan

EventsInput: TypeAlias = "str | os.PathLike[str] | pa.Table | pd.DataFrame"
CustomersInput: TypeAlias = "str | os.PathLike[str] | pa.Table | pd.DataFrame"
CutoffsInput: TypeAlias = "str | datetime | pd.Timestamp | Iterable[str | datetime | pd.Timestamp]"

_EVENT_COLUMNS = ("customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties")
_TS = pa.timestamp("us", tz="UTC")

_default_db: duckdb.DuckDBPyConnection | None = None
_default_db_lock = threading.Lock()


def _database() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process, created on first use (a connection costs ~20 ms;
    a cursor on it costs microseconds, which is what the real-time path needs)."""
    global _default_db
    with _default_db_lock:
        if _default_db is None:
            _default_db = duckdb.connect()
        return _default_db


def normalize_cutoffs(cutoffs: CutoffsInput) -> pd.DatetimeIndex:
    """Distinct cutoffs, sorted, as a UTC microsecond index; naive values are UTC."""
    if isinstance(cutoffs, str | datetime | pd.Timestamp | np.datetime64):
        values = [cutoffs]
    else:
        values = list(cutoffs)
    if not values:
        raise ValueError("at least one cutoff is needed")
    return pd.DatetimeIndex(sorted({to_utc(v) for v in values})).as_unit("us")


def _timestamps(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_null(values.type):  # an empty or all-missing column
        return values.cast(_TS)
    if not pa.types.is_timestamp(values.type):
        raise TypeError(f"event_time must be a timestamp column, got {values.type}")
    if values.type.tz is None:
        values = values.cast(pa.timestamp(values.type.unit, tz="UTC"))
    return values.cast(_TS, safe=False)  # ns -> us truncates: the store keeps microseconds


def event_table(events: pa.Table | pd.DataFrame) -> pa.Table:
    """The columns the engine reads, in the contract's types (a new table; the input is untouched).

    Optional columns that are absent become nulls (`channel`: 'other'); naive times are UTC.
    """
    if isinstance(events, pd.DataFrame):
        table = pa.Table.from_pandas(events, preserve_index=False)
    elif isinstance(events, pa.Table):
        table = events
    else:
        raise TypeError(f"events must be a path, a pyarrow Table or a pandas DataFrame, not {type(events).__name__}")
    missing = [c for c in ("customer_id", "event_time", "event_type") if c not in table.column_names]
    if missing:
        raise ValueError(f"events lack required columns: {missing}")
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in _EVENT_COLUMNS:
        target = EVENT_SCHEMA.field(name).type
        if name not in table.column_names:
            columns[name] = pa.array(["other"] * n if name == "channel" else [None] * n, type=target)
        elif name == "event_time":
            columns[name] = _timestamps(table.column(name))
        else:
            col = table.column(name)
            columns[name] = col if col.type == target else col.cast(target)
    return pa.table(columns)


def _customers_table(customers: pa.Table | pd.DataFrame) -> pa.Table:
    """customer_id, first_seen and, when the input has it, the boolean email_opt_in (null = unknown)."""
    table = pa.Table.from_pandas(customers, preserve_index=False) if isinstance(customers, pd.DataFrame) else customers
    columns = {
        "customer_id": table.column("customer_id").cast(pa.string()),
        "first_seen": _timestamps(table.column("first_seen")),
    }
    if "email_opt_in" in table.column_names:
        columns["email_opt_in"] = table.column("email_opt_in").cast(pa.bool_())
    return pa.table(columns)


def _quote(path: str | os.PathLike[str]) -> str:
    text = str(path)
    if Path(text).is_dir():
        text = str(Path(text) / "**" / "*.parquet")
    return "'" + text.replace("'", "''") + "'"


def _cutoffs_table(index: pd.DatetimeIndex) -> pa.Table:
    return pa.table({"ci": pa.array(np.arange(len(index)), pa.int32()), "c": pa.array(index.asi8, pa.int64())})


def compute_features(
    events: EventsInput,
    cutoffs: CutoffsInput,
    *,
    customers: CustomersInput | None = None,
    customer_ids: Sequence[str] | None = None,
    engine: Literal["duckdb", "spark"] = "duckdb",
    connection: duckdb.DuckDBPyConnection | None = None,
    spark: Any = None,
) -> pd.DataFrame:
    """Journey features of every customer with an event at or before each cutoff.

    events: a Parquet path or glob in the event contract (e.g. "<root>/event_date=*/*.parquet";
        a directory means every Parquet file under it), or a pyarrow Table / pandas DataFrame.
    cutoffs: one cutoff or many (naive = UTC). Features at T use only events with
        event_time <= T; windows are (T - N days, T]. Many cutoffs are computed in one pass.
    customers: optional table (path or frame) with customer_id and first_seen (for tenure), and
        optionally email_opt_in (boolean, null = unknown: the fallback of the `email_opt_in` feature).
    customer_ids: restrict the population to these customers.
    engine: "duckdb" (default) or "spark" (`spark`: a SparkSession, default `local_spark()`).
    connection: a DuckDB connection to run on (for threads / memory_limit); default a shared
        in-process database, used through a fresh cursor per call.

    Returns a DataFrame with customer_id, cutoff (datetime64[us, UTC]) and every feature of
    `definitions.FEATURES` in registry order (numeric: float64, NaN where undefined;
    categorical: str or None), sorted by cutoff then customer_id. Inputs are never modified.
    """
    index = normalize_cutoffs(cutoffs)
    ids = None if customer_ids is None else pa.table({"customer_id": pa.array(list(customer_ids), pa.string())})
    if engine == "spark":
        from features.journeys.spark_engine import spark_parts

        parts, boundaries = spark_parts(spark, events, index, customers=customers, customer_ids=ids)
    elif engine == "duckdb":
        parts, boundaries = _duckdb_parts(connection, events, index, customers=customers, customer_ids=ids)
    else:
        raise ValueError(f"unknown engine {engine!r}; use 'duckdb' or 'spark'")
    return assemble(parts, index, boundaries)


def _duckdb_parts(
    connection: duckdb.DuckDBPyConnection | None,
    events: EventsInput,
    index: pd.DatetimeIndex,
    *,
    customers: CustomersInput | None,
    customer_ids: pa.Table | None,
) -> tuple[dict[str, pa.Table], tuple[int, ...]]:
    # Registered tables and temp tables are local to a cursor, so fixed names are safe across threads.
    cur = (connection or _database()).cursor()
    views: dict[str, pa.Table] = {"journey_cutoffs": _cutoffs_table(index)}
    if isinstance(events, str | os.PathLike):
        events_rel = f"read_parquet({_quote(events)}, hive_partitioning = false)"
    else:
        events_rel = "journey_events"
        views[events_rel] = event_table(events)
    customers_rel = None
    customers_opt_in = False
    if customers is not None:
        if isinstance(customers, str | os.PathLike):
            customers_rel = f"read_parquet({_quote(customers)})"
            customers_opt_in = "email_opt_in" in cur.sql(f"SELECT * FROM {customers_rel} LIMIT 0").columns
        else:
            customers_rel = "journey_customers"
            views[customers_rel] = _customers_table(customers)
            customers_opt_in = "email_opt_in" in views[customers_rel].column_names
    ids_rel = None
    if customer_ids is not None:
        ids_rel = "journey_customer_ids"
        views[ids_rel] = customer_ids
    plan = journey_plan(
        "duckdb",
        events=events_rel,
        cutoffs="journey_cutoffs",
        cutoffs_us=tuple(int(c) for c in index.asi8),
        customer_ids=ids_rel,
        customers=customers_rel,
        customers_opt_in=customers_opt_in,
    )

    def materialise(name: str, select: str) -> None:
        cur.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {select}")

    try:
        for name, table in views.items():
            cur.register(name, table)
        return run_plan(plan, materialise, lambda select: cur.sql(select).to_arrow_table()), plan.boundaries
    finally:
        for name, _ in reversed(plan.setup):
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        for name in views:
            cur.unregister(name)
        cur.close()
