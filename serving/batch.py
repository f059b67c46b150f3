"""`journey score`: every eligible customer (or a list) scored as of a cutoff, in bounded memory.

    journey score --as-of 2024-12-31 --out scores.parquet [--customers ids.csv] [--engine local|spark]

The rows come from `serving.scoring.score_table`, the function the API answers with, so a
customer's batch scores, actions and reasons are the API's for the same features. Features as
of T are the offline feature table for T when it was built (`journey features build`), else
they are computed from the event store for T (in slices of customers, so memory stays bounded).

Output: one row per customer (the eligible ones: an event at or before T; or every listed
customer, those without events scored with the cold-start fallback), in the feature table's
order (customer_id order). Columns: run_id, customer_id, cutoff, stage, cold_start, holdout,
every champion's outputs with `<task>_percentile`, `<task>_cold_start`, `<task>_model_version`,
then top_action, actions and reasons (JSON text) and policy_version.

- A file destination (.parquet, .csv) is written beside itself and renamed when complete, so it
  appears whole or not at all; a partial file left by a killed run is removed by the next run.
- A PostgreSQL table (`postgresql://user@host:port/db?table=name`) is written in one
  transaction that first deletes the rows of this run id.
- The run id is a hash of the cutoff, the model and policy versions, the scored customers and
  the reasons flag; rows hold no wall-clock value, so a re-run writes the same bytes.
- Every run is logged to MLflow (experiment `journeyml-scoring`) with its counts, score
  quantiles, action counts, drift (serving/drift.py) and duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from core.output import emit, err, fail, json_default
from core.settings import Settings, get_settings
from features.events.store import fsync_dir

if TYPE_CHECKING:  # scoring pulls in LightGBM: imported where used, so `journey --help` stays fast
    from serving.drift import DriftMonitor
    from serving.scoring import Reference

TASK_ORDER = ("churn", "next_purchase", "conversion", "clv")  # serving.scoring.TASK_ORDER

EXPERIMENT = "journeyml-scoring"
CHUNK_ROWS = 50_000
PARTIAL = ".partial-"
SCORE_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_TS = pa.timestamp("us", tz="UTC")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class BatchError(RuntimeError):
    """Something the user can fix: no champions, a bad destination, no features for the cutoff."""


# ------------------------------------------------------------------------------ destinations
@dataclass(frozen=True)
class Destination:
    kind: str  # parquet | csv | postgres
    path: Path | None = None
    dsn: str | None = None
    table: str | None = None

    @property
    def label(self) -> str:
        """Where the rows went, without a password."""
        if self.kind != "postgres":
            return str(self.path)
        parsed = urlparse(self.dsn or "")
        host = parsed.hostname or "localhost"
        user = f"{parsed.username}@" if parsed.username else ""
        port = f":{parsed.port}" if parsed.port else ""
        return f"postgresql://{user}{host}{port}{parsed.path}?table={self.table}"


def parse_destination(text: str) -> Destination:
    """A .parquet / .csv path, or postgresql://user@host:port/db?table=name. Raises BatchError."""
    if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
        parsed = urlparse(text)
        query = parse_qs(parsed.query)
        tables = query.pop("table", [])
        if len(tables) != 1 or not _IDENT.match(tables[0]):
            raise BatchError("a PostgreSQL destination needs ?table=name (letters, digits, _; optionally schema.name)")
        if not parsed.path.strip("/"):
            raise BatchError("a PostgreSQL destination needs a database: postgresql://user@host:port/db?table=name")
        rest = "&".join(f"{k}={v}" for k, vs in sorted(query.items()) for v in vs)
        scheme = "postgresql"
        dsn = parsed._replace(scheme=scheme, query=rest).geturl()
        return Destination("postgres", dsn=dsn, table=tables[0])
    if "://" in text:
        raise BatchError(f"unsupported destination {text!r}: use a .parquet or .csv path or a postgresql:// URL")
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise BatchError(f"unsupported destination {text!r}: the file must end in .parquet or .csv")
    if path.is_dir():
        raise BatchError(f"{path} is a directory: give a file name ending in .parquet or .csv")
    return Destination("parquet" if suffix == ".parquet" else "csv", path=path.resolve())


def default_destination(settings: Settings, cutoff: pd.Timestamp) -> str:
    """Where `journey score` writes without --out, and where `journey backtest` looks for scores."""
    return str(settings.scores_dir / f"scores_{cutoff.strftime('%Y%m%dT%H%M%S')}.parquet")


class Sink(Protocol):
    """Where the rows go: checked before scoring, opened with the schema, written chunk by chunk, then
    committed whole or aborted (nothing visible)."""

    def check(self) -> None: ...
    def open(self, schema: pa.Schema, run_id: str) -> None: ...
    def write(self, table: pa.Table) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileSink:
    """Parquet or CSV written to `.<name>.partial-<pid>` beside the destination, renamed on commit."""

    def __init__(self, dest: Destination) -> None:
        assert dest.path is not None
        self.path = dest.path
        self.kind = dest.kind
        self.tmp = self.path.with_name(f".{self.path.name}{PARTIAL}{os.getpid()}")
        self._writer: Any = None

    def clean_stale(self) -> list[Path]:
        """Remove partial files of runs that died (their process is gone)."""
        removed = []
        for stale in self.path.parent.glob(f".{self.path.name}{PARTIAL}*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                stale.unlink(missing_ok=True)
                removed.append(stale)
        return removed

    def check(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise BatchError(f"cannot write to {self.path.parent}")
        self.clean_stale()

    def open(self, schema: pa.Schema, run_id: str) -> None:
        if self.kind == "parquet":
            # No statistics on the JSON columns: they are large and nobody filters on them.
            self._writer = pq.ParquetWriter(
                self.tmp,
                schema,
                compression="zstd",
                write_statistics=[f.name for f in schema if f.name not in ("actions", "reasons")],
            )
        else:
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(self.tmp, schema)

    def write(self, table: pa.Table) -> None:
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise BatchError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        try:
            self._writer.close()
            self._writer = None
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise BatchError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)


_PG_TYPES = {"string": "text", "double": "double precision", "bool": "boolean", "timestamp[us, tz=UTC]": "timestamptz"}


class PostgresSink:
    """One transaction: create the table if needed, delete this run's rows, COPY every chunk, commit."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.conn: Any = None
        self.columns: list[str] = []
        self.deleted = 0

    def _refused(self, exc: Exception) -> BatchError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return BatchError(f"PostgreSQL refused the rows for {self.dest.label}: {first}")

    def check(self) -> None:
        import psycopg2

        try:
            self.conn = psycopg2.connect(self.dest.dsn, connect_timeout=5)
        except psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BatchError(f"cannot connect to PostgreSQL at {self.dest.label}: {first}") from exc

    def _ident(self) -> Any:
        from psycopg2 import sql

        assert self.dest.table is not None
        return sql.Identifier(*self.dest.table.split("."))

    def open(self, schema: pa.Schema, run_id: str) -> None:
        import psycopg2

        try:
            self._open(schema, run_id)
        except psycopg2.Error as exc:
            raise self._refused(exc) from exc

    def _open(self, schema: pa.Schema, run_id: str) -> None:
        from psycopg2 import sql

        cur = self.conn.cursor()
        table = self._ident()
        self.columns = schema.names
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_PG_TYPES[str(f.type)])) for f in schema
        )
        # Runs writing the same table queue here instead of interleaving their deletes and copies.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.dest.table,))
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, cols))
        for f in schema:  # a champion added since the table was created adds its columns
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table, sql.Identifier(f.name), sql.SQL(_PG_TYPES[str(f.type)])
                )
            )
        cur.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(table), (run_id,))
        self.deleted = cur.rowcount

    def write(self, table: pa.Table) -> None:
        import io

        import psycopg2
        import pyarrow.csv as pcsv
        from psycopg2 import sql

        buf = io.BytesIO()
        pcsv.write_csv(table, buf, pcsv.WriteOptions(include_header=False))
        buf.seek(0)
        statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            self._ident(), sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        )
        try:
            self.conn.cursor().copy_expert(statement.as_string(self.conn), buf)
        except psycopg2.Error as exc:
            raise self._refused(exc) from exc

    def commit(self) -> None:
        import psycopg2

        try:
            self.conn.commit()
        except psycopg2.Error as exc:
            raise self._refused(exc) from exc
        self.conn.close()

    def abort(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.rollback()
            except Exception:  # noqa: BLE001 - a dead connection rolls back on the server anyway
                pass
            self.conn.close()


def open_sink(dest: Destination) -> Sink:
    """A sink for the destination, checked (writable folder, reachable database) before any scoring."""
    sink: Sink = PostgresSink(dest) if dest.kind == "postgres" else FileSink(dest)
    sink.check()
    return sink


# ------------------------------------------------------------------------------ features
def read_customer_ids(path: Path) -> list[str]:
    """Distinct customer ids from a Parquet/CSV file (column customer_id, else the first column) or
    a text file with one id per line. Sorted, so the run id does not depend on the file's order."""
    if not path.is_file():
        raise BatchError(f"--customers: no file at {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
            col = table.column("customer_id" if "customer_id" in table.column_names else 0)
            values = col.cast(pa.string()).to_pylist()
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, dtype=str, sep="," if suffix == ".csv" else "\t", keep_default_na=False)
            if "customer_id" in frame.columns:
                values = frame["customer_id"].tolist()
            elif len(frame.columns) == 1:  # one column: its header may be a customer id
                values = [frame.columns[0], *frame.iloc[:, 0].tolist()]
            else:
                raise BatchError(f"--customers: {path} has no customer_id column")
        else:
            values = path.read_text().split()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BatchError(f"--customers: cannot read {path}: {exc}") from exc
    ids = sorted({str(v).strip() for v in values if v is not None and str(v).strip() and str(v) != "nan"})
    if not ids:
        raise BatchError(f"--customers: {path} lists no customer ids")
    return ids


@dataclass
class FeaturePlan:
    """Which features a run scores: an offline table (or a staged file) or the event store, and whom."""

    cutoff: pd.Timestamp
    ids: pa.Array  # every customer to score, in output order
    table: Path | None = None  # offline feature table (or staged features) to read
    glob: str | None = None  # the event store, when features are computed
    customers_path: str | None = None
    listed: bool = False
    source: str = ""

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for chunk in self.ids.cast(pa.string()).to_pylist():
            h.update(chunk.encode())
            h.update(b"\n")
        return h.hexdigest()

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        """Feature frames of at most `rows` customers (customer_id, cutoff, features), in `ids` order,
        one row per customer; listed customers without features get all-missing rows."""
        if self.table is not None and not self.listed:
            pf = pq.ParquetFile(self.table, buffer_size=1 << 20)
            for batch in pf.iter_batches(batch_size=rows):
                yield _tidy(batch.to_pandas(), self.cutoff)
            return
        ids = self.ids.to_pylist()
        for start in range(0, len(ids), rows):
            part = ids[start : start + rows]
            if self.table is not None:
                wanted = [("customer_id", "in", part)]
                found = pq.read_table(self.table, filters=wanted, buffer_size=1 << 20).to_pandas()
            else:
                from features.journeys import compute_features

                assert self.glob is not None
                found = compute_features(self.glob, [self.cutoff], customers=self.customers_path, customer_ids=part)
            yield _align(_tidy(found, self.cutoff), part, self.cutoff)


def _tidy(frame: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    frame = frame.rename(columns={"event_timestamp": "cutoff"})
    frame = frame.drop(columns=[c for c in ("created",) if c in frame.columns])
    if "cutoff" not in frame.columns:
        frame.insert(1, "cutoff", cutoff)
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame


def _align(found: pd.DataFrame, ids: Sequence[str], cutoff: pd.Timestamp) -> pd.DataFrame:
    """Rows for exactly `ids`, in that order; customers without features become all-missing rows."""
    from features.online import categorical_names, numeric_names

    if found.empty:
        found = pd.DataFrame({"customer_id": pd.Series([], dtype=object), "cutoff": pd.Series([], dtype=object)})
    frame = found.drop_duplicates("customer_id").set_index("customer_id").reindex(pd.Index(ids, name="customer_id"))
    for name in numeric_names():
        if name not in frame.columns:
            frame[name] = np.nan
    for name in categorical_names():
        if name not in frame.columns:
            frame[name] = None
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    frame["cutoff"] = pd.Series(cutoff, index=frame.index).astype("datetime64[us, UTC]")
    return frame.reset_index()


def plan_features(
    settings: Settings, cutoff: pd.Timestamp, listed: list[str] | None, *, table: Path | None = None
) -> FeaturePlan:
    """Features as of `cutoff`: `table` if given, the offline table for the cutoff if built, else the store."""
    from features.events.store import EventStore
    from features.online import table_path

    customers_path = str(settings.customers_path) if settings.customers_path.exists() else None
    path = table if table is not None else table_path(settings, cutoff)
    if path.exists():
        ids = pa.array(listed, pa.string()) if listed is not None else pq.read_table(path, columns=["customer_id"])
        if not isinstance(ids, pa.Array):
            ids = ids.column("customer_id").combine_chunks().cast(pa.string())
        return FeaturePlan(cutoff, ids, table=path, customers_path=customers_path, listed=listed is not None,
                           source=str(path))  # fmt: skip
    store = EventStore(settings.events_dir)
    if store.is_empty():
        raise BatchError(f"no feature table for {cutoff.isoformat()} and no events: run `journey ingest` first")
    if listed is not None:
        ids = pa.array(listed, pa.string())
    else:
        import duckdb

        literal = cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")
        con = duckdb.connect()
        try:
            ids = (
                con.sql(
                    f"SELECT DISTINCT customer_id FROM read_parquet('{store.glob}', hive_partitioning = false) "
                    f"WHERE event_time <= TIMESTAMPTZ '{literal}+00' ORDER BY customer_id"
                )
                .to_arrow_table()
                .column(0)
                .combine_chunks()
                .cast(pa.string())
            )
        finally:
            con.close()
    return FeaturePlan(cutoff, ids, glob=store.glob, customers_path=customers_path, listed=listed is not None,
                       source="computed from the event store")  # fmt: skip


# ------------------------------------------------------------------------------ scoring
@dataclass
class ScoringContext:
    """Everything one run scores with; pickled whole for the Spark executors."""

    models: dict[str, Any]
    policy: Any
    reference: Reference
    versions: dict[str, str]
    cutoff: pd.Timestamp
    run_id: str = ""
    reasons: bool = True
    attribution: str = "leaf"
    _scorer: Any = field(default=None, repr=False)

    @property
    def tasks(self) -> list[str]:
        return [t for t in TASK_ORDER if t in self.models]

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from models.scorer import Scorer

            self._scorer = Scorer(self.models, attribution=self.attribution)
        return self._scorer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scorer"] = None  # its describer is a closure; rebuilt where it is used
        return state

    def output_columns(self) -> list[str]:
        cols = ["run_id", "customer_id", "cutoff", "stage", "cold_start", "holdout"]
        for task in self.tasks:
            cols += [*self.models[task].outputs, f"{task}_percentile", f"{task}_cold_start", f"{task}_model_version"]
        return [*cols, "top_action", "actions", "reasons", "policy_version"]

    def schema(self) -> pa.Schema:
        fields = []
        for name in self.output_columns():
            if name == "cutoff":
                kind: pa.DataType = _TS
            elif name in ("cold_start", "holdout") or name.endswith("_cold_start"):
                kind = pa.bool_()
            elif name in ("run_id", "customer_id", "stage", "top_action", "actions", "reasons", "policy_version") or (
                name.endswith("_model_version")
            ):
                kind = pa.string()
            else:
                kind = pa.float64()
            fields.append(pa.field(name, kind))
        return pa.schema(fields)


def load_context(settings: Settings, cutoff: pd.Timestamp) -> tuple[ScoringContext, dict[str, dict[str, Any]]]:
    """The champions, the action policy and the percentile reference, as the API loads them."""
    from serving.runtime import _reference, load_champions
    from serving.scoring import Reference

    models, infos, _source = load_champions(settings)
    if not models:
        raise BatchError("no champion models yet: run `journey train --task <task>` (and promote a version) first")
    try:
        from training.nba import load_policy

        policy = load_policy(settings)
    except Exception as exc:  # noqa: BLE001 - scores without actions beat no scores, as in the API
        err.print(f"[yellow]no action policy[/yellow] ({type(exc).__name__}): scoring without actions")
        policy = None
    versions = {t: str(infos[t].get("version")) for t in TASK_ORDER if t in infos}
    if policy is not None and getattr(policy, "version", None):
        versions["nba"] = str(policy.version)
    ctx = ScoringContext(
        models=models,
        policy=policy,
        reference=Reference(),
        versions=versions,
        cutoff=cutoff,
        attribution=settings.reasons_method,
    )
    ctx.reference = _reference(settings, ctx.scorer)
    return ctx, infos


def run_id_for(
    cutoff: pd.Timestamp, versions: dict[str, str], ids_digest: str, reasons: bool, attribution: str = "leaf"
) -> str:
    """Deterministic: the same cutoff, models, policy, customers and reasons give the same run id."""
    key = json.dumps(
        {
            "cutoff": cutoff.isoformat(),
            "versions": versions,
            "customers": ids_digest,
            "reasons": attribution if reasons else False,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _r6(value: Any) -> Any:
    # Six decimals in the JSON text: compact, and the last-bit differences of float sums in another
    # engine's features (Spark against DuckDB) do not show.
    return round(value, 6) if isinstance(value, float) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=json_default)


ACTION_FIELDS = ("action", "expected_incremental_value", "uplift", "p_base", "value", "cost", "reason")


def actions_json(actions: list[list[dict[str, Any]]]) -> Any:
    """Each customer's recommendations as JSON text (the API's ActionRecommendation fields, numbers to six
    decimals), built column-wise with Arrow: per-row json.dumps was a fifth of the batch time."""
    lengths = np.fromiter((len(row) for row in actions), dtype=np.int64, count=len(actions))
    flat = [a for row in actions for a in row]
    return _actions_json({key: [a.get(key) for a in flat] for key in ACTION_FIELDS}, lengths)


def action_rows_json(rows: pd.DataFrame, n: int) -> tuple[np.ndarray, Any]:
    """(top action, actions JSON) per customer from `decide_columnar`'s long frame (one row per
    customer and rank, customers in order, each with a rank-1 row): the text `actions_json` gives
    for `decide`'s dicts, without building them."""
    first = rows["rank"].to_numpy() == 1
    row_of = np.cumsum(first) - 1
    lengths = np.bincount(row_of, minlength=n).astype(np.int64)
    top = rows["action"].to_numpy(dtype=object)[first]
    columns = {key: rows[key].to_numpy() for key in ACTION_FIELDS}
    columns["action"] = rows["action"].astype(str).to_numpy(dtype=object)
    reason = rows["reason"]
    columns["reason"] = (
        pa.array(reason.array) if isinstance(reason.dtype, pd.ArrowDtype) else reason.astype(str).to_numpy(dtype=object)
    )
    return top, _actions_json(columns, lengths)


def _json_strings(values: Any) -> pa.Array:
    """`json.dumps` of every string, vectorised: plain printable ASCII without quotes or
    backslashes (nearly every action id and reason) is only wrapped in quotes; the rest goes
    through json.dumps one by one, so the text is the same as json.dumps gives."""
    import pyarrow.compute as pc

    arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string(), from_pandas=True)
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    special = pc.fill_null(pc.match_substring_regex(arr, r'[^\x20-\x7e]|["\\]'), True)
    if not pc.any(special).as_py():
        return quoted
    texts = quoted.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(special.to_numpy(zero_copy_only=False)).tolist():
        texts[i] = json.dumps(arr[i].as_py())
    return pa.array(texts, pa.string())


def _actions_json(columns: dict[str, Any], lengths: np.ndarray) -> Any:
    import pyarrow.compute as pc

    pieces: list[Any] = []
    for i, key in enumerate(ACTION_FIELDS):
        pieces.append(("{" if i == 0 else ",") + json.dumps(key) + ":")
        values = columns[key]
        if key in ("action", "reason"):
            pieces.append(_json_strings(values))
        else:
            numbers = pc.round(pa.array(values, pa.float64(), from_pandas=True), 6)
            text = pc.cast(numbers, pa.string())
            pieces.append(pc.fill_null(pc.if_else(pc.is_finite(numbers), text, pa.scalar(None, pa.string())), "null"))
    pieces.append("}")
    objects = pc.binary_join_element_wise(*pieces, "")
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
    rows = pc.binary_join(pa.LargeListArray.from_arrays(offsets, objects), ",")
    # Kept in Arrow (a string[pyarrow] column): the Parquet write takes it without converting
    # every JSON text to a Python string and back.
    return pd.arrays.ArrowExtensionArray(pc.binary_join_element_wise("[", rows, "]", ""))


def format_rows(table: dict[str, Any] | pd.DataFrame, ctx: ScoringContext) -> pd.DataFrame:
    """score_columns' columns (or score_table's rows) -> the output rows (flat columns; actions and
    reasons as JSON text)."""
    n = len(table["customer_id"])
    keys = set(table.keys())
    out: dict[str, Any] = {
        "run_id": np.full(n, ctx.run_id, dtype=object),
        "customer_id": pd.Series(table["customer_id"]).astype(str).to_numpy(),
        "cutoff": pd.Series(ctx.cutoff, index=range(n)).astype("datetime64[us, UTC]"),
        "stage": [None if s is None or s != s else str(s) for s in table["stage"]],
        "cold_start": np.asarray(table["cold_start"], dtype=bool),
        "holdout": np.asarray(table["holdout"], dtype=bool),
    }
    for task in ctx.tasks:
        for col in ctx.models[task].outputs:
            out[col] = np.asarray(table[col], dtype=float) if col in keys else np.full(n, np.nan)
        out[f"{task}_percentile"] = np.asarray(table[f"{task}_percentile"], dtype=float)
        out[f"{task}_cold_start"] = np.asarray(table[f"{task}_cold_start"], dtype=bool)
        out[f"{task}_model_version"] = np.full(n, ctx.versions.get(task), dtype=object)
    if "action_rows" in keys:
        out["top_action"], out["actions"] = action_rows_json(table["action_rows"], n)
    else:
        actions = list(table["actions"])
        out["top_action"] = [a[0]["action"] if a else None for a in actions]
        out["actions"] = actions_json(actions)
    if ctx.reasons:
        columns = [(t, list(table[f"{t}_reasons"])) for t in ctx.tasks if f"{t}_reasons" in keys]
        out["reasons"] = [
            _dumps({t: [{k: _r6(r[k]) for k in ("feature", "value", "contribution", "text")} for r in rs[i]]
                    for t, rs in columns})
            for i in range(n)
        ]  # fmt: skip
    else:
        out["reasons"] = np.full(n, None, dtype=object)
    out["policy_version"] = np.full(n, ctx.versions.get("nba"), dtype=object)
    return pd.DataFrame(out, columns=ctx.output_columns())


def score_chunk(features: pd.DataFrame, ctx: ScoringContext) -> pd.DataFrame:
    """One chunk of feature rows -> output rows, through the API's scoring function."""
    from serving.scoring import score_columns

    table = score_columns(
        features, ctx.scorer, ctx.policy, ctx.reference, explain=ctx.reasons, actions=True, action_rows=True
    )
    return format_rows(table, ctx)


def batch_workers(settings: Settings | None = None) -> int:
    """Chunks scored at once: JOURNEY_BATCH_WORKERS, or one per core when it is 0 (the default)."""
    chosen = (settings or get_settings()).batch_workers
    return chosen if chosen > 0 else max(1, os.cpu_count() or 1)


def scored_chunks(
    chunks: Iterator[pd.DataFrame], ctx: ScoringContext, workers: int | None = None
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(features, output rows) per chunk, in input order. With several workers, chunks are scored
    in parallel threads: the boosters release the GIL, so one chunk's trees run while another's
    actions and JSON are built in Python, where a single chunk at a time leaves a core idle
    during the Python part. Each predict keeps LightGBM's threads (one per core), so the trees get
    both cores while the other chunk is in Python (one thread per worker measured the same or a
    little worse). At most `workers` chunks are in flight, so memory stays bounded; output is
    identical to scoring in sequence."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or batch_workers()
    if workers <= 1:
        for feats in chunks:
            yield feats, score_chunk(feats, ctx)
        return
    ctx.scorer  # noqa: B018 - build the shared scorer (and its leaf tables) before the threads start
    with ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
        pending: deque[tuple[pd.DataFrame, Any]] = deque()
        try:
            for feats in chunks:
                pending.append((feats, pool.submit(score_chunk, feats, ctx)))
                if len(pending) >= workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def to_arrow(rows: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(rows, schema=schema, preserve_index=False).replace_schema_metadata(None)


# ------------------------------------------------------------------------------ the run
@dataclass
class RunStats:
    """What the summary and MLflow report, gathered chunk by chunk (scores kept as float32)."""

    rows: int = 0
    cold_start: int = 0
    holdout: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, rows: pd.DataFrame, ctx: ScoringContext) -> dict[str, np.ndarray]:
        from serving.scoring import primary_column

        self.rows += len(rows)
        self.cold_start += int(rows["cold_start"].sum())
        self.holdout += int(rows["holdout"].sum())
        for action, count in rows["top_action"].value_counts(dropna=False).items():
            key = "none" if action is None or action != action else str(action)
            self.actions[key] = self.actions.get(key, 0) + int(count)
        primaries = {}
        for task in ctx.tasks:
            col = primary_column(task, list(rows.columns))
            if col is not None:
                values = rows[col].to_numpy(dtype=float)
                self.scores.setdefault(col, []).append(values.astype(np.float32))
                primaries[task] = values
        return primaries

    def quantiles(self) -> dict[str, dict[str, float]]:
        out = {}
        for col, parts in self.scores.items():
            values = np.concatenate(parts).astype(float) if parts else np.array([])
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            qs = np.quantile(values, SCORE_QUANTILES)
            entry = {f"p{round(q * 100):02d}": round(float(v), 6) for q, v in zip(SCORE_QUANTILES, qs, strict=True)}
            entry["mean"] = round(float(values.mean()), 6)
            out[col] = entry
        return out


def build_monitor(settings: Settings, ctx: ScoringContext, infos: dict[str, dict[str, Any]]) -> DriftMonitor | None:
    """Baseline histograms from the training population's feature table (a sample of at most 50k rows)."""
    from core.time import to_utc
    from features.online import feature_tables, table_path
    from serving.drift import DriftMonitor, baseline_table, ensure_baseline_table
    from serving.scoring import primary_column, score_table

    cutoffs = []
    for task in ctx.tasks:
        tag = (infos.get(task, {}).get("tags") or {}).get("test_cutoff")
        try:
            if tag:
                cutoffs.append(to_utc(tag))
        except ValueError:
            continue
    built = ensure_baseline_table(settings, cutoffs)  # the tested population, computed when missing
    table_for = {c: table_path(settings, c) for c in cutoffs} if built is None else {built[1]: built[0]}
    path, why = baseline_table(feature_tables(settings), cutoffs if built is None else [built[1]], table_for)
    if path is None:
        return None
    pf = pq.ParquetFile(path, buffer_size=1 << 20)
    stride = max(1, -(-pf.metadata.num_rows // 50_000))
    parts = [batch.take(pa.array(np.arange(0, batch.num_rows, stride))) for batch in pf.iter_batches(batch_size=50_000)]
    sample = _tidy(pa.Table.from_batches(parts).to_pandas(), ctx.cutoff)
    table = score_table(sample, ctx.scorer, None, ctx.reference, explain=False, actions=False)
    scores = {t: table[c].to_numpy(dtype=float) for t in ctx.tasks if (c := primary_column(t, list(table.columns)))}
    from features.online import categorical_names, numeric_names

    columns = [c for c in [*numeric_names(), *categorical_names()] if c in sample.columns]
    baseline_cutoff = sample["cutoff"].iloc[0] if len(sample) else None
    return DriftMonitor.fit(
        sample,
        scores,
        feature_columns=columns,
        baseline={"table": str(path), "why": why, "cutoff": baseline_cutoff, "rows": len(sample)},
    )


def _progress(total: int, show: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=False,
    )


def score_run(
    settings: Settings,
    cutoff: pd.Timestamp,
    dest: Destination,
    *,
    customers_file: Path | None = None,
    engine: str = "local",
    chunk_rows: int = CHUNK_ROWS,
    reasons: bool = True,
    show_progress: bool = True,
    spark: Any = None,
) -> dict[str, Any]:
    """Score, write atomically, monitor drift, log to MLflow. Returns the summary. Raises BatchError."""
    if engine not in ("local", "spark"):
        raise BatchError(f"--engine must be local or spark, not {engine!r}")
    started = time.perf_counter()
    listed = read_customer_ids(customers_file) if customers_file is not None else None
    own_spark = spark is None
    staging = settings.scores_dir / ".staging"
    sink = open_sink(dest)
    try:
        ctx, infos = load_context(settings, cutoff)
        spark_plan = None
        if engine == "spark":
            from serving.spark_batch import plan_spark_features

            spark_plan, spark = plan_spark_features(settings, cutoff, listed, staging, spark)
        plan = spark_plan or plan_features(settings, cutoff, listed)
        if len(plan.ids) == 0:
            raise BatchError(f"no customer has an event at or before {cutoff.isoformat()}: nothing to score")
        ctx.reasons = reasons
        ctx.run_id = run_id_for(cutoff, ctx.versions, plan.digest, reasons, ctx.attribution)
        schema = ctx.schema()
        monitor = build_monitor(settings, ctx, infos)
        stats = RunStats()
        sink.open(schema, ctx.run_id)
        with _progress(len(plan.ids), show_progress) as bar:
            task_id = bar.add_task("score", total=len(plan.ids))
            if engine == "spark":
                from serving.spark_batch import spark_score

                for rows in spark_score(spark, plan, ctx, staging, chunk_rows):
                    sink.write(to_arrow(rows, schema))
                    scores = stats.add(rows, ctx)
                    if monitor is not None:
                        monitor.update(None, scores)
                    bar.advance(task_id, len(rows))
                if monitor is not None:  # feature histograms: streamed from the same feature file
                    for feats in plan.chunks(chunk_rows):
                        monitor.update(feats, {})
            else:
                for feats, rows in scored_chunks(plan.chunks(chunk_rows), ctx, batch_workers(settings)):
                    sink.write(to_arrow(rows, schema))
                    scores = stats.add(rows, ctx)
                    if monitor is not None:
                        monitor.update(feats, scores)
                    bar.advance(task_id, len(rows))
        if stats.rows != len(plan.ids):
            raise BatchError(f"scored {stats.rows} rows for {len(plan.ids)} customers: refusing to write")
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    finally:
        if engine == "spark":
            from serving.spark_batch import clean_staging

            clean_staging(staging)
            if own_spark and spark is not None:
                spark.stop()
    seconds = time.perf_counter() - started
    drift = monitor.report() if monitor is not None else None
    if drift is not None and drift["baseline"].get("table") == plan.source and not plan.listed:
        drift["baseline"]["why"] += "; it is the scored table itself, so PSI is 0 by construction"
    summary: dict[str, Any] = {
        "ok": True,
        "run_id": ctx.run_id,
        "cutoff": cutoff.isoformat(),
        "engine": engine,
        "destination": dest.label,
        "features": plan.source,
        "rows": stats.rows,
        "customers_listed": len(listed) if listed is not None else None,
        "cold_start": stats.cold_start,
        "holdout": stats.holdout,
        "versions": ctx.versions,
        "reasons": reasons,
        "score_quantiles": stats.quantiles(),
        "top_actions": dict(sorted(stats.actions.items())),
        "drift": _drift_summary(drift),
        "seconds": round(seconds, 3),
        "rows_per_second": round(stats.rows / seconds, 1) if seconds > 0 else None,
    }
    summary["mlflow_run_id"] = log_run(settings, summary, drift)
    return summary


def _drift_summary(drift: dict[str, Any] | None, top: int = 10) -> dict[str, Any] | None:
    """The drift report with only the `top` worst features (MLflow keeps them all in drift.json)."""
    if drift is None:
        return None
    return {**drift, "features": dict(list(drift["features"].items())[:top])}


def log_run(settings: Settings, summary: dict[str, Any], drift: dict[str, Any] | None = None) -> str | None:
    """One MLflow run per scoring run (experiment journeyml-scoring). Returns its id, None if MLflow failed."""
    import mlflow

    from training.registry import client, default_artifact_root, use_experiment

    uri = settings.tracking_uri
    try:
        client(uri)
        use_experiment(EXPERIMENT, default_artifact_root(uri, settings.root))
        with mlflow.start_run(
            run_name=f"score-{summary['cutoff'][:10]}-{summary['run_id'][:8]}",
            tags={"scoring_run_id": summary["run_id"], "cutoff": summary["cutoff"], "engine": summary["engine"],
                  "destination": summary["destination"], "features": summary["features"]},
        ) as run:  # fmt: skip
            params = {f"version_{k}": v for k, v in summary["versions"].items()}
            mlflow.log_params({**params, "reasons": summary["reasons"], "destination": summary["destination"]})
            metrics: dict[str, float] = {
                "rows": summary["rows"],
                "cold_start_rows": summary["cold_start"],
                "holdout_rows": summary["holdout"],
                "duration_seconds": summary["seconds"],
            }
            for col, qs in summary["score_quantiles"].items():
                metrics.update({f"{col}_{k}": v for k, v in qs.items()})
            metrics.update({f"top_action_{_metric_key(k)}": v for k, v in summary["top_actions"].items()})
            if drift:
                metrics["psi_max"] = drift["max_psi"]
                metrics.update({f"psi_score_{k}": v for k, v in drift["scores"].items()})
                metrics.update({f"psi_feature_{_metric_key(k)}": v for k, v in drift["features"].items()})
                mlflow.log_dict(drift, "drift.json")
            mlflow.log_metrics(metrics)
            mlflow.log_dict({k: v for k, v in summary.items() if k != "drift"}, "summary.json")
            return str(run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - the scores are written; a tracking failure must not hide that
        err.print(f"[yellow]warning[/yellow]: could not log the run to MLflow ({type(exc).__name__}: {exc})")
        return None


def _metric_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def command(
    as_of: str = typer.Option(..., "--as-of", help="Cutoff (UTC): features use events at or before it."),
    out: str | None = typer.Option(
        None,
        "--out",
        help="A .parquet or .csv path, or postgresql://user@host:port/db?table=name "
        "(default $JOURNEY_HOME/scores/scores_<as-of>.parquet).",
    ),
    customers: Path | None = typer.Option(
        None, "--customers", help="Score only these customers: Parquet/CSV with customer_id, or one id per line."
    ),
    engine: str = typer.Option("local", "--engine", help="local (default) or spark (pyspark, local[2] by default)."),
    chunk_rows: int = typer.Option(CHUNK_ROWS, "--chunk-rows", min=1, help="Customers per chunk (bounds memory)."),
    reasons: bool = typer.Option(
        True, "--reasons/--no-reasons", help="Top-3 reasons per task (JOURNEY_REASONS_METHOD=shap: exact TreeSHAP)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Score every eligible customer with every champion: scores, percentiles, stage, actions, reasons."""
    from core.time import to_utc

    try:
        cutoff = to_utc(as_of)
    except ValueError as exc:
        fail(str(exc), json_out)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for our progress
    settings = get_settings()
    try:
        dest = parse_destination(out or default_destination(settings, cutoff))
        summary = score_run(
            settings, cutoff, dest, customers_file=customers, engine=engine, chunk_rows=chunk_rows, reasons=reasons
        )
    except BatchError as exc:
        fail(str(exc), json_out)
    from serving.drift import human

    lines = [
        f"scored {summary['rows']:,} customers as of {summary['cutoff']} -> {summary['destination']}",
        f"run {summary['run_id']}  models {summary['versions']}  {summary['seconds']} s",
        f"top actions: {summary['top_actions']}",
    ]
    if summary["drift"]:
        if json_out:  # the drift warnings are printed either way
            err.print(human(summary["drift"]))
        else:
            lines.append(human(summary["drift"]))
    emit(summary, json_out, "\n".join(lines))
