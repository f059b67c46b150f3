"""`journey ingest` and `journey features ...`: thin wiring of the features package to the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from core.output import emit, fail, progress
from core.settings import get_settings

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


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
