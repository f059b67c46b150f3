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

from features.journeys.sql import partials_sql


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


def spark_partials(
    spark: Any,
    events: Any,
    index: pd.DatetimeIndex,
    *,
    customers: Any = None,
    customer_ids: pa.Table | None = None,
) -> pa.Table:
    """Run the partials statement on Spark; returns it as an Arrow table (see `sql.PARTIAL_COLUMNS`)."""
    from features.journeys.engine import _customers_table, _cutoffs_table, event_table

    spark = spark or local_spark()
    tag = f"journey_{uuid.uuid4().hex[:12]}"
    views: list[str] = []

    def view(name: str, frame: Any) -> str:
        full = f"{tag}_{name}"
        frame.createOrReplaceTempView(full)
        views.append(full)
        return full

    try:
        if isinstance(events, str | os.PathLike):
            columns = ["customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties"]
            events_view = view("events", _read(spark, events).select(*columns))
        else:
            events_view = view("events", _frame(spark, event_table(events)))
        cutoffs_view = view("cutoffs", _frame(spark, _cutoffs_table(index)))
        customers_view = None
        if customers is not None:
            frame = (
                _read(spark, customers).select("customer_id", "first_seen")
                if isinstance(customers, str | os.PathLike)
                else _frame(spark, _customers_table(customers))
            )
            customers_view = view("customers", frame)
        ids_view = view("ids", _frame(spark, customer_ids)) if customer_ids is not None else None
        sql = partials_sql(
            "spark",
            events=events_view,
            cutoffs=cutoffs_view,
            max_cutoff_literal=f"timestamp_micros({int(index[-1].value // 1000)})",
            customer_ids=ids_view,
            customers=customers_view,
        )
        result = spark.sql(sql)
        if hasattr(result, "toArrow"):
            return result.toArrow()
        return pa.Table.from_pandas(result.toPandas(), preserve_index=False)
    finally:
        for name in views:
            spark.catalog.dropTempView(name)
