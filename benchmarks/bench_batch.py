"""Batch scoring benchmark: the `journey score` path against the raw LightGBM floor, and peak memory.

    python benchmarks/bench_batch.py --home $JOURNEY_HOME                 # 1,000,000 customers
    python benchmarks/bench_batch.py --home $JOURNEY_HOME --customers 200000 --chunk-rows 25000 --json
    python benchmarks/bench_batch.py --home $JOURNEY_HOME --customers 50000 --profile

Needs a trained workspace (champions and an offline feature table: `journey features build`,
`journey train`). Customers are synthesised chunk by chunk by resampling rows of the newest
feature table with multiplicative noise on the numeric features (so no 1M-customer simulation
is needed and the frame never exists whole), written to a Parquet file one row group per chunk and
read back chunk by chunk as `journey score` reads its feature table. Every chunk is scored twice,
interleaved in rounds of 8 chunks so load on the machine hits both alike:

- the batch path: `serving.batch.scored_chunks` (`score_chunk`, the API's `score_columns`: every
  champion, percentiles, next-best actions, JSON text; chunks in parallel threads, one per core)
  and the Parquet write, as `journey score --no-reasons` does;
- the floor: `Booster.predict` of every booster the champions use, on the same rows already encoded
  as float32 matrices (a timing model asks its booster once per hazard period).

Reasons (TreeSHAP contributions, then words) are timed separately on `--reasons-rows` rows, with
their cost as a factor of the same rows without reasons. Peak memory is the process's maximum
resident set (the models, one chunk and its output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synth_chunk(source: pd.DataFrame, numeric: list[str], start: int, rows: int, seed: int) -> pd.DataFrame:
    """`rows` customers resampled from `source` with ~10% multiplicative noise on numeric features."""
    rng = np.random.default_rng([seed, start])
    pick = rng.integers(0, len(source), rows)
    frame = source.iloc[pick].reset_index(drop=True)
    values = frame[numeric].to_numpy(dtype=float)
    noise = rng.lognormal(0.0, 0.1, values.shape)
    frame[numeric] = values * noise  # NaN stays NaN, zeros stay zero, signs are kept
    frame["customer_id"] = np.char.add("b", np.char.zfill(np.arange(start, start + rows).astype(str), 9)).astype(object)
    return frame


def floor_inputs(models: dict[str, Any], frame: pd.DataFrame) -> list[tuple[Any, np.ndarray, int, int | None, int]]:
    """(booster, float32 matrix, best iteration, period column or None, predict calls) per model part:
    what the models hand LightGBM, encoded ahead (a timing model asks once per hazard period)."""
    from models.estimators import DiscreteHazardModel, encode_frame

    out: list[tuple[Any, np.ndarray, int, int | None, int]] = []
    for model in models.values():
        for part in model.parts:
            est = part.estimator_
            enc = encode_frame(part.augment(frame), est.feature_names_, est.categories_)
            if isinstance(est, DiscreteHazardModel):
                enc["period"] = np.float32(0)
                matrix = np.ascontiguousarray(enc.to_numpy(np.float32))
                period = int(enc.columns.get_loc("period"))
                out.append((est.booster_, matrix, est.best_iteration_, period, len(est.bins_days)))
            else:
                out.append((est.booster_, np.ascontiguousarray(enc.to_numpy(np.float32)), est.best_iteration_, None, 1))
    return out


def run_floor(inputs: list[tuple[Any, np.ndarray, int, int | None, int]]) -> float:
    t = time.perf_counter()
    for booster, matrix, iteration, period_col, calls in inputs:
        for k in range(calls):
            if period_col is not None:
                matrix[:, period_col] = np.float32(k)
            booster.predict(matrix, num_iteration=iteration)
    return time.perf_counter() - t


def open_workspace(home: str) -> tuple[Any, list[Path]]:
    """(settings, offline feature tables) of a trained workspace, which becomes JOURNEY_HOME."""
    os.environ["JOURNEY_HOME"] = str(Path(home).resolve())
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from core.settings import get_settings
    from features.online import feature_tables

    settings = get_settings()
    tables = feature_tables(settings)
    if not tables:
        raise SystemExit(f"no feature table under {settings.features_dir}: run `journey features build` first")
    return settings, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=os.environ.get("JOURNEY_HOME", ".journey"), help="a trained workspace")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--reasons-rows", type=int, default=5_000, help="rows for the reasons timing (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="chunks scored at once (default: one per core)")
    parser.add_argument("--profile", action="store_true", help="cProfile one chunk of the batch path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings, tables = open_workspace(args.home)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.online import numeric_names
    from serving.batch import batch_workers, load_context, score_chunk, scored_chunks, to_arrow

    source = pd.read_parquet(tables[-1]).rename(columns={"event_timestamp": "cutoff"}).drop(columns=["created"])
    cutoff = pd.Timestamp(source["cutoff"].iloc[0])
    ctx, _ = load_context(settings, cutoff)
    ctx.run_id, ctx.reasons = "bench", False
    numeric = [c for c in numeric_names() if c in source.columns]
    schema = ctx.schema()
    rss_loaded = _rss_mb()

    if args.profile:
        import cProfile
        import pstats

        chunk = synth_chunk(source, numeric, 0, args.chunk_rows, args.seed)
        prof = cProfile.Profile()
        prof.enable()
        score_chunk(chunk, ctx)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        return

    batch_s = floor_s = 0.0
    rows = 0
    workers = args.workers or batch_workers(settings)
    starts = list(range(0, args.customers, args.chunk_rows))
    per_round = 8  # row groups per interleaved round: the batch pipeline runs on, as in `journey score`
    with tempfile.TemporaryDirectory() as tmp:
        # The customers go to a Parquet file first, one row group per chunk, and both paths read it
        # back chunk by chunk, as `journey score` reads its feature table (memory stays one chunk
        # per worker; the read is part of the batch time, not of the floor's).
        features_path = Path(tmp) / "features.parquet"
        feature_writer: pq.ParquetWriter | None = None
        for start in starts:
            chunk = synth_chunk(source, numeric, start, min(args.chunk_rows, args.customers - start), args.seed)
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if feature_writer is None:
                feature_writer = pq.ParquetWriter(features_path, table.schema)
            feature_writer.write_table(table)
            del chunk, table
        assert feature_writer is not None
        feature_writer.close()
        features_file = pq.ParquetFile(features_path)

        def read(group: int) -> pd.DataFrame:
            return features_file.read_row_group(group).to_pandas()

        writer = pq.ParquetWriter(Path(tmp) / "scores.parquet", schema, compression="zstd")
        for first in range(0, len(starts), per_round):
            groups = range(first, min(first + per_round, len(starts)))
            for group in groups:
                inputs = floor_inputs(ctx.models, read(group))
                floor_s += run_floor(inputs)
                del inputs
            t = time.perf_counter()
            for _, out in scored_chunks((read(g) for g in groups), ctx, workers):
                writer.write_table(to_arrow(out, schema))
                rows += len(out)
            batch_s += time.perf_counter() - t
        writer.close()
        out_mb = (Path(tmp) / "scores.parquet").stat().st_size / 1e6
    result: dict[str, Any] = {
        "customers": rows,
        "chunk_rows": args.chunk_rows,
        "workers": workers,
        "tasks": ctx.tasks,
        "booster_calls_per_row": sum(c for *_, c in floor_inputs(ctx.models, source.head(10))),
        "batch_seconds": round(batch_s, 2),
        "batch_rows_per_second": round(rows / batch_s),
        "floor_seconds": round(floor_s, 2),
        "floor_rows_per_second": round(rows / floor_s),
        "share_of_floor": round(floor_s / batch_s, 3),
        "output_mb": round(out_mb, 1),
        "rss_after_loading_mb": round(rss_loaded),
    }
    if args.reasons_rows:
        chunk = synth_chunk(source, numeric, args.customers, args.reasons_rows, args.seed)
        ctx.reasons = True
        t = time.perf_counter()
        score_chunk(chunk, ctx)
        with_reasons = time.perf_counter() - t
        ctx.reasons = False
        t = time.perf_counter()
        score_chunk(chunk, ctx)
        without = time.perf_counter() - t
        result.update(
            {
                "reasons_rows": args.reasons_rows,
                "reasons_rows_per_second": round(args.reasons_rows / with_reasons),
                "reasons_cost_factor": round(with_reasons / without, 1),
            }
        )
    result["peak_rss_mb"] = round(_rss_mb())
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:>36}: {value}")


if __name__ == "__main__":
    main()
