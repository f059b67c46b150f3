"""`journey ingest` and `journey features ...`: thin wiring of the features package to the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import typer

from core.output import emit, fail, progress
from core.settings import Settings, get_settings

features_app = typer.Typer(help="Build, materialize and read customer journey features.", no_args_is_help=True)


def ingest_command(
    paths: list[Path] = typer.Argument(..., help="Files to ingest: CSV/TSV/whitespace, Parquet, JSON Lines, gzip."),
    mapping: Path | None = typer.Option(None, "--mapping", help="YAML mapping for foreign data (docs/mappings.md)."),
    customers: Path | None = typer.Option(None, "--customers", help="Optional customers table (Parquet or CSV)."),
    online: bool = typer.Option(False, "--online", help="Also refresh the affected customers' online features."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Validate, deduplicate and store events; quarantine bad rows with a reason."""
    from features.events.ingest import ingest_customers, ingest_files
    from features.events.mapping import Mapping, MappingError
    from features.events.readers import ReadError
    from features.events.store import EventStore

    settings = get_settings()
    try:
        loaded = Mapping.load(mapping) if mapping else None
    except MappingError as exc:
        fail(str(exc), json_out)
    store = EventStore(settings.events_dir)
    try:
        result = ingest_files(
            list(paths), store, settings.quarantine_dir, mapping=loaded, chunk_rows=settings.ingest_chunk_rows
        )
    except (MappingError, ValueError) as exc:
        fail(str(exc), json_out)
    summary = result.summary()
    if customers is not None:
        try:
            summary["customers"] = ingest_customers(customers, settings.customers_path)
        except (ReadError, ValueError, OSError) as exc:
            fail(f"customers table: {exc}", json_out)
    if result.read == 0:
        fail("nothing could be read: " + "; ".join(result.unreadable or ["no rows"]), json_out, **summary)
    if online and result.customers:
        from features.realtime import refresh_online

        progress(f"refreshing online features for {len(result.customers)} customers")
        summary["online_refreshed"] = refresh_online(result.customers)
    human = (
        f"read {result.read:,}: accepted {result.accepted:,}, duplicates {result.duplicates:,}, "
        f"quarantined {result.quarantined:,} {dict(result.reasons) if result.reasons else ''}"
    )
    if result.quarantine_path:
        human += f"\nquarantine: {result.quarantine_path}"
    for bad in result.unreadable:
        human += f"\n[yellow]skipped[/yellow] {bad}"
    emit(summary, json_out, human)


@features_app.command("build")
def build_command(
    as_of: list[str] = typer.Option(..., "--as-of", help="Cutoff (UTC); repeat for a grid. Later events are unseen."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (default) or spark."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Compute every journey feature as of each cutoff and write the offline feature tables."""
    import time

    from core.time import to_utc
    from features.events.store import EventStore
    from features.online import write_feature_table

    if engine not in ("duckdb", "spark"):
        fail(f"--engine must be duckdb or spark, not {engine!r}", json_out)
    try:
        cutoffs = sorted({to_utc(t) for t in as_of})
    except ValueError as exc:
        fail(str(exc), json_out)
    settings = get_settings()
    store = EventStore(settings.events_dir)
    if store.is_empty():
        fail(f"the event store is empty ({settings.events_dir}): run `journey ingest` first", json_out)
    started = time.perf_counter()
    frame = _compute(store.glob, cutoffs, engine, settings)
    paths = write_feature_table(frame, settings)
    counts = frame.groupby("cutoff").size()
    summary = {
        "ok": True,
        "engine": engine,
        "cutoffs": [c.isoformat() for c in cutoffs],
        "customers": {pd_ts.isoformat(): int(n) for pd_ts, n in counts.items()},
        "features": len(frame.columns) - 2,
        "tables": [str(p) for p in paths],
        "seconds": round(time.perf_counter() - started, 3),
    }
    emit(
        summary,
        json_out,
        f"built {len(frame):,} feature rows for {len(cutoffs)} cutoff(s) -> {paths[-1] if paths else '-'}",
    )


def _compute(glob: str, cutoffs: list[Any], engine: str, settings: Settings) -> pd.DataFrame:
    from features.journeys import compute_features

    customers = str(settings.customers_path) if settings.customers_path.exists() else None
    return compute_features(glob, cutoffs, customers=customers, engine="spark" if engine == "spark" else "duckdb")


@features_app.command("materialize")
def materialize_command(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Load the newest feature table into the online store (incremental, chunked)."""
    from features.online import materialize

    try:
        summary = materialize(get_settings())
    except FileNotFoundError as exc:
        fail(str(exc), json_out)
    emit(summary, json_out, f"online store: {summary['rows']:,} customers from {summary['table']}")


@features_app.command("get")
def get_command(
    customer: str = typer.Option(..., "--customer", help="Customer id."),
    as_of: str | None = typer.Option(None, "--as-of", help="Cutoff; omitted: read the online store."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Print one customer's features."""
    import math

    import pandas as pd

    from core.time import to_utc

    settings = get_settings()
    if as_of is None:
        from features.online import open_store, read_online

        frame = read_online(open_store(settings), [customer], pd.Timestamp.now(tz="UTC"))
        if not bool(frame["found"].iloc[0]):
            fail(f"customer {customer!r} is not in the online store", json_out, customer_id=customer)
        row = frame.iloc[0].drop(labels=["found"])
        source = "online"
    else:
        from features.events.store import EventStore

        try:
            cutoff = to_utc(as_of)
        except ValueError as exc:
            fail(str(exc), json_out)
        store = EventStore(settings.events_dir)
        if store.is_empty():
            fail("the event store is empty: run `journey ingest` first", json_out)
        from features.journeys import compute_features

        frame = compute_features(store.glob, [cutoff], customer_ids=[customer])
        if frame.empty:
            fail(
                f"customer {customer!r} has no events at or before {cutoff.isoformat()}", json_out, customer_id=customer
            )
        row = frame.iloc[0]
        source = "offline"
    values = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    emit({"ok": True, "source": source, "features": values}, json_out)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.add_typer(features_app, name="features")
