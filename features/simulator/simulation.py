"""The Simulation object and its files: simulate, write_simulation, load_simulation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import CUSTOMER_SCHEMA, EVENT_SCHEMA
from features.simulator import params as P
from features.simulator.events import arrow_strings, build, customer_ids
from features.simulator.faults import EXTRA_KINDS, FAULTY_SCHEMA
from features.simulator.generate import SimConfig, run

FILES = {
    "events": "events.parquet",
    "customers": "customers.parquet",
    "latent": "latent.parquet",
    "purchases": "purchases.parquet",
    "contacts": "contacts.parquet",
    "faults": "faults.parquet",
    "meta": "meta.json",
}
# Arrow-backed strings: zero-copy from Parquet (object or StringDtype columns would triple the memory at 10M rows).
_STRINGS = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}


@dataclass
class Simulation:
    """A simulated world: observable events and customers, plus the latent truth behind them.

    Days are counted from `start` (00:00 UTC); `end` = start + days is exclusive.
    `latent` has one row per customer (same order as `customers`); day columns use -1 for "never"
    (`death_day` is the last day alive, -1 if alive at the end; `opt_out_day` the day the customer
    opted out of email), and `email_opt_in_time` / `email_opt_out_time` are the instants of the
    customer's email consent events (NaT: none). `purchases` and `contacts` are
    clean logs (no faults) with the true effect of every contact (`beta`: log multiplier of the
    purchase hazards for EFFECT_DAYS days, `rho`: extra probability of churning that day).
    `faults` lists the faulty rows of `events` (row position, event_id, kind).
    String columns are Arrow-backed (`string[pyarrow]`, a pd.ArrowDtype: zero-copy, a third of the
    memory of Python strings); `event_time` is datetime64[us, UTC].
    """

    events: pd.DataFrame
    customers: pd.DataFrame
    latent: pd.DataFrame
    purchases: pd.DataFrame
    contacts: pd.DataFrame
    faults: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def days(self) -> int:
        return int((self.end - self.start) / pd.Timedelta(days=1))

    def clean_events(self) -> pd.DataFrame:
        """The events without the extra rows fault injection added (moved rows stay, in their new places)."""
        extra = self.faults.loc[self.faults["kind"].isin(list(EXTRA_KINDS)), "row"].to_numpy()
        if len(extra) == 0:
            return self.events
        keep = np.ones(len(self.events), dtype=bool)
        keep[extra] = False
        return self.events.loc[keep]


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_STRINGS.get)


def simulate(
    n_customers: int,
    days: int,
    seed: int = 0,
    start: str | pd.Timestamp = "2024-01-01",
    faults: float = 0.0,
    marketing: float = 1.0,
) -> Simulation:
    """Simulate `n_customers` customers over `days` days from `start` (a date; taken at 00:00 UTC).

    `faults` is the share of rows made faulty for ingestion tests (0 = a clean file in the contract);
    `marketing` scales the contact policy (0 = no contacts, so the ground truth needs no caveat).
    The same arguments give identical results; faults use their own random stream, so a faulty
    run holds exactly the clean run's events plus the faulty rows.
    """
    cfg = make_config(n_customers, days, seed, start, faults, marketing)
    return simulate_config(cfg)


def make_config(
    n_customers: int, days: int, seed: int, start: str | pd.Timestamp, faults: float, marketing: float
) -> SimConfig:
    """Check the arguments (ValueError with a clear message) and build the configuration."""
    if int(n_customers) != n_customers or n_customers < 1:
        raise ValueError(f"the number of customers must be a positive integer, got {n_customers!r}")
    if int(days) != days or days < 1:
        raise ValueError(f"the number of days must be a positive integer, got {days!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= faults < 1.0:
        raise ValueError(f"faults must be a rate in [0, 1), got {faults!r}")
    if not 0.0 <= marketing <= 3.0:
        raise ValueError(f"marketing must be in [0, 3], got {marketing!r}")
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"start is not a date: {start!r}") from exc
    if pd.isna(ts):
        raise ValueError(f"start is not a date: {start!r}")
    ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).normalize().as_unit("us")
    return SimConfig(int(n_customers), int(days), int(seed), ts, float(faults), float(marketing))


def simulate_config(cfg: SimConfig) -> Simulation:
    traj = run(cfg)
    built = build(cfg, traj)
    latent = _latent_frame(traj.latent, traj.affinity, cfg.n_customers)
    start_us = cfg.start.value // 1000
    for name, micros in built.consent.items():  # instants, so the truth knows consent at any cutoff
        times = pd.DatetimeIndex(pd.to_datetime(micros + start_us, unit="us", utc=True)).as_unit("us")
        latent[f"{name}_time"] = times.where(micros >= 0)
    end = cfg.start + pd.Timedelta(days=cfg.days)
    sim = Simulation(
        events=_to_pandas(built.events),
        customers=_to_pandas(built.customers),
        latent=latent,
        purchases=built.purchases,
        contacts=built.contacts,
        faults=built.faults,
        start=cfg.start,
        end=end,
    )
    sim.meta = _meta(cfg, sim)
    return sim


def _latent_frame(lat: dict[str, np.ndarray], affinity: np.ndarray, n: int) -> pd.DataFrame:
    frame = pd.DataFrame({"customer_id": arrow_strings(customer_ids(n))})
    for name in (
        "arrival_day",
        "consider_day",
        "first_purchase_day",
        "death_day",
        "opt_out_day",
        "tau",
        "nu",
        "kappa",
        "lam",
        "mu",
        "amount_mean",
        "satisfaction",
        "browse_aware",
        "browse_considering",
        "browse_customer",
        "email_engagement",
        "store_share",
        "app_user",
        "subscribed",
        "g",
        "rho",
    ):
        frame[name] = lat[name]
    for name in ("arrival_day", "consider_day", "first_purchase_day", "death_day", "opt_out_day"):
        frame[name] = frame[name].astype(np.int32)
    frame["effect_type"] = arrow_strings(pa.array(np.array(P.EFFECT_TYPES)[lat["effect_type"]]))
    for j, action in enumerate(P.ACTION_IDS):
        frame[f"affinity_{action}"] = affinity[:, j]
    return frame


def _meta(cfg: SimConfig, sim: Simulation) -> dict[str, Any]:
    buyers = int(sim.purchases["customer_id"].nunique())
    return {
        "simulator": "journeyml",
        "model_version": P.MODEL_VERSION,
        "seed": cfg.seed,
        "n_customers": cfg.n_customers,
        "days": cfg.days,
        "start": cfg.start.isoformat(),
        "end": sim.end.isoformat(),
        "faults": cfg.faults,
        "marketing": cfg.marketing,
        "action_ids": list(P.ACTION_IDS),
        "effect_days": P.EFFECT_DAYS,
        "contact_cap_days": P.CONTACT_CAP_DAYS,
        "counts": {
            "customers": cfg.n_customers,
            "events": len(sim.events),
            "buyers": buyers,
            "prospects": cfg.n_customers - buyers,
            "purchases": len(sim.purchases),
            "contacts": len(sim.contacts),
            "email_opt_ins": int(sim.latent["email_opt_in_time"].notna().sum()),
            "email_opt_outs": int(sim.latent["email_opt_out_time"].notna().sum()),
            "fault_rows": len(sim.faults),
        },
        "truth": (
            "ground_truth() is exact (closed form) given the latent state at the cutoff, "
            "assuming no contacts after the cutoff; order amounts are rounded to cents."
        ),
    }


def _events_table(frame: pd.DataFrame, faulty: bool) -> pa.Table:
    schema = FAULTY_SCHEMA if faulty else EVENT_SCHEMA
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)


def write_simulation(sim: Simulation, out_dir: str | Path) -> dict[str, str]:
    """Write the simulation to `out_dir` (created if needed). Returns {name: path} of the files written.

    events.parquet follows EVENT_SCHEMA exactly (every field nullable when faults were injected);
    timestamps are stored as timestamp[us, UTC]. The same simulation always writes the same bytes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: str(out / fname) for name, fname in FILES.items()}
    faulty = len(sim.faults) > 0 or bool(sim.meta.get("faults", 0.0))
    pq.write_table(_events_table(sim.events, faulty), paths["events"], row_group_size=1_000_000)
    customers = pa.Table.from_pandas(sim.customers, schema=CUSTOMER_SCHEMA, preserve_index=False)
    pq.write_table(customers.replace_schema_metadata(None), paths["customers"])
    for name in ("latent", "purchases", "contacts", "faults"):
        frame: pd.DataFrame = getattr(sim, name)
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        table = table.cast(_us_schema(table.schema))
        pq.write_table(table, paths[name])
    Path(paths["meta"]).write_text(json.dumps(sim.meta, indent=2, sort_keys=True) + "\n")
    return paths


def _us_schema(schema: pa.Schema) -> pa.Schema:
    """Timestamps as microseconds UTC and strings as plain string (what duckdb and Feast read)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            f = f.with_type(pa.timestamp("us", tz="UTC"))
        elif pa.types.is_large_string(f.type):
            f = f.with_type(pa.string())
        fields.append(f)
    return pa.schema(fields)


def load_simulation(directory: str | Path) -> Simulation:
    """Read a simulation written by write_simulation. Raises FileNotFoundError when a file is missing."""
    path = Path(directory)
    missing = [fname for fname in FILES.values() if not (path / fname).exists()]
    if missing:
        raise FileNotFoundError(f"not a simulation folder ({', '.join(missing)} missing): {path}")
    meta = json.loads((path / FILES["meta"]).read_text())
    frames = {name: _to_pandas(pq.read_table(path / fname)) for name, fname in FILES.items() if name != "meta"}
    return Simulation(
        events=frames["events"],
        customers=frames["customers"],
        latent=frames["latent"],
        purchases=frames["purchases"],
        contacts=frames["contacts"],
        faults=frames["faults"],
        start=pd.Timestamp(meta["start"]).tz_convert("UTC").as_unit("us"),
        end=pd.Timestamp(meta["end"]).tz_convert("UTC").as_unit("us"),
        meta=meta,
    )
