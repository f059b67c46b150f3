"""Benchmark the journey feature engine on a simulator-like Parquet event store.

    python benchmarks/bench_features.py                       # 100k simulated customers, ~11M events
    python benchmarks/bench_features.py --customers 10000     # a quick run
    python benchmarks/bench_features.py --source synthetic    # numpy-generated events instead

Measures, each in a fresh child process (so that peak RSS is the measured step's own):
one cutoff's features, a 12-cutoff training grid, the floor (a plain DuckDB GROUP BY
customer_id count over the same files) and a pandas groupby reference on a subset of the
features, extrapolated to the full feature count (stated in the output).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from core.contract import EVENT_SCHEMA  # noqa: E402

DAY_US = 86_400_000_000
START = pd.Timestamp("2023-01-01", tz="UTC")

# Browsing inside a visit: type -> weight (positions after the first).
_BROWSE = {
    "page_view": 30, "product_view": 25, "search": 8, "review_read": 4, "compare": 1.5, "video_view": 2,
    "content_download": 0.5, "add_to_cart": 6, "remove_from_cart": 1.5, "login": 3, "social_engagement": 1,
}  # fmt: skip
_ACTIONS = ("email_offer", "discount_10", "winback_call", "push_reminder")


def synthetic_events(n_customers: int, days: int = 730, seed: int = 0) -> pa.Table:
    """Contract events of `n_customers` over `days` days from 2023-01-01 (about 100 per customer).

    Visits (sessions) of a few events each, on web/app/store, some converting (checkout_start +
    purchase) or bouncing; weekly-ish emails with opens and clicks, ad impressions and clicks,
    monthly marketing contacts with an action, and rare refunds, NPS answers, tickets, reviews,
    referrals and cancellations. Customers arrive over the first 80% of the period and stop
    visiting after an exponential lifetime (marketing continues).
    """
    rng = np.random.default_rng(seed)
    span = days * DAY_US
    t0 = START.value // 1000
    arrive = (rng.random(n_customers) * 0.8 * span).astype(np.int64)
    life = (rng.exponential(300, n_customers) * DAY_US).astype(np.int64)
    stop = np.minimum(arrive + life, span)
    active_days = (stop - arrive) / DAY_US
    listed_days = (span - arrive) / DAY_US

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("cust", "t", "type", "channel", "session", "value")}
    types = list(_BROWSE) + [
        "session_start", "landing_page_view", "bounce", "checkout_start", "purchase", "email_sent", "email_open",
        "email_click", "ad_impression", "ad_click", "marketing_contact", "nps_response", "support_ticket",
        "refund", "review_written", "referral", "subscription_cancel",
    ]  # fmt: skip
    code = {k: i for i, k in enumerate(types)}
    channels = ["web", "app", "email", "social", "ads", "store", "support", "other"]
    ch = {c: i for i, c in enumerate(channels)}

    def add(cust: np.ndarray, t: np.ndarray, kind: np.ndarray | int, channel: np.ndarray | int,
            session: np.ndarray | None = None, value: np.ndarray | None = None) -> None:  # fmt: skip
        n = len(cust)
        cols["cust"].append(cust)
        cols["t"].append(t)
        cols["type"].append(np.broadcast_to(np.asarray(kind, dtype=np.int16), (n,)).copy())
        cols["channel"].append(np.broadcast_to(np.asarray(channel, dtype=np.int8), (n,)).copy())
        cols["session"].append(np.full(n, -1, dtype=np.int64) if session is None else session)
        cols["value"].append(np.full(n, np.nan) if value is None else value)

    # visits
    rate = rng.lognormal(np.log(0.035), 0.7, n_customers)  # visits per active day
    n_visits = rng.poisson(rate * active_days)
    v_cust = np.repeat(np.arange(n_customers), n_visits)
    v_t = arrive[v_cust] + (rng.random(len(v_cust)) * (stop - arrive)[v_cust]).astype(np.int64)
    v_len = 2 + rng.poisson(5, len(v_cust))
    bounce = rng.random(len(v_cust)) < 0.15
    v_len[bounce] = 2
    convert = ~bounce & (rng.random(len(v_cust)) < 0.12)
    v_channel = rng.choice([ch["web"], ch["app"], ch["store"]], len(v_cust), p=[0.6, 0.35, 0.05]).astype(np.int8)
    e_visit = np.repeat(np.arange(len(v_cust)), v_len)
    pos = np.arange(len(e_visit)) - np.repeat(np.cumsum(v_len) - v_len, v_len)
    gaps = rng.exponential(45e6, len(e_visit)).astype(np.int64)
    gaps[pos == 0] = 0
    offs = np.cumsum(gaps)
    offs -= np.repeat(offs[np.cumsum(v_len) - v_len], v_len)
    e_t = v_t[e_visit] + offs
    browse_names = list(_BROWSE)
    weights = np.array([_BROWSE[k] for k in browse_names], dtype=float)
    e_type = np.array([code[k] for k in browse_names], dtype=np.int16)[
        rng.choice(len(browse_names), len(e_visit), p=weights / weights.sum())
    ]
    last = pos == v_len[e_visit] - 1
    e_type[pos == 0] = code["session_start"]
    e_type[(pos == 1) & (rng.random(len(e_visit)) < 0.4)] = code["landing_page_view"]
    e_type[bounce[e_visit] & (pos == 1)] = code["bounce"]
    conv_e = convert[e_visit]
    e_type[conv_e & last] = code["purchase"]
    e_type[conv_e & (pos == v_len[e_visit] - 2)] = code["checkout_start"]
    e_type[conv_e & (pos == v_len[e_visit] - 3)] = code["add_to_cart"]
    e_value = np.full(len(e_visit), np.nan)
    is_pv = e_type == code["page_view"]
    e_value[is_pv] = rng.integers(1, 300, is_pv.sum())
    is_video = e_type == code["video_view"]
    e_value[is_video] = rng.integers(5, 600, is_video.sum())
    is_buy = e_type == code["purchase"]
    e_value[is_buy] = np.round(rng.lognormal(3.6, 0.8, is_buy.sum()), 2)
    add(v_cust[e_visit], e_t, e_type, v_channel[e_visit], e_visit, e_value)

    # after purchases: refunds, reviews
    buy_idx = np.flatnonzero(is_buy)
    for kind, p, lag_days, channel in (("refund", 0.06, 12, ch["support"]), ("review_written", 0.05, 9, ch["web"])):
        pick = buy_idx[rng.random(len(buy_idx)) < p]
        value = np.round(e_value[pick] * rng.uniform(0.3, 1.2, len(pick)), 2) if kind == "refund" else None
        add(v_cust[e_visit[pick]], e_t[pick] + (rng.exponential(lag_days, len(pick)) * DAY_US).astype(np.int64),
            code[kind], channel, None, value)  # fmt: skip

    def scattered(per_day: float, start: np.ndarray, length_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = rng.poisson(per_day * length_days)
        cust = np.repeat(np.arange(n_customers), n)
        t = start[cust] + (rng.random(len(cust)) * length_days[cust] * DAY_US).astype(np.int64)
        return cust, t

    # marketing: emails every ~20 days while listed, opens and clicks; ads; contacts
    e_cust, e_t2 = scattered(1 / 20, arrive, listed_days)
    add(e_cust, e_t2, code["email_sent"], ch["email"])
    engaged = (e_t2 < stop[e_cust]) & (rng.random(len(e_cust)) < 0.3)
    add(e_cust[engaged], e_t2[engaged] + 3_600_000_000, code["email_open"], ch["email"])
    clicked = engaged & (rng.random(len(e_cust)) < 0.25)
    add(e_cust[clicked], e_t2[clicked] + 3_700_000_000, code["email_click"], ch["email"])
    a_cust, a_t = scattered(1 / 30, arrive, listed_days)
    add(a_cust, a_t, code["ad_impression"], rng.choice([ch["ads"], ch["social"]], len(a_cust)))
    a_click = (a_t < stop[a_cust]) & (rng.random(len(a_cust)) < 0.03)
    add(a_cust[a_click], a_t[a_click] + 10_000_000, code["ad_click"], ch["ads"])
    m_cust, m_t = scattered(1 / 45, arrive, listed_days)
    add(m_cust, m_t, code["marketing_contact"], rng.choice([ch["email"], ch["ads"], ch["other"]], len(m_cust)))
    for kind, per_day, channel in (("nps_response", 1 / 400, ch["email"]), ("support_ticket", 1 / 250, ch["support"]),
                                   ("referral", 1 / 900, ch["web"])):  # fmt: skip
        c, t = scattered(per_day, arrive, active_days)
        value = rng.integers(0, 11, len(c)).astype(float) if kind == "nps_response" else None
        add(c, t, code[kind], channel, None, value)
    cancel = (stop < span) & (rng.random(n_customers) < 0.25)
    add(np.flatnonzero(cancel), stop[cancel], code["subscription_cancel"], ch["web"])

    cust = np.concatenate(cols["cust"])
    t = np.concatenate(cols["t"]) + t0
    keep = t < t0 + span
    order = np.argsort(t[keep], kind="stable")
    cust, t = cust[keep][order], t[keep][order]
    kind = np.concatenate(cols["type"])[keep][order]
    channel = np.concatenate(cols["channel"])[keep][order]
    session = np.concatenate(cols["session"])[keep][order]
    value = np.concatenate(cols["value"])[keep][order]
    n = len(cust)

    def as_strings(prefix: str, numbers: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")

    is_contact = kind == code["marketing_contact"]
    actions = pa.array([json.dumps({"action": a}) for a in _ACTIONS])
    properties = pc.if_else(
        pa.array(is_contact), actions.take(pa.array(rng.integers(0, len(_ACTIONS), n))), pa.nulls(n, pa.string())
    )
    session_id = pc.if_else(pa.array(session >= 0), as_strings("s", session), pa.nulls(n, pa.string()))
    return pa.table(
        {
            "event_id": as_strings("e", np.arange(n)),
            "customer_id": as_strings("c", cust),
            "event_time": pa.array(t, pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(types).take(pa.array(kind.astype(np.int64))),
            "channel": pa.array(channels).take(pa.array(channel.astype(np.int64))),
            "session_id": session_id,
            "value": pa.array(value, from_pandas=True),
            "properties": properties,
        },
        schema=EVENT_SCHEMA,
    )


def simulator_events(n_customers: int, days: int, seed: int) -> pa.Table:
    """Events of `features.simulator` (the project's journey simulator), in the contract."""
    from features.simulator import simulate

    events = simulate(n_customers, days, seed).events
    return pa.Table.from_pandas(events, schema=EVENT_SCHEMA, preserve_index=False)


def write_store(table: pa.Table, root: Path) -> str:
    """Write the events as `<root>/event_date=YYYY-MM-DD/part-0.parquet`; returns the glob."""
    micros = table["event_time"].cast(pa.int64()).to_numpy()
    first = micros.min() // DAY_US
    labels = pa.array([d.strftime("%Y-%m-%d") for d in pd.date_range(pd.Timestamp(first * DAY_US, unit="us"),
                                                                      periods=micros.max() // DAY_US - first + 1)])
    day = labels.take(pa.array(micros // DAY_US - first))  # strftime on every row is slow
    ds.write_dataset(
        table.append_column("event_date", day),
        root,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive"),
        basename_template="part-{i}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        max_rows_per_group=1 << 20,
    )
    return str(root / "event_date=*" / "*.parquet")


# --- measured steps (run in child processes) -------------------------------------------------


def _connection(threads: int, memory_limit: str) -> Any:
    import duckdb

    return duckdb.connect(config={"threads": threads, "memory_limit": memory_limit})


def _step_features(glob: str, cutoffs: list[str], threads: int, memory_limit: str) -> dict[str, Any]:
    from features.journeys import compute_features

    con = _connection(threads, memory_limit)
    # warm-up on a one-event frame: loads DuckDB's json extension once per process, not per call
    warm = pd.DataFrame({"customer_id": ["w"], "event_time": [pd.Timestamp(cutoffs[0])], "event_type": ["purchase"]})
    compute_features(warm, cutoffs[0], connection=con)
    start = time.perf_counter()
    frame = compute_features(glob, cutoffs, connection=con)
    return {"seconds": time.perf_counter() - start, "rows": len(frame), "columns": frame.shape[1]}


def _step_floor(glob: str, cutoffs: list[str], threads: int, memory_limit: str) -> dict[str, Any]:
    con = _connection(threads, memory_limit)
    start = time.perf_counter()
    rows = con.sql(f"SELECT customer_id, count(*) AS n FROM read_parquet('{glob}') GROUP BY customer_id").fetchall()
    return {"seconds": time.perf_counter() - start, "rows": len(rows)}


# The pandas reference computes this many features (the first of its subset: counts, amounts and
# rates over windows, the bulk of the catalog); its time is extrapolated to the full count.
PANDAS_FEATURES = 30


def _step_pandas(glob: str, cutoffs: list[str], threads: int, memory_limit: str) -> dict[str, Any]:
    from benchmarks.pandas_reference import reference_features, subset_features

    start = time.perf_counter()
    events = pd.read_parquet(Path(glob).parent.parent, columns=["customer_id", "event_time", "event_type", "value"])
    read = time.perf_counter() - start
    names = subset_features()[:PANDAS_FEATURES]
    frame = reference_features(events, pd.Timestamp(cutoffs[0]), names)
    return {"seconds": time.perf_counter() - start, "read_seconds": read, "rows": len(frame), "features": len(names)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space;
    ru_maxrss would also count the parent's peak, which a spawned child inherits on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(step: str, args: tuple[Any, ...], queue: Any) -> None:
    sys.path.insert(0, str(ROOT))
    result = STEPS[step](*args)
    result["peak_rss_mb"] = _peak_rss_mb()
    queue.put(result)


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "features": _step_features,
    "floor": _step_floor,
    "pandas": _step_pandas,
}


def measure(step: str, *args: Any, repeat: int = 3) -> dict[str, Any]:
    """Median seconds over `repeat` fresh processes, and the largest peak RSS."""
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeat):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(step, args, queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    out = dict(runs[0])
    out["seconds"] = statistics.median(r["seconds"] for r in runs)
    out["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=None, help="default: 365 simulated, 730 synthetic (~11M events)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", choices=("synthetic", "simulator"), default="simulator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="3GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pandas-repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_features_"))
    try:
        start = time.perf_counter()
        make = synthetic_events if args.source == "synthetic" else simulator_events
        days = args.days or (730 if args.source == "synthetic" else 365)
        table = make(args.customers, days, args.seed)
        glob = write_store(table, workdir / "events")
        n_events = table.num_rows
        n_customers = pc.count_distinct(table["customer_id"]).as_py()
        end = pd.Timestamp(table["event_time"].to_numpy().max()).tz_localize("UTC").ceil("D")
        del table
        print(f"store: {n_events:,} events, {n_customers:,} customers, {args.source}, written in "
              f"{time.perf_counter() - start:.1f}s to {workdir}", file=sys.stderr)  # fmt: skip

        one = [end.isoformat()]
        grid = [(end - pd.DateOffset(months=m)).isoformat() for m in range(12)]
        common = (args.threads, args.memory_limit)
        single = measure("features", glob, one, *common, repeat=args.repeat)
        training = measure("features", glob, grid, *common, repeat=args.repeat)
        floor = measure("floor", glob, one, *common, repeat=args.repeat)
        ref = measure("pandas", glob, one, *common, repeat=args.pandas_repeat)
        n_features = single["columns"] - 2
        ref_extrapolated = ref["read_seconds"] + (ref["seconds"] - ref["read_seconds"]) * n_features / ref["features"]
        summary = {
            "load_average_1m": os.getloadavg()[0],  # other work on the machine inflates every timing
            "events": n_events,
            "customers": n_customers,
            "source": args.source,
            "threads": args.threads,
            "memory_limit": args.memory_limit,
            "features": n_features,
            "one_cutoff": {**single, "events_per_s": n_events / single["seconds"]},
            "grid_12_cutoffs": {**training, "events_per_s": n_events / training["seconds"],
                                "customer_cutoff_rows_per_s": training["rows"] / training["seconds"]},
            "floor_duckdb_groupby_count": floor,
            "pandas_reference": {**ref, "extrapolated_seconds_all_features": ref_extrapolated},
            "ratios": {
                "one_cutoff_vs_floor": single["seconds"] / floor["seconds"],
                "pandas_subset_vs_one_cutoff": ref["seconds"] / single["seconds"],
                "pandas_extrapolated_vs_one_cutoff": ref_extrapolated / single["seconds"],
                "grid_vs_one_cutoff": training["seconds"] / single["seconds"],
            },
        }  # fmt: skip
        if args.json:
            print(json.dumps(summary, default=float, indent=2))
        else:
            _print(summary)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _print(s: dict[str, Any]) -> None:
    one, grid, floor, ref, r = (s["one_cutoff"], s["grid_12_cutoffs"], s["floor_duckdb_groupby_count"],
                                s["pandas_reference"], s["ratios"])  # fmt: skip
    print(f"{s['events']:,} events, {s['customers']:,} customers ({s['source']}), {s['features']} features, "
          f"DuckDB threads={s['threads']} memory_limit={s['memory_limit']}; medians of fresh processes; "
          f"load average {s['load_average_1m']:.1f} at the end")
    print(f"one cutoff        {one['seconds']:7.2f}s  {one['events_per_s'] / 1e6:6.2f}M events/s  "
          f"rows={one['rows']:,}  peak RSS {one['peak_rss_mb']:,.0f} MB  runs={one['all_seconds']}")
    print(f"12-cutoff grid    {grid['seconds']:7.2f}s  {grid['events_per_s'] / 1e6:6.2f}M events/s  "
          f"rows={grid['rows']:,}  peak RSS {grid['peak_rss_mb']:,.0f} MB  runs={grid['all_seconds']}")
    print(f"floor (GROUP BY)  {floor['seconds']:7.2f}s  peak RSS {floor['peak_rss_mb']:,.0f} MB  "
          f"runs={floor['all_seconds']}")
    print(f"pandas reference  {ref['seconds']:7.2f}s for {ref['features']} of {s['features']} features "
          f"(read {ref['read_seconds']:.2f}s); extrapolated to all features: "
          f"{ref['extrapolated_seconds_all_features']:.1f}s  peak RSS {ref['peak_rss_mb']:,.0f} MB")
    print(f"ratios: one cutoff / floor = {r['one_cutoff_vs_floor']:.1f}x; pandas subset / one cutoff = "
          f"{r['pandas_subset_vs_one_cutoff']:.1f}x; pandas extrapolated / one cutoff = "
          f"{r['pandas_extrapolated_vs_one_cutoff']:.1f}x; "
          f"grid / one cutoff = {r['grid_vs_one_cutoff']:.1f}x")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
