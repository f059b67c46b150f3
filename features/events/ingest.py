"""Ingestion: raw files -> validated, deduplicated contract events in the store, rejects in quarantine.

Every row read ends in exactly one bucket: accepted, duplicate or quarantined
(read = accepted + duplicates + quarantined). Files are streamed in chunks; a run
is published to the store atomically at the end (see EventStore).
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import CUSTOMER_OPTIONAL_FIELDS, CUSTOMER_SCHEMA, EVENT_SCHEMA
from features.events.mapping import Mapping
from features.events.readers import Chunk, ReadError, read_chunks
from features.events.store import EventStore, event_keys
from features.events.transactions import fold_transactions
from features.events.validate import _as_text, parse_times, validate

QUARANTINE_SCHEMA = pa.schema(
    [("source", pa.string()), ("row", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]
)
IN_MEMORY_ROWS = 200_000  # above this many accepted rows a run is compacted on disk


@dataclass
class IngestResult:
    run_id: str
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    events_written: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    files: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    quarantine_path: str | None = None
    customers: list[str] = field(default_factory=list)  # affected customer ids (for online refresh)
    first_event: str | None = None
    last_event: str | None = None

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.duplicates + self.quarantined

    def summary(self) -> dict[str, Any]:
        return {
            "ok": True,
            "run_id": self.run_id,
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "events_written": self.events_written,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "quarantine_path": self.quarantine_path,
            "files": self.files,
            "unreadable": self.unreadable,
            "first_event": self.first_event,
            "last_event": self.last_event,
            "balanced": self.balanced,
        }


class _Quarantine:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def add(self, source: str, rows: Iterable[int], reasons: Iterable[str], raws: Iterable[str]) -> None:
        table = pa.table({"row": pa.array(list(rows), pa.int64()), "reason": list(reasons), "raw": list(raws)})
        if table.num_rows == 0:
            return
        table = table.add_column(0, "source", pa.array([source] * table.num_rows, pa.string()))
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, QUARANTINE_SCHEMA)
        self.writer.write_table(table.cast(QUARANTINE_SCHEMA))

    def close(self) -> str | None:
        if self.writer is None:
            return None
        self.writer.close()
        return str(self.path)


def _raw_rows(frame: pd.DataFrame, rows: pd.Series) -> list[str]:
    if rows.empty:
        return []
    src = frame.set_index("_row").loc[rows.to_numpy()]
    cols = [c for c in src.columns if not str(c).startswith("_")]
    return src[cols].astype(str).to_json(orient="records", lines=True).splitlines() if cols else [""] * len(src)


class _Run:
    """One ingestion run: accumulates accepted events, dedups, stages, commits."""

    def __init__(self, store: EventStore, quarantine_dir: Path, now: pd.Timestamp, run_id: str) -> None:
        self.store = store
        self.now = now
        self.result = IngestResult(run_id=run_id)
        self.quarantine = _Quarantine(quarantine_dir / run_id / "rows.parquet")
        self.seen = np.empty(0, dtype=np.uint64)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.chunk_files: list[Path] = []
        self.customers: set[str] = set()
        self.tmin: pd.Timestamp | None = None
        self.tmax: pd.Timestamp | None = None

    def reject(self, source: str, frame: pd.DataFrame, rejects: pd.DataFrame) -> None:
        if rejects.empty:
            return
        self.quarantine.add(source, rejects["_row"], rejects["reason"], _raw_rows(frame, rejects["_row"]))
        self.result.quarantined += len(rejects)
        self.result.reasons.update(rejects["reason"].tolist())

    def reader_rejects(self, source: str, chunk: Chunk) -> None:
        if chunk.rejects:
            self.quarantine.add(
                source,
                [r.row for r in chunk.rejects],
                [r.reason for r in chunk.rejects],
                [r.raw for r in chunk.rejects],
            )
            self.result.quarantined += len(chunk.rejects)
            self.result.reasons.update(r.reason for r in chunk.rejects)

    def accept(self, events: pd.DataFrame, weights: np.ndarray) -> int:
        """Dedup accepted events (against the run and the store) and buffer them.

        `weights` is the number of source rows behind each event (1, or the order's lines).
        Returns the number of source rows counted as duplicates.
        """
        if events.empty:
            return 0
        keys = event_keys(events["event_id"].to_numpy())
        first = np.zeros(len(keys), dtype=bool)
        _, idx = np.unique(keys, return_index=True)
        first[idx] = True
        in_run = np.isin(keys, self.seen) if self.seen.size else np.zeros(len(keys), dtype=bool)
        in_store = self.store.contains(keys)
        keep = first & ~in_run & ~in_store
        dup_rows = int(weights[~keep].sum())
        self.result.duplicates += dup_rows
        self.result.accepted += int(weights[keep].sum())
        kept = events.loc[keep, list(EVENT_SCHEMA.names)]
        if not kept.empty:
            self.seen = np.concatenate([self.seen, keys[keep]])
            self.customers.update(kept["customer_id"].unique().tolist())
            lo, hi = kept["event_time"].min(), kept["event_time"].max()
            self.tmin = lo if self.tmin is None else min(self.tmin, lo)
            self.tmax = hi if self.tmax is None else max(self.tmax, hi)
            table = pa.Table.from_pandas(kept, schema=EVENT_SCHEMA, preserve_index=False)
            self.pending.append(table)
            self.pending_rows += table.num_rows
            if self.pending_rows >= IN_MEMORY_ROWS:
                self._spill()
        return dup_rows

    def _spill(self) -> None:
        staging = self.store.root / "_staging" / self.result.run_id
        staging.mkdir(parents=True, exist_ok=True)
        path = staging / f"chunk-{len(self.chunk_files):05d}.parquet"
        pq.write_table(pa.concat_tables(self.pending), path)
        self.chunk_files.append(path)
        self.pending, self.pending_rows = [], 0

    def commit(self) -> None:
        if not self.pending and not self.chunk_files:
            return
        batch = self.result.run_id
        if self.chunk_files:
            if self.pending:
                self._spill()
            parts = self.store.stage_compacted(self.chunk_files, batch)
        else:
            parts = self.store.stage(pa.concat_tables(self.pending), batch, 0)
        self.store.commit(parts, self.seen, batch)
        shutil.rmtree(self.store.root / "_staging" / batch, ignore_errors=True)
        self.result.events_written = int(self.seen.size)


def ingest_files(
    paths: list[Path],
    store: EventStore,
    quarantine_dir: Path,
    *,
    mapping: Mapping | None = None,
    now: pd.Timestamp | None = None,
    chunk_rows: int = 500_000,
) -> IngestResult:
    """Ingest files into the store. Unreadable files are listed, never raised.

    Also indexes the store's batches committed before it had a customer index (a no-op once
    done), so that `journey ingest` upgrades an older store; the API's appends never pay for it.
    """
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    run = _Run(store, quarantine_dir, now, uuid.uuid4().hex[:16])
    with store.writer_lock():
        store.build_index()
        for path in paths:
            before = (run.result.read, run.result.accepted, run.result.duplicates, run.result.quarantined)
            try:
                _ingest_one(Path(path), run, mapping, chunk_rows)
            except ReadError as exc:
                run.result.unreadable.append(str(exc))
                continue
            after = (run.result.read, run.result.accepted, run.result.duplicates, run.result.quarantined)
            run.result.files.append(
                {
                    "path": str(path),
                    **{
                        k: a - b
                        for k, a, b in zip(
                            ("read", "accepted", "duplicates", "quarantined"), after, before, strict=True
                        )
                    },
                }
            )
        run.commit()
    run.result.quarantine_path = run.quarantine.close()
    run.result.customers = sorted(run.customers)
    run.result.first_event = run.tmin.isoformat() if run.tmin is not None else None
    run.result.last_event = run.tmax.isoformat() if run.tmax is not None else None
    return run.result


def _ingest_one(path: Path, run: _Run, mapping: Mapping | None, chunk_rows: int) -> None:
    source = str(path)
    names = mapping.positional_names() if mapping else None
    chunks = read_chunks(
        path,
        chunk_rows,
        header=mapping.header if mapping else None,
        delimiter=mapping.delimiter if mapping else None,
        names=names,
    )
    transactions: list[pd.DataFrame] = []
    for chunk in chunks:
        frame = chunk.frame
        run.result.read += len(frame) + len(chunk.rejects)
        run.reader_rejects(source, chunk)
        if frame.empty:
            continue
        mapped = mapping.apply(frame) if mapping else frame
        if mapping and mapping.kind == "transactions":
            transactions.append(mapped)
            continue
        accepted, rejects = validate(
            mapped,
            run.now,
            time_format=mapping.time_format if mapping else None,
            timezone=mapping.timezone if mapping else "UTC",
        )
        run.reject(source, frame, rejects)
        run.accept(accepted, np.ones(len(accepted), dtype=np.int64))
    if transactions and mapping is not None:
        _ingest_transactions(pd.concat(transactions, ignore_index=True), source, run, mapping)


def _ingest_transactions(lines: pd.DataFrame, source: str, run: _Run, mapping: Mapping) -> None:
    orders, line_rejects = fold_transactions(
        lines,
        cancel_prefix=mapping.transactions.get("cancel_prefix"),
        time_format=mapping.time_format,
        timezone=mapping.timezone,
        now=run.now,
    )
    run.reject(source, lines, line_rejects)
    if orders.empty:
        return
    rows = orders.pop("_rows")
    orders["_row"] = [r[0] for r in rows]
    accepted, rejects = validate(orders, run.now)
    weights = dict(zip(orders["_row"], (len(r) for r in rows), strict=True))
    if not rejects.empty:  # order-level rejects account for all their lines
        for row, reason in zip(rejects["_row"], rejects["reason"], strict=True):
            run.result.quarantined += weights[row]
            run.result.reasons[reason] += weights[row]
        run.quarantine.add(source, rejects["_row"], rejects["reason"], [reason for reason in rejects["reason"]])
    run.accept(accepted, np.array([weights[r] for r in accepted["_row"]], dtype=np.int64))


def append_events(store: EventStore, events: pd.DataFrame, now: pd.Timestamp) -> tuple[int, int, list[str]]:
    """Durably append already-validated contract events (the API path). Returns (written, duplicates, customers)."""
    run = _Run(store, store.root.parent / "quarantine", now, uuid.uuid4().hex[:16])
    with store.writer_lock():
        run.accept(events.reset_index(drop=True), np.ones(len(events), dtype=np.int64))
        run.commit()
    return run.result.accepted, run.result.duplicates, sorted(run.customers)


_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


def _as_flags(series: pd.Series) -> pd.Series:
    """Booleans from bools, 0/1 or text (true/false, yes/no, 1/0); None (unknown) for anything else."""
    text = series.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip().lower())
    return text.map(lambda v: True if v in _TRUE else False if v in _FALSE else None).astype(object)


def ingest_customers(path: Path, target: Path) -> dict[str, int]:
    """Load an optional customers table (customer_id, first_seen, country, segment, acquisition_channel,
    and optionally email_opt_in: true/false, anything else is unknown). Rows replace those of the same
    customer_id; the email_opt_in column is written once any loaded table had it."""
    frame = pd.read_parquet(path) if str(path).endswith((".parquet", ".pq")) else pd.read_csv(path, dtype=str)
    if "customer_id" not in frame.columns:
        raise ReadError(f"{path}: a customers table needs a customer_id column")
    out = pd.DataFrame({"customer_id": _as_text(frame["customer_id"])})
    out["first_seen"] = parse_times(frame["first_seen"]) if "first_seen" in frame.columns else pd.NaT
    for col in ("country", "segment", "acquisition_channel"):
        out[col] = _as_text(frame[col]) if col in frame.columns else None
    optional = [f for f in CUSTOMER_OPTIONAL_FIELDS if f.name in frame.columns]
    for f in optional:
        out[f.name] = _as_flags(frame[f.name])
    bad = out["customer_id"].isna()
    out = out[~bad].drop_duplicates("customer_id", keep="last")
    if target.exists():
        old = pd.read_parquet(target)
        optional += [f for f in CUSTOMER_OPTIONAL_FIELDS if f.name in old.columns and f not in optional]
        out = pd.concat([old[~old["customer_id"].isin(out["customer_id"])], out], ignore_index=True)
    schema = CUSTOMER_SCHEMA
    for f in CUSTOMER_OPTIONAL_FIELDS:  # in a fixed order, whichever table brought them
        if f in optional:
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None) if f.name in out else None
            schema = schema.append(f)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".tmp")
    table = pa.Table.from_pandas(out, schema=schema, preserve_index=False)
    pq.write_table(table, tmp)
    tmp.replace(target)
    return {"read": len(frame), "accepted": int((~bad).sum()), "rejected": int(bad.sum()), "total": len(out)}


def quarantine_summary(path: str | Path) -> dict[str, int]:
    return pq.read_table(path).to_pandas()["reason"].value_counts().to_dict()
