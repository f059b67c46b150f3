"""The event store: append-only Parquet partitioned by event date, with atomic batches.

Layout under `root`::

    event_date=YYYY-MM-DD/part-<batch>-<n>.parquet   events in the contract's schema
    _keys/<batch>.npy                                 uint64 dedup keys of the batch's event ids
    _txn/<batch>.json                                 write-ahead intent of a batch being committed

A batch is staged as hidden temp files, then an intent listing them is written and
fsynced, then the files are renamed into place. A crash before the intent leaves only
temp files (removed at the next open: the store is as before); a crash after it is
rolled forward by `recover()` (the store is as after). Writers hold an exclusive flock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import EVENT_SCHEMA

TMP_SUFFIX = ".tmp"


FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def event_keys(event_ids: pa.Array | pa.ChunkedArray | list[str] | np.ndarray) -> np.ndarray:
    """Stable 64-bit keys of event ids (FNV-1a over the UTF-8 bytes), for deduplication.

    Vectorised over the Arrow string buffer: one numpy pass per byte position, so the cost
    is rows x (longest id), with no Python loop over rows. The keys are persisted in the
    store, so this function must never change.
    """
    arr = event_ids if isinstance(event_ids, pa.Array | pa.ChunkedArray) else pa.array(list(event_ids), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.empty(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    keys = np.full(n, FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):
            live = np.flatnonzero(lengths > j)
            byte = data[starts[live] + j].astype(np.uint64)
            keys[live] = (keys[live] ^ byte) * FNV_PRIME
    return keys


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (the directory entry itself is fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class EventStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._keys_cache: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def glob(self) -> str:
        """A glob over every committed event file (for DuckDB / Spark)."""
        return str(self.root / "event_date=*" / "*.parquet")

    def files(self) -> list[Path]:
        return sorted(self.root.glob("event_date=*/*.parquet"))

    def is_empty(self) -> bool:
        return not self.files()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self.recover()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def recover(self) -> int:
        """Finish committed batches and drop uncommitted temp files. Returns batches rolled forward."""
        txn_dir = self.root / "_txn"
        rolled = 0
        if txn_dir.exists():
            for intent in sorted(txn_dir.glob("*.json")):
                try:
                    moves = json.loads(intent.read_text())["moves"]
                except (ValueError, KeyError):
                    intent.unlink()  # torn intent: it was never fsynced, the batch never committed
                    continue
                for tmp_name, final_name in moves:
                    if (self.root / tmp_name).exists():
                        os.replace(self.root / tmp_name, self.root / final_name)
                intent.unlink()
                rolled += 1
        for tmp in list(self.root.glob("event_date=*/.*" + TMP_SUFFIX)) + list(self.root.glob("_keys/.*" + TMP_SUFFIX)):
            tmp.unlink(missing_ok=True)
        staging = self.root / "_staging"
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        self._keys_cache = None
        return rolled

    def keys(self) -> np.ndarray:
        """Sorted dedup keys of every committed event."""
        files = tuple(sorted(str(p) for p in (self.root / "_keys").glob("*.npy")))
        if self._keys_cache is not None and self._keys_cache[0] == files:
            return self._keys_cache[1]
        arrays = [np.load(f) for f in files]
        keys = np.sort(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.uint64)
        self._keys_cache = (files, keys)
        return keys

    def contains(self, keys: np.ndarray) -> np.ndarray:
        existing = self.keys()
        if existing.size == 0 or keys.size == 0:
            return np.zeros(keys.size, dtype=bool)
        pos = np.searchsorted(existing, keys).clip(max=existing.size - 1)
        return existing[pos] == keys

    def commit(self, parts: dict[str, list[Path]], keys: np.ndarray, batch: str) -> list[Path]:
        """Atomically publish staged files. `parts` maps event_date -> staged temp files.

        Must be called under writer_lock(). Staged files must live in their partition
        folder with a leading '.' and the TMP_SUFFIX.
        """
        keys_dir = self.root / "_keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        key_tmp = keys_dir / f".{batch}.npy{TMP_SUFFIX}"
        with open(key_tmp, "wb") as fh:
            np.save(fh, np.sort(keys.astype(np.uint64)))
            fh.flush()
            os.fsync(fh.fileno())
        moves: list[tuple[str, str]] = []
        for staged in (p for files in parts.values() for p in files):
            final = staged.with_name(staged.name[1:].removesuffix(TMP_SUFFIX))
            moves.append((str(staged.relative_to(self.root)), str(final.relative_to(self.root))))
        moves.append((str(key_tmp.relative_to(self.root)), f"_keys/{batch}.npy"))
        txn_dir = self.root / "_txn"
        txn_dir.mkdir(exist_ok=True)
        intent_tmp = txn_dir / f".{batch}.json{TMP_SUFFIX}"
        _write_durable(intent_tmp, json.dumps({"moves": moves}).encode())
        os.replace(intent_tmp, txn_dir / f"{batch}.json")
        fsync_dir(txn_dir)
        for tmp_name, final_name in moves:
            os.replace(self.root / tmp_name, self.root / final_name)
        (txn_dir / f"{batch}.json").unlink()
        self._keys_cache = None
        return [self.root / final for _, final in moves[:-1]]

    def stage(self, table: pa.Table, batch: str, seq: int) -> dict[str, list[Path]]:
        """Write a table of contract events as hidden temp files, one per event date."""
        table = table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        if table.num_rows == 0:
            return {}
        dates = pa.compute.strftime(table["event_time"], format="%Y-%m-%d")
        table = table.append_column("_date", dates).sort_by([("_date", "ascending"), ("event_time", "ascending")])
        out: dict[str, list[Path]] = {}
        date_col = table["_date"].to_numpy(zero_copy_only=False)
        boundaries = np.flatnonzero(date_col[1:] != date_col[:-1]) + 1
        starts = np.concatenate([[0], boundaries])
        ends = np.concatenate([boundaries, [len(date_col)]])
        for start, end in zip(starts, ends, strict=True):
            day = str(date_col[start])
            part = self.root / f"event_date={day}"
            part.mkdir(parents=True, exist_ok=True)
            path = part / f".part-{batch}-{seq:05d}.parquet{TMP_SUFFIX}"
            pq.write_table(table.slice(start, end - start).drop(["_date"]), path, compression="zstd")
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            out.setdefault(day, []).append(path)
        return out

    def stage_compacted(self, chunk_files: list[Path], batch: str, memory_limit: str = "1GB") -> dict[str, list[Path]]:
        """Merge many staged chunk files into one temp file per event date, in bounded memory (DuckDB)."""
        import duckdb

        out_dir = self.root / "_staging" / batch / "by_date"
        con = duckdb.connect()
        try:
            con.execute(f"SET memory_limit='{memory_limit}'")
            con.execute("SET preserve_insertion_order=false")
            con.execute(f"SET temp_directory='{self.root / '_staging' / batch / 'spill'}'")
            files = ", ".join(f"'{f}'" for f in chunk_files)
            con.execute(
                f"COPY (SELECT {', '.join(EVENT_SCHEMA.names)}, "
                "strftime(event_time AT TIME ZONE 'UTC', '%Y-%m-%d') AS event_date "
                f"FROM read_parquet([{files}]) ORDER BY event_time) TO '{out_dir}' "
                "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)"
            )
        finally:
            con.close()
        parts: dict[str, list[Path]] = {}
        for n, written in enumerate(sorted(out_dir.glob("event_date=*/*.parquet"))):
            day = written.parent.name.split("=", 1)[1]
            target = self.root / f"event_date={day}"
            target.mkdir(parents=True, exist_ok=True)
            path = target / f".part-{batch}-{n:05d}.parquet{TMP_SUFFIX}"
            with open(written, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(written, path)
            parts.setdefault(day, []).append(path)
        return parts

    def read(self, columns: list[str] | None = None) -> pa.Table:
        files = self.files()
        if not files:
            return EVENT_SCHEMA.empty_table() if columns is None else EVENT_SCHEMA.empty_table().select(columns)
        return pq.ParquetDataset([str(f) for f in files], schema=EVENT_SCHEMA).read(columns=columns)

    def count(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]
