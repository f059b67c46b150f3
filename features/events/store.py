"""The event store: append-only Parquet partitioned by event date, with atomic batches.

Layout under `root`::

    event_date=YYYY-MM-DD/part-<batch>-<n>.parquet   events in the contract's schema
    _keys/<batch>.npy                                 uint64 dedup keys of the batch's event ids
    _index/<batch>.parquet                            customer key -> the batch's files holding that customer
    _txn/<batch>.json                                 write-ahead intent of a batch being committed

A batch is staged as hidden temp files, then an intent listing them is written and
fsynced, then the files are renamed into place. A crash before the intent leaves only
temp files (removed at the next open: the store is as before); a crash after it is
rolled forward by `recover()` (the store is as after). Writers hold an exclusive flock.

The per-customer index lets a reader of a few customers (the real-time refresh after
`POST /v1/events`) open only the files that hold them instead of scanning the store.
It is renamed last in a batch's commit, so a batch whose index is visible has all its
files in place; files that no index lists (batches committed before the index existed,
or a commit still being renamed) are read as "may hold anyone", so results never depend
on the index being there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.contract import EVENT_SCHEMA

TMP_SUFFIX = ".tmp"
_LOCAL_FS = pafs.LocalFileSystem()
INDEX_DIR = "_index"
INDEX_SCHEMA = pa.schema([("customer_key", pa.uint64()), ("file", pa.uint32())])


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


def customer_keys(customer_ids: pa.Array | pa.ChunkedArray | list[str] | np.ndarray) -> np.ndarray:
    """Stable 64-bit keys of customer ids for the file index: the FNV-1a of `event_keys`.

    Persisted in `_index/`, so this must never change. A collision only makes a reader open
    one more file (rows are still filtered on the real customer_id), never lose events.
    """
    return event_keys(customer_ids)


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


def _write_durable_table(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _batch_of(file_name: str) -> str | None:
    """The batch id in a committed file name (`part-<batch>-<n>.parquet`), None for other names."""
    stem = file_name.removesuffix(".parquet")
    if not stem.startswith("part-") or "-" not in stem[5:]:
        return None
    return stem[5:].rsplit("-", 1)[0]


@dataclass(frozen=True)
class _FileIndex:
    """The loaded `_index/` of a store: every indexed (customer key, file) pair, sorted by key.

    Immutable, so readers on several threads can share it and a refresh swaps in a new one.
    """

    names: tuple[str, ...]  # the index files it was loaded from (the cache key)
    keys: np.ndarray  # uint64 customer keys, sorted
    file_ids: np.ndarray  # for each key, a position in `files`
    files: tuple[str, ...]  # store-relative paths of every indexed file
    covered: frozenset[str]  # the same, as a set


@dataclass(frozen=True)
class _Folder:
    """The cached listing of one partition folder (see `EventStore._relative_files`)."""

    stamp: tuple[int, int, int]  # the folder's (st_ino, st_mtime_ns, st_ctime_ns), taken before listing it
    names: tuple[str, ...]  # its Parquet files
    settled: bool  # last changed long enough before the listing that an unchanged stamp proves it current


_SETTLE_NS = 2_000_000_000  # above the coarsest timestamp granularity of the filesystems we run on
_NO_INDEX = _FileIndex((), np.empty(0, np.uint64), np.empty(0, np.uint32), (), frozenset())


class EventStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._keys_cache: tuple[tuple[str, ...], np.ndarray] | None = None
        self._index_cache = _NO_INDEX
        self._listing_cache: dict[str, _Folder] = {}

    @property
    def glob(self) -> str:
        """A glob over every committed event file (for DuckDB / Spark)."""
        return str(self.root / "event_date=*" / "*.parquet")

    def files(self) -> list[Path]:
        return [self.root / rel for rel in self._relative_files()]

    def _relative_files(self) -> list[str]:
        """Store-relative paths of the committed event files (what `glob` matches), sorted.

        The real-time path lists the store on every call, so each partition folder's listing is
        cached and reused while the folder's (inode, mtime, ctime) is unchanged: adding, renaming
        or removing a file in a folder changes both times. A folder changed within `_SETTLE_NS`
        of its listing is listed again next time, as a later change might still fall in the same
        coarse timestamp tick and leave the times equal.
        """
        try:
            with os.scandir(self.root) as entries:
                parts = [(e.name, e.stat()) for e in entries if e.name.startswith("event_date=") and e.is_dir()]
        except FileNotFoundError:
            return []
        cached = self._listing_cache
        listing: dict[str, _Folder] = {}
        out: list[str] = []
        for part, st in parts:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            folder = cached.get(part)
            if folder is None or not folder.settled or folder.stamp != stamp:
                settled = max(st.st_mtime_ns, st.st_ctime_ns) < time.time_ns() - _SETTLE_NS
                with os.scandir(os.path.join(self.root, part)) as entries:
                    names = tuple(e.name for e in entries if e.name.endswith(".parquet") and e.is_file())
                folder = _Folder(stamp, names, settled)
            listing[part] = folder
            out.extend(f"{part}/{name}" for name in folder.names)
        self._listing_cache = listing
        return sorted(out)

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
        for pattern in ("event_date=*/.*", "_keys/.*", f"{INDEX_DIR}/.*"):
            for tmp in self.root.glob(pattern + TMP_SUFFIX):
                tmp.unlink(missing_ok=True)
        staging = self.root / "_staging"
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        self._keys_cache = None
        return rolled

    def keys(self) -> np.ndarray:
        """Sorted dedup keys of every committed event."""
        files = tuple(sorted(str(p) for p in (self.root / "_keys").glob("*.npy")))
        cached = self._keys_cache
        if cached is not None and cached[0] == files:
            return cached[1]
        if cached is not None and set(cached[0]) <= set(files):
            # Batches only ever add key files: merge the new ones into the sorted keys already held
            # (an API append adds a handful of keys; reloading and sorting every file cost ~30 ms).
            held = set(cached[0])
            added = [np.load(f) for f in files if f not in held]
            new = np.sort(np.concatenate(added)) if added else np.empty(0, dtype=np.uint64)
            keys = np.insert(cached[1], np.searchsorted(cached[1], new), new)
        else:
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
        index_dir = self.root / INDEX_DIR
        index_dir.mkdir(exist_ok=True)
        index_tmp = index_dir / f".{batch}.parquet{TMP_SUFFIX}"
        _write_durable_table(self._index_table([(final, self.root / tmp) for tmp, final in moves[:-1]]), index_tmp)
        # last, so that a reader seeing the index sees every file it lists (moves run in order, also in recover)
        moves.append((str(index_tmp.relative_to(self.root)), f"{INDEX_DIR}/{batch}.parquet"))
        txn_dir = self.root / "_txn"
        txn_dir.mkdir(exist_ok=True)
        intent_tmp = txn_dir / f".{batch}.json{TMP_SUFFIX}"
        _write_durable(intent_tmp, json.dumps({"moves": moves}).encode())
        os.replace(intent_tmp, txn_dir / f"{batch}.json")
        fsync_dir(txn_dir)
        for tmp_name, final_name in moves:
            os.replace(self.root / tmp_name, self.root / final_name)
        (txn_dir / f"{batch}.json").unlink()
        return [self.root / final for _, final in moves[:-2]]

    @staticmethod
    def _index_table(files: Sequence[tuple[str, Path]]) -> pa.Table:
        """The index of one batch: (customer key, file number) per customer of each file, sorted by key.

        `files` pairs each file's store-relative final path (recorded in the index's metadata,
        where `file` points) with the path to read it from now (a staged temp file in a commit).
        """
        keys: list[np.ndarray] = []
        numbers: list[np.ndarray] = []
        for n, (_, path) in enumerate(files):
            ids = pc.unique(pq.read_table(path, columns=["customer_id"]).column(0))
            keys.append(customer_keys(ids))
            numbers.append(np.full(len(ids), n, dtype=np.uint32))
        key = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        number = np.concatenate(numbers) if numbers else np.empty(0, np.uint32)
        order = np.argsort(key, kind="stable")
        metadata = {b"files": json.dumps([final for final, _ in files]).encode()}
        return pa.table([key[order], number[order]], schema=INDEX_SCHEMA.with_metadata(metadata))

    def build_index(self) -> int:
        """Index the committed batches that have no index yet (written before it existed). Returns batches indexed.

        Must be called under writer_lock() (recover() has then put every committed batch's
        files in place). Readers are correct without it; it only makes them read less.
        """
        index_dir = self.root / INDEX_DIR
        indexed = {p.stem for p in index_dir.glob("*.parquet")}
        missing = {p.stem for p in (self.root / "_keys").glob("*.npy")} - indexed
        if not missing:
            return 0
        by_batch: dict[str, list[str]] = {}
        for rel in self._relative_files():
            batch = _batch_of(rel.rsplit("/", 1)[1])
            if batch is not None and batch in missing:
                by_batch.setdefault(batch, []).append(rel)
        index_dir.mkdir(exist_ok=True)
        for batch in sorted(missing):
            tmp = index_dir / f".{batch}.parquet{TMP_SUFFIX}"
            table = self._index_table([(rel, self.root / rel) for rel in by_batch.get(batch, [])])
            _write_durable_table(table, tmp)
            os.replace(tmp, index_dir / f"{batch}.parquet")
        fsync_dir(index_dir)
        return len(missing)

    def _file_index(self) -> _FileIndex:
        """The loaded index, cached: reloaded only when the set of index files changes, and then
        only the new files are read (a batch's index never changes once committed)."""
        try:
            with os.scandir(self.root / INDEX_DIR) as entries:
                names = tuple(sorted(e.name for e in entries if e.name.endswith(".parquet")))
        except FileNotFoundError:
            names = ()
        cached = self._index_cache
        if names == cached.names:
            return cached
        base = cached if set(cached.names) <= set(names) else _NO_INDEX
        keys, file_ids, files = [base.keys], [base.file_ids], list(base.files)
        for name in sorted(set(names) - set(base.names)):
            table = pq.read_table(self.root / INDEX_DIR / name)
            keys.append(table.column("customer_key").to_numpy())
            file_ids.append(table.column("file").to_numpy() + np.uint32(len(files)))
            files.extend(json.loads((table.schema.metadata or {})[b"files"]))
        key = np.concatenate(keys)
        # stable sort is a timsort: merging the sorted old keys with the new batches is about linear
        order = np.argsort(key, kind="stable")
        index = _FileIndex(names, key[order], np.concatenate(file_ids)[order], tuple(files), frozenset(files))
        self._index_cache = index
        return index

    def candidate_files(self, customer_ids: Sequence[str]) -> list[Path]:
        """The committed files that may hold events of these customers, sorted like `files()`.

        Files of indexed batches are kept when their index lists one of the customers' keys;
        files no index covers are always kept.
        """
        index = self._file_index()
        wanted = np.unique(customer_keys(list(customer_ids)))
        lo = np.searchsorted(index.keys, wanted, side="left")
        counts = np.searchsorted(index.keys, wanted, side="right") - lo
        # positions lo[i] .. lo[i] + counts[i] - 1 of every wanted key, without a Python loop
        positions = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        hits = {index.files[i] for i in np.unique(index.file_ids[positions])}
        return [self.root / rel for rel in self._relative_files() if rel in hits or rel not in index.covered]

    def read_customers(self, customer_ids: Sequence[str]) -> pa.Table:
        """Every stored event of these customers, in the contract's schema and in `files()` order.

        Opens only `candidate_files`. Parquet through pyarrow: for the handful of small files a
        customer spans, DuckDB's fixed cost per query is several times the whole read.
        """
        files = self.candidate_files(customer_ids) if len(customer_ids) else []
        if not files:
            return EVENT_SCHEMA.empty_table()
        dataset = ds.FileSystemDataset.from_paths(
            [str(f) for f in files], schema=EVENT_SCHEMA, format=ds.ParquetFileFormat(), filesystem=_LOCAL_FS
        )
        return dataset.to_table(filter=pc.field("customer_id").isin(list(customer_ids)))

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
