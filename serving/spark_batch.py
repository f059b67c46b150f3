"""`journey score --engine spark`: the feature build and the scoring on Spark.

Features come from the offline table for the cutoff when it was built, else from the Spark
feature engine (`compute_features(..., engine="spark")`), staged as one Parquet file. The
scoring is `serving.batch.score_chunk` - the API's `score_table` - applied with `mapInPandas`:
the scoring context (champions, action policy, percentile reference) is pickled once on the
driver and broadcast; each Python worker unpickles it on its first batch and keeps it for the
next ones, so models load once per worker, not once per batch. Scores are written by the
executors to a staging folder in customer order; the driver then streams them to the
destination with the same atomic writers as the local engine.

On a cluster, the staging folder must be visible to the driver and the executors (HDFS, S3, a
shared mount): set JOURNEY_HOME to such a place or see docs/batch.md.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import Settings
from serving.batch import BatchError, FeaturePlan, ScoringContext, plan_features, score_chunk

_CONTEXTS: dict[str, ScoringContext] = {}  # per Python worker: run token -> unpickled context


def session(spark: Any = None) -> Any:
    """The given session, else a local[2] one (features.journeys.spark_engine.local_spark)."""
    if spark is not None:
        return spark
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run the driver's interpreter
    try:
        from features.journeys.spark_engine import local_spark

        return local_spark("journeyml-score")
    except Exception as exc:  # noqa: BLE001 - Java missing, pyspark broken: say so plainly
        raise BatchError(f"cannot start Spark: {_first_line(exc)}") from exc


def plan_spark_features(
    settings: Settings, cutoff: pd.Timestamp, listed: list[str] | None, staging: Path, spark: Any = None
) -> tuple[FeaturePlan, Any]:
    """(feature plan, session): the offline table for the cutoff, else features computed on Spark and staged."""
    from features.online import table_path

    spark = session(spark)
    if table_path(settings, cutoff).exists():
        return plan_features(settings, cutoff, listed), spark
    from features.events.store import EventStore
    from features.journeys import compute_features

    store = EventStore(settings.events_dir)
    if store.is_empty():
        raise BatchError(f"no feature table for {cutoff.isoformat()} and no events: run `journey ingest` first")
    customers = str(settings.customers_path) if settings.customers_path.exists() else None
    frame = compute_features(
        store.glob, [cutoff], customers=customers, customer_ids=listed, engine="spark", spark=spark
    )
    folder = staging / f"run-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "features.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    plan = plan_features(settings, cutoff, listed, table=path)
    plan.source = "computed on Spark"
    return plan, spark


def _context(token: str, payload: Any) -> ScoringContext:
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        ctx = pickle.loads(payload.value)  # noqa: S301 - pickled by our own driver a moment ago
        _CONTEXTS.clear()  # one run at a time per worker: drop older contexts and their models
        _CONTEXTS[token] = ctx
    return ctx


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def spark_score(
    spark: Any, plan: FeaturePlan, ctx: ScoringContext, staging: Path, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Score the plan's customers on Spark; yields the output rows in customer order, `chunk_rows` at a time."""
    assert plan.table is not None
    features = spark.read.parquet(str(plan.table)).withColumnRenamed("event_timestamp", "cutoff")
    if "created" in features.columns:
        features = features.drop("created")
    if plan.listed:  # every listed customer, those without features as all-missing rows (cold start)
        ids = spark.createDataFrame(pd.DataFrame({"customer_id": plan.ids.to_pylist()}))
        features = ids.join(features, "customer_id", "left")
    payload = spark.sparkContext.broadcast(pickle.dumps(ctx, protocol=pickle.HIGHEST_PROTOCOL))
    token = f"{ctx.run_id}-{uuid.uuid4().hex}"
    cutoff = ctx.cutoff

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        local = _context(token, payload)
        for frame in batches:
            if len(frame):
                frame["cutoff"] = cutoff
                yield score_chunk(frame, local)

    # Sorting the input (not the output) keeps the scoring to one pass: mapInPandas is narrow, so
    # each partition's rows stay in order and the part files are written in customer order.
    scored = features.orderBy("customer_id").mapInPandas(score_partition, schema=_spark_schema(ctx.schema()))
    folder = staging / f"run-{os.getpid()}" / "scores"
    try:
        try:
            scored.write.mode("overwrite").parquet(str(folder))
        except Exception as exc:  # noqa: BLE001 - a Spark failure arrives as a Java or Python traceback
            raise BatchError(f"the Spark scoring job failed: {_first_line(exc)}") from exc
        schema = ctx.schema()
        for part in sorted(folder.glob("part-*.parquet")):
            for batch in pq.ParquetFile(part, buffer_size=1 << 20).iter_batches(batch_size=chunk_rows):
                table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                yield table.to_pandas()
    finally:
        payload.unpersist()
        shutil.rmtree(folder, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:300]


def clean_staging(staging: Path) -> None:
    shutil.rmtree(staging / f"run-{os.getpid()}", ignore_errors=True)
