"""The Spark engine: the same partials SQL (`sql.partials_sql`, Spark dialect) on pyspark.

`compute_features(..., engine="spark")` runs the statement on a SparkSession and assembles the
result with the same numpy code as the DuckDB engine. `local_spark()` is a small local-mode
session for tests and single machines.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa

from features.journeys.sql import journey_plan, run_plan


def local_spark(app_name: str = "journeyml-features", partitions: int = 4) -> Any:
    """A local[2] SparkSession: UTC, small shuffles, no UI, bound to localhost (no network).

    Reuses the active session when there is one (getOrCreate), so call `.stop()` only when done
    with Spark in the process.
    """
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.default.parallelism", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )


def _frame(spark: Any, table: pa.Table) -> Any:
    try:
        return spark.createDataFrame(table)  # pyspark >= 4 takes Arrow tables directly
    except (TypeError, ValueError):
        return spark.createDataFrame(table.to_pandas())


def _read(spark: Any, path: str | os.PathLike[str]) -> Any:
    return spark.read.parquet(str(path))  # a directory is read recursively, a glob as a glob


def spark_parts(
    spark: Any,
    events: Any,
    index: pd.DatetimeIndex,
    *,
    customers: Any = None,
    customer_ids: pa.Table | None = None,
) -> tuple[dict[str, pa.Table], tuple[int, ...]]:
    """Run the plan's statements on Spark; returns each part as an Arrow table, and the plan's boundaries."""
    from features.journeys.engine import _customers_table, _cutoffs_table, event_table

    spark = spark or local_spark()
    prefix = f"journey_{uuid.uuid4().hex[:12]}_"
    views: list[str] = []
    cached: list[str] = []

    def view(name: str, frame: Any) -> str:
        full = f"{prefix}{name}"
        frame.createOrReplaceTempView(full)
        views.append(full)
        return full

    def collect(frame: Any) -> pa.Table:
        if hasattr(frame, "toArrow"):
            return frame.toArrow()
        return pa.Table.from_pandas(frame.toPandas(), preserve_index=False)

    try:
        if isinstance(events, str | os.PathLike):
            columns = ["customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties"]
            events_view = view("events", _read(spark, events).select(*columns))
        else:
            events_view = view("events", _frame(spark, event_table(events)))
        cutoffs_view = view("cutoffs", _frame(spark, _cutoffs_table(index)))
        customers_view = None
        customers_opt_in = False
        if customers is not None:
            if isinstance(customers, str | os.PathLike):
                frame = _read(spark, customers)
                opt_in = ["email_opt_in"] if "email_opt_in" in frame.columns else []
                frame = frame.select("customer_id", "first_seen", *opt_in)
            else:
                frame = _frame(spark, _customers_table(customers))
            customers_opt_in = "email_opt_in" in frame.columns
            customers_view = view("customers", frame)
        ids_view = view("ids", _frame(spark, customer_ids)) if customer_ids is not None else None
        plan = journey_plan(
            "spark",
            events=events_view,
            cutoffs=cutoffs_view,
            cutoffs_us=tuple(int(c) for c in index.asi8),
            prefix=prefix,
            customer_ids=ids_view,
            customers=customers_view,
            customers_opt_in=customers_opt_in,
        )
        def materialise(name: str, select: str) -> None:
            spark.sql(select).createOrReplaceTempView(name)
            views.append(name)
            spark.catalog.cacheTable(name)
            cached.append(name)

        return run_plan(plan, materialise, lambda select: collect(spark.sql(select))), plan.boundaries
    finally:
        for name in cached:
            spark.catalog.uncacheTable(name)
        for name in views:
            spark.catalog.dropTempView(name)
