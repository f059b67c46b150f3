"""Ingestion throughput and peak memory, against a plain pyarrow read+write of the same file.

    python benchmarks/bench_ingest.py --customers 100000 --days 365

Simulates events (written once as Parquet), then times `ingest_files` into a fresh store
(validate, dedup, quarantine, partition, atomic commit), then a second ingest of the same
file (all duplicates). The reference is reading the same Parquet and writing it once with
pyarrow: the floor for any ingestion. Peak memory is measured in a child process per run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import pandas as pd
mode, src, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = time.perf_counter()
if mode == "reference":
    import pyarrow.parquet as pq
    pq.write_table(pq.read_table(src), root / "copy.parquet", compression="zstd")
    out = {}
else:
    from features.events.ingest import ingest_files
    from features.events.store import EventStore
    r = ingest_files([src], EventStore(root / "events"), root / "q", now=pd.Timestamp("2100-01-01", tz="UTC"))
    out = {"read": r.read, "accepted": r.accepted, "duplicates": r.duplicates, "quarantined": r.quarantined}
out["seconds"] = time.perf_counter() - t
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, src: Path, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(src), str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    from features.simulator import simulate, write_simulation

    with tempfile.TemporaryDirectory(prefix="journey-bench-ingest-") as tmp:
        root = Path(tmp)
        sim = simulate(args.customers, args.days, seed=11)
        n = len(sim.events)
        src = Path(write_simulation(sim, root / "sim")["events"])
        del sim
        ref = child("reference", src, root)
        first = child("ingest", src, root)
        again = child("ingest", src, root)
    print(f"events: {n:,}")
    print(f"{'run':<28}{'seconds':>9}{'events/s':>12}{'peak MB':>9}{'x reference':>13}")
    for name, r in (("pyarrow read+write (ref)", ref), ("ingest (new store)", first), ("re-ingest (all dups)", again)):
        print(
            f"{name:<28}{r['seconds']:>9.1f}{n / r['seconds']:>12,.0f}{r['peak_mb']:>9.0f}"
            f"{r['seconds'] / ref['seconds']:>13.1f}"
        )
    assert first["accepted"] == n and again["duplicates"] == n, (first, again)
    print(f"bench process peak MB: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
