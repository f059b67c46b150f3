"""Benchmark the journey simulator at scale.

    python benchmarks/bench_simulator.py --customers 100000 --days 365

Prints events, seconds (simulate and write separately), events/s and peak RSS, and as a same-run
reference the seconds numpy + pyarrow take just to write an equally sized random Parquet file.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.simulator import simulate, write_simulation


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def reference_write(n: int, path: Path) -> tuple[float, float]:
    """(build seconds, write seconds) for n random rows shaped like events: same columns, types and id lengths."""
    began = time.perf_counter()
    rng = np.random.default_rng(0)

    def strings(prefix: str, pool: int, width: int) -> pa.Array:
        vocabulary = pa.array([f"{prefix}{i:0{width}d}" for i in range(pool)])
        return pc.take(vocabulary, pa.array(rng.integers(0, pool, n)))

    table = pa.table(
        {
            "event_id": strings("e", 1_000_000, 9),
            "customer_id": strings("c", 100_000, 6),
            "event_time": pa.array(
                np.sort(rng.integers(0, 365 * 86_400_000_000, n)), type=pa.timestamp("us", tz="UTC")
            ),
            "event_type": strings("type_", 28, 2),
            "channel": strings("ch", 8, 1),
            "session_id": strings("s", 1_000_000, 8),
            "value": pa.array(rng.random(n) * 100, mask=rng.random(n) < 0.7),
            "properties": pc.if_else(pa.array(rng.random(n) < 0.3), strings('{"product_id": "p', 2000, 5), None),
        }
    )
    built = time.perf_counter() - began
    pq.write_table(table, path, row_group_size=1_000_000)
    return built, time.perf_counter() - began - built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", type=float, default=0.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_simulator_") as tmp:
        began = time.perf_counter()
        sim = simulate(args.customers, args.days, seed=args.seed, faults=args.faults)
        simulated = time.perf_counter() - began
        write_simulation(sim, Path(tmp) / "sim")
        total = time.perf_counter() - began
        n_events = len(sim.events)
        size_mb = (Path(tmp) / "sim" / "events.parquet").stat().st_size / 2**20
        rss = peak_rss_mb()
        del sim
        ref_build, ref_write = reference_write(n_events, Path(tmp) / "reference.parquet")
        ref_mb = (Path(tmp) / "reference.parquet").stat().st_size / 2**20

    print(f"customers          {args.customers}")
    print(f"days               {args.days}")
    print(f"events             {n_events}")
    print(f"seconds            {total:.1f}  (simulate {simulated:.1f} + write {total - simulated:.1f})")
    print(f"events/s           {n_events / total:,.0f}")
    print(f"peak RSS MB        {rss:,.0f}  (simulate + write)")
    print(f"events.parquet MB  {size_mb:,.0f}")
    print(f"reference          {ref_build + ref_write:.1f} s  (random rows, same columns and count; {ref_mb:,.0f} MB)")
    print(f"  build, write     {ref_build:.1f} + {ref_write:.1f}")


if __name__ == "__main__":
    main()
