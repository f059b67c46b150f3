"""`journey simulate`: write a simulated world (events, customers, latent truth) to a folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from core.output import emit, fail, progress

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]


def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (created if needed).")],
    customers: Annotated[int, typer.Option("--customers", help="Number of customers.")] = 10_000,
    days: Annotated[int, typer.Option("--days", help="Days simulated from --start.")] = 365,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed writes the same files.")] = 0,
    start: Annotated[str, typer.Option("--start", help="First day (00:00 UTC).")] = "2024-01-01",
    faults: Annotated[
        float, typer.Option("--faults", help="Share of faulty rows for ingestion tests (0 = clean contract file).")
    ] = 0.0,
    marketing: Annotated[
        float, typer.Option("--marketing", help="Scale of the contact policy (0 = no contacts).")
    ] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Simulate customer journeys: events.parquet in the event contract plus the ground truth behind them."""
    from features.simulator.simulation import make_config, simulate_config, write_simulation

    began = time.perf_counter()
    try:
        cfg = make_config(customers, days, seed, start, faults, marketing)
    except ValueError as exc:
        fail(str(exc), json_out)
    if out.exists() and not out.is_dir():
        fail(f"--out exists and is not a folder: {out}", json_out)
    progress(f"simulating {customers} customers over {days} days (seed {seed})")
    sim = simulate_config(cfg)
    progress(f"writing {len(sim.events)} events to {out}")
    try:
        paths = write_simulation(sim, out)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc}", json_out)
    counts = sim.meta["counts"]
    summary = {
        "ok": True,
        "out": str(out),
        "customers": counts["customers"],
        "events": counts["events"],
        "prospects": counts["prospects"],
        "buyers": counts["buyers"],
        "purchases": counts["purchases"],
        "contacts": counts["contacts"],
        "fault_rows": counts["fault_rows"],
        "start": sim.start.isoformat(),
        "end": sim.end.isoformat(),
        "seed": seed,
        "files": paths,
        "seconds": round(time.perf_counter() - began, 3),
    }
    emit(summary, json_out)


def register(app: typer.Typer) -> None:
    """Add `simulate` to the root `journey` app."""
    app.command("simulate")(simulate_command)
