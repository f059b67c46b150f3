"""Real-time refresh after `POST /v1/events`: one customer's history and online refresh, indexed against a full scan.

    python benchmarks/bench_refresh.py --home /tmp/perf_home [--customers 20] [--rounds 15]

Without --home it builds a workspace (`bench_api.build_home`: 5,000 customers, 365 days).
The workspace is copied to a temp folder (the given one is left as it is) and the copy's
event store is indexed (`EventStore.build_index`, what `journey ingest` does for a store
written before the index). Then, in interleaved rounds over the same customers:

- history: `customer_history` (the index: only the files holding the customer) against the
  reference kept below (the reader before the index: DuckDB over every file, semi-joined);
- refresh: `refresh_online` (history + `compute_features` + Feast push) with either reader.

Prints the median per call of each, the ratio, and how many files each reads.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def full_scan(store: Any, customer_ids: Sequence[str]) -> pd.DataFrame:
    """The reference: the reader before the index, DuckDB over every file of the store (every
    call), semi-joined on the ids. tests/features/events/test_index.py holds the index to it."""
    import duckdb

    if store.is_empty() or not customer_ids:
        return store.read().to_pandas().iloc[0:0]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        con.register("ids", pd.DataFrame({"customer_id": list(customer_ids)}))
        table = con.sql(
            f"SELECT e.* FROM read_parquet('{store.glob}', hive_partitioning=false) e SEMI JOIN ids USING (customer_id)"
        ).to_arrow_table()
    finally:
        con.close()
    return pd.DataFrame(table.to_pandas())


def full_scan_history(settings: Any, customer_ids: Sequence[str]) -> pd.DataFrame:
    """`customer_history` before the index."""
    from features.events.store import EventStore

    return full_scan(EventStore(settings.events_dir), customer_ids)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a workspace built by bench_api.build_home (default: build one)")
    parser.add_argument("--customers", type=int, default=20, help="customers timed, one per call")
    parser.add_argument("--rounds", type=int, default=15, help="passes over those customers per target")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_refresh-"))
    try:
        home = tmp / "home"
        if args.home is None:
            from benchmarks.bench_api import build_home

            build_home(home)
        else:
            shutil.copytree(args.home, home)
        run(home, args.customers, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(home: Path, n_customers: int, rounds: int) -> None:
    os.environ["JOURNEY_HOME"] = str(home)
    from core.settings import get_settings
    from features import realtime
    from features.events.store import EventStore
    from features.online import open_store

    settings = get_settings()
    store = EventStore(settings.events_dir)
    started = time.perf_counter()
    with store.writer_lock():
        indexed = store.build_index()
    print(f"indexed {indexed} batch(es) of {len(store.files())} files in {time.perf_counter() - started:.2f} s")

    ids = store.read(["customer_id"]).column(0).unique().to_pylist()
    customers = [str(c) for c in np.random.default_rng(0).choice(ids, n_customers, replace=False)]
    files = [len(store.candidate_files([c])) for c in customers]
    print(f"{len(ids):,} customers, {store.count():,} events; per customer the index opens a median of "
          f"{statistics.median(files):g} of {len(store.files())} files")  # fmt: skip
    first = timed(lambda: realtime.customer_history(settings, customers[:1]))
    print(f"first indexed call (loads the index into the process): {first * 1000:.1f} ms")
    for c in customers:  # same rows, whichever reader
        new, old = realtime.customer_history(settings, [c]), full_scan_history(settings, [c])
        pd.testing.assert_frame_equal(new.sort_values("event_id", ignore_index=True),
                                      old.sort_values("event_id", ignore_index=True))  # fmt: skip

    feast = open_store(settings)
    indexed_history = realtime.customer_history
    targets: dict[str, Callable[[str], object]] = {
        "history full scan": lambda c: full_scan_history(settings, [c]),
        "history indexed": lambda c: indexed_history(settings, [c]),
    }

    def refresh(history: Callable[[Any, Sequence[str]], pd.DataFrame]) -> Callable[[str], object]:
        def call(c: str) -> object:
            with mock.patch.object(realtime, "customer_history", history):
                return realtime.refresh_online([c], settings=settings, store=feast)

        return call

    targets["refresh full scan"] = refresh(full_scan_history)
    targets["refresh indexed"] = refresh(indexed_history)
    for fn in targets.values():  # warm-up: imports, DuckDB, Feast registry
        fn(customers[0])
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(rounds):  # interleaved, so the machine's other load hits every target alike
        for c in customers:
            for name, fn in targets.items():
                times[name].append(timed(functools.partial(fn, c)))
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"\nmedian ms per call, one customer ({rounds} rounds x {n_customers} customers)")
    for what in ("history", "refresh"):
        old, new = med[f"{what} full scan"], med[f"{what} indexed"]
        print(f"  {what:8s} full scan {old:7.2f}   indexed {new:7.2f}   ratio {old / new:5.1f}x")


if __name__ == "__main__":
    main()
