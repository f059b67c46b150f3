"""Read raw files into chunks of rows, reporting rows that cannot even be split into fields.

A chunk is a pandas DataFrame of raw values plus a `_row` column (1-based row number
in the source file). Rows that cannot be read (bad bytes, wrong field count, bad JSON)
are returned as rejects with a reason, so every row read is accounted for.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow.parquet as pq

CONTRACT_ORDER = ("event_id", "customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties")
KNOWN_HEADER_WORDS = {
    "event_id", "customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties",
    "user", "user_id", "customer", "customerid", "timestamp", "time", "date", "event", "event_name",
    "invoiceno", "invoicedate", "quantity", "unitprice", "amount", "order_id",
}  # fmt: skip


class ReadError(Exception):
    """The file cannot be read at all (missing, empty, unknown format)."""


@dataclass
class Reject:
    row: int
    reason: str
    raw: str


@dataclass
class Chunk:
    frame: pd.DataFrame  # raw values, columns by source name, plus `_row`
    rejects: list[Reject] = field(default_factory=list)


def _strip_gz(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return name[:-3], True
    return name, False


def file_format(path: Path) -> str:
    name, _ = _strip_gz(path)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def _open_binary(path: Path) -> IO[bytes]:  # gzip.GzipFile is a binary IO
    _, gz = _strip_gz(path)
    if gz:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_chunks(
    path: Path,
    chunk_rows: int,
    *,
    header: bool | None = None,
    delimiter: str | None = None,
    names: list[str] | None = None,
) -> Iterator[Chunk]:
    """Yield chunks of raw rows from one file. Raises ReadError when nothing can be read."""
    if not path.exists():
        raise ReadError(f"{path}: no such file")
    if path.is_dir():
        raise ReadError(f"{path}: is a directory")
    if path.stat().st_size == 0:
        raise ReadError(f"{path}: empty file")
    fmt = file_format(path)
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
    elif fmt == "jsonl":
        yield from _jsonl_chunks(path, chunk_rows)
    else:
        yield from _csv_chunks(path, chunk_rows, header=header, delimiter=delimiter, names=names)


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        src: Any = _open_binary(path) if _strip_gz(path)[1] else path
        if not isinstance(src, Path):
            src = io.BytesIO(src.read())
        pf = pq.ParquetFile(src)
    except Exception as exc:  # corrupt or not Parquet at all
        raise ReadError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from exc
    start = 1
    for batch in pf.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas(timestamp_as_object=False)
        frame["_row"] = range(start, start + len(frame))
        start += len(frame)
        yield Chunk(frame)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with _open_binary(path) as fh:
        try:
            yield from enumerate(fh, start=1)
        except (OSError, EOFError) as exc:
            raise ReadError(f"{path}: truncated or corrupt compressed file ({exc})") from exc


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    rejects: list[Reject] = []
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append(Reject(number, "non_utf8", raw.decode("utf-8", "replace").strip()))
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            rejects.append(Reject(number, "bad_json", text.strip()[:2000]))
            continue
        if not isinstance(obj, dict):
            rejects.append(Reject(number, "bad_json", text.strip()[:2000]))
            continue
        records.append(obj)
        rows.append(number)
        if len(records) >= chunk_rows:
            yield _records_chunk(records, rows, rejects)
            records, rows, rejects = [], [], []
    if records or rejects:
        yield _records_chunk(records, rows, rejects)


def _records_chunk(records: list[dict[str, Any]], rows: list[int], rejects: list[Reject]) -> Chunk:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    if "properties" in frame.columns:
        frame["properties"] = [json.dumps(p) if isinstance(p, dict | list) else p for p in frame["properties"]]
    frame["_row"] = rows
    return Chunk(frame, rejects)


_WS = re.compile(r"\s+")


def sniff_delimiter(lines: list[str]) -> str:
    """Pick the delimiter that splits the sample into the most consistent number (>1) of fields.

    Returns one of ',', ';', '\\t', '|' or ' ' (meaning: runs of whitespace).
    """
    best, best_score = ",", -1.0
    sample = [ln for ln in lines if ln.strip()][:50]
    for cand in (",", ";", "\t", "|", " "):
        counts = [len(_split(ln, cand)) for ln in sample]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = counts.count(mode) / len(counts) + (0.01 * mode)
        if cand == " ":
            score -= 0.05  # prefer an explicit delimiter when it splits as well
        if score > best_score:
            best, best_score = cand, score
    return best


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":
        return _WS.split(line.strip())
    return next(csv.reader([line], delimiter=delimiter))


def looks_like_header(fields: list[str]) -> bool:
    lowered = {f.strip().strip('"').lower() for f in fields}
    if lowered & KNOWN_HEADER_WORDS:
        return True
    # A header has no numbers or timestamps in it.
    return (
        all(f and not re.match(r"^[\d\-+.:/ T]+$", f.strip()) for f in fields)
        and len(fields) > 1
        and all(re.match(r"^[A-Za-z_][\w .-]*$", f.strip().strip('"')) for f in fields)
    )


def _csv_chunks(
    path: Path, chunk_rows: int, *, header: bool | None, delimiter: str | None, names: list[str] | None
) -> Iterator[Chunk]:
    decoded: list[tuple[int, str]] = []
    head_rejects: list[Reject] = []
    it = _lines(path)
    for number, raw in it:
        try:
            decoded.append((number, raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")))
        except UnicodeDecodeError:
            head_rejects.append(Reject(number, "non_utf8", raw.decode("utf-8", "replace").strip()))
        if len(decoded) >= 50:
            break
    texts = [t for _, t in decoded if t.strip()]
    if not texts:
        if head_rejects:
            yield Chunk(pd.DataFrame({"_row": []}), head_rejects)
            return
        raise ReadError(f"{path}: no rows (empty or blank file)")
    delim = delimiter or sniff_delimiter(texts)
    first = _split(texts[0], delim)
    has_header = looks_like_header(first) if header is None else header
    if has_header:
        columns = [c.strip().strip('"') for c in first]
    elif names:
        columns = list(names)[: len(first)] + [f"col{i}" for i in range(len(names), len(first))]
    else:
        columns = [f"col{i}" for i in range(len(first))]
        if not names and len(first) <= len(CONTRACT_ORDER):
            # No header and no mapping: assume the contract's order, with or without event_id.
            order = CONTRACT_ORDER if len(first) == len(CONTRACT_ORDER) else CONTRACT_ORDER[1:]
            columns = list(order[: len(first)])
    width = len(columns)

    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[Reject] = list(head_rejects)
    header_skipped = not has_header

    def handle(number: int, text: str) -> None:
        nonlocal header_skipped
        if not text.strip():
            return
        if not header_skipped:
            header_skipped = True
            return
        try:
            fields = _split(text, delim)
        except csv.Error:
            rejects.append(Reject(number, "ragged_row", text[:2000]))
            return
        if len(fields) != width:
            rejects.append(Reject(number, "ragged_row", text[:2000]))
            return
        rows.append(fields)
        numbers.append(number)

    for number, text in decoded:
        handle(number, text)
    for number, raw in it:
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            rejects.append(Reject(number, "non_utf8", raw.decode("utf-8", "replace").strip()))
            continue
        handle(number, text)
        if len(rows) >= chunk_rows:
            yield _rows_chunk(rows, numbers, columns, rejects)
            rows, numbers, rejects = [], [], []
    if rows or rejects:
        yield _rows_chunk(rows, numbers, columns, rejects)


def _rows_chunk(rows: list[list[str]], numbers: list[int], columns: list[str], rejects: list[Reject]) -> Chunk:
    frame = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns)
    frame = frame.replace({"": None})
    frame["_row"] = numbers
    return Chunk(frame, rejects)
