"""Feast wiring: offline feature tables, the online store, pushes and point-in-time joins.

Two feature views over the same definitions (features/journeys/definitions.py):

- `customer_journey`: every feature as its own column, offline only. Training sets come
  from it through `get_historical_features` (a point-in-time join).
- `customer_journey_vector`: the online view. The numeric features are packed into one
  float64 vector per customer (plus a layout hash and the categoricals), because Feast
  reads one protobuf value per feature per row: ~130 values per customer made online
  reads ~10x slower. The layout hash guards against reading a vector with other features.

Features that age between events (days since ..., tenure) are stored as of the row's
cutoff and aged at read time: value + days elapsed since the cutoff.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import Settings

FEATURE_VIEW = "customer_journey"
VECTOR_VIEW = "customer_journey_vector"
PUSH_SOURCE = "customer_journey_vector_push"
ENTITY = "customer"
SERVICES = ("churn_v1", "next_purchase_v1", "conversion_v1", "clv_v1")
TTL = timedelta(days=3650)


def import_feast() -> Any:
    """Import feast without typeguard's import-time instrumentation.

    Feast decorates ~240 functions with typeguard's @typechecked, which re-parses their
    source at import: 10-14 s per process on this machine, paid by every command and API
    worker. The checks only guard Feast's own development; with the decorator as identity
    the import takes ~2 s. Only applies if feast has not been imported yet.
    """
    import sys

    if "feast" not in sys.modules:
        import typeguard

        original = typeguard.typechecked

        def identity(target: Any = None, **_: Any) -> Any:
            return target if target is not None else (lambda f: f)

        typeguard.typechecked = identity  # type: ignore[assignment]
        try:
            import feast  # noqa: F401
        finally:
            typeguard.typechecked = original
    return sys.modules["feast"]


def numeric_names() -> list[str]:
    from features.journeys.definitions import numeric_features

    return list(numeric_features())


def categorical_names() -> list[str]:
    from features.journeys.definitions import categorical_features

    return list(categorical_features())


def layout_hash() -> str:
    return hashlib.blake2b(json.dumps(numeric_names()).encode(), digest_size=8).hexdigest()


def table_dir(settings: Settings) -> Path:
    return settings.features_dir / FEATURE_VIEW


def table_path(settings: Settings, cutoff: pd.Timestamp) -> Path:
    return table_dir(settings) / f"as_of={cutoff.strftime('%Y%m%dT%H%M%S')}.parquet"


def redis_connection_string(url: str) -> str:
    """redis://host:port/db -> Feast's 'host:port,db=N,...'.

    No client-side retries and short timeouts: redis-py's default retries a refused connection for
    ~10 s, which stalled every API request during an outage instead of answering degraded; and a
    Redis that hangs (accepts, never answers) holds a read for at most a second, where a healthy
    one answers in well under a millisecond.
    """
    from urllib.parse import urlparse

    parsed = urlparse(url)
    db = (parsed.path or "/0").lstrip("/") or "0"
    out = f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379},db={db}"
    out += ",retry=null,socket_connect_timeout=1,socket_timeout=1"
    if parsed.password:
        out += f",password={parsed.password}"
    return out


def feast_config(settings: Settings) -> Any:
    import_feast()
    from feast.repo_config import RepoConfig

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any]
    if settings.redis_url:
        online = {"type": "redis", "connection_string": redis_connection_string(settings.redis_url)}
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return RepoConfig(
        project=settings.feast_project,
        registry=str(settings.feast_dir / "registry.db"),
        provider="local",
        offline_store={"type": "duckdb"},
        online_store=online,
        entity_key_serialization_version=3,
        repo_path=str(settings.feast_dir),
    )


def definitions(table_glob: str) -> list[Any]:
    """Every Feast object journeyml registers (also imported by features/repo/repo.py)."""
    import_feast()
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Bytes, Float64, String

    customer = Entity(name=ENTITY, join_keys=["customer_id"], value_type=ValueType.STRING)
    tables = FileSource(name="customer_journey_tables", path=table_glob, timestamp_field="event_timestamp")
    offline = FeatureView(
        name=FEATURE_VIEW,
        entities=[customer],
        ttl=TTL,
        schema=[Field(name=n, dtype=Float64) for n in numeric_names()]
        + [Field(name=n, dtype=String) for n in categorical_names()],
        source=tables,
        online=False,
        tags={"layout": layout_hash()},
    )
    vector_source = FileSource(name="customer_journey_vector_batch", path=table_glob, timestamp_field="event_timestamp")
    push = PushSource(name=PUSH_SOURCE, batch_source=vector_source)
    online = FeatureView(
        name=VECTOR_VIEW,
        entities=[customer],
        ttl=TTL,
        schema=[Field(name="vector", dtype=Bytes), Field(name="layout", dtype=String)]
        + [Field(name=n, dtype=String) for n in categorical_names()],
        source=push,
        online=True,
        tags={"layout": layout_hash()},
    )
    services = [
        FeatureService(name=name, features=[offline], tags={"model": name.rsplit("_", 1)[0]}) for name in SERVICES
    ]
    return [customer, tables, vector_source, push, offline, online, *services]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a state file whole or not at all (temp file, then rename): a crash mid-write must not
    leave a torn file that later reads fail on."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def open_store(settings: Settings, *, apply: bool = True) -> Any:
    """A FeatureStore for the workspace; registers the definitions when they changed."""
    import_feast()
    from feast import FeatureStore

    store = FeatureStore(config=feast_config(settings))
    marker = settings.feast_dir / "applied.json"
    wanted = {"layout": layout_hash(), "tables": str(table_dir(settings)), "online": store.config.online_store.type}
    if apply and (not marker.exists() or json.loads(marker.read_text()) != wanted):
        store.apply(definitions(str(table_dir(settings) / "*.parquet")))
        _write_json(marker, wanted)
    return store


def write_feature_table(frame: pd.DataFrame, settings: Settings) -> list[Path]:
    """Write computed features as one offline table per cutoff (atomic: temp file, then rename)."""
    out: list[Path] = []
    table_dir(settings).mkdir(parents=True, exist_ok=True)
    created = pd.Timestamp.now(tz="UTC").as_unit("us")
    for cutoff, part in frame.groupby("cutoff", sort=True):
        part = part.drop(columns=["cutoff"]).copy()
        part.insert(1, "event_timestamp", pd.Timestamp(cutoff).as_unit("us"))
        part["created"] = created
        for col in ("event_timestamp", "created"):
            part[col] = part[col].astype("datetime64[us, UTC]")
        path = table_path(settings, pd.Timestamp(cutoff))
        tmp = path.with_name("." + path.name + ".tmp")
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp)
        tmp.replace(path)
        out.append(path)
    return out


def feature_tables(settings: Settings) -> list[Path]:
    return sorted(table_dir(settings).glob("as_of=*.parquet"))


def pack(frame: pd.DataFrame) -> pd.DataFrame:
    """Feature rows (customer_id, cutoff or event_timestamp, features) -> the online view's rows."""
    names = numeric_names()
    matrix = np.ascontiguousarray(frame[names].to_numpy(dtype=np.float64))
    ts_col = "event_timestamp" if "event_timestamp" in frame.columns else "cutoff"
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "event_timestamp": pd.to_datetime(frame[ts_col], utc=True).to_numpy(),
            "vector": [row.tobytes() for row in matrix],
            "layout": layout_hash(),
        }
    )
    for name in categorical_names():
        out[name] = frame[name].astype(object).where(frame[name].notna(), None).to_numpy()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out


def push_features(store: Any, frame: pd.DataFrame, chunk_rows: int = 20_000) -> int:
    """Write feature rows to the online store through the push source, in chunks."""
    total = 0
    for start in range(0, len(frame), chunk_rows):
        rows = pack(frame.iloc[start : start + chunk_rows])
        store.write_to_online_store(VECTOR_VIEW, rows)
        total += len(rows)
    return total


def materialize(settings: Settings, chunk_rows: int = 20_000) -> dict[str, Any]:
    """Load the newest feature values into the online store, in bounded memory.

    Incremental: remembers the newest table it loaded and skips the work when nothing is
    newer. Reads the table in row groups of `chunk_rows`, so memory stays bounded.
    """
    started = time.perf_counter()
    tables = feature_tables(settings)
    if not tables:
        raise FileNotFoundError("no feature tables yet: run `journey features build --as-of T` first")
    newest = tables[-1]
    state_path = settings.feast_dir / "materialized.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("table") == newest.name and state.get("layout") == layout_hash():
        return {"ok": True, "table": newest.name, "rows": 0, "skipped": True, "seconds": 0.0}
    store = open_store(settings)
    pf = pq.ParquetFile(newest)
    rows = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        rows += push_features(store, frame, chunk_rows)
    _write_json(state_path, {"table": newest.name, "layout": layout_hash(), "rows": rows})
    return {
        "ok": True,
        "table": newest.name,
        "rows": rows,
        "skipped": False,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _online_reader(store: Any) -> tuple[Any, Any, tuple[str, ...]]:
    """(provider, online feature view, feature names), looked up once per FeatureStore.

    Reads go to the provider's `online_read` (the SQLite or Redis store's own read) rather than
    `get_online_features`: for 100 customers the SDK's request planning and response building
    cost ~3.7 ms around a read of ~1.5 ms."""
    cached = getattr(store, "_journey_online_reader", None)
    if cached is None:
        names = ("vector", "layout", *categorical_names())
        cached = (store._get_provider(), store.get_feature_view(VECTOR_VIEW), names)
        store._journey_online_reader = cached
    return cached


def _proto_value(value: Any) -> Any:
    """A Feast ValueProto -> its Python value (None when unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


def _online_request(store: Any, customer_ids: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """(provider, online_read keyword arguments) for these customers."""
    import_feast()
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    provider, view, requested = _online_reader(store)
    keys = [EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=str(c))]) for c in customer_ids]
    # a fresh list each call: the Redis store appends its timestamp field to the list it is given
    return provider, {"config": store.config, "table": view, "entity_keys": keys, "requested_features": list(requested)}


def _online_arrays(
    rows: Sequence[tuple[Any, Any]], n: int
) -> tuple[np.ndarray, dict[str, list[str | None]], np.ndarray, np.ndarray]:
    """online_read's rows -> read_online_arrays' arrays."""
    names = numeric_names()
    cats = categorical_names()
    matrix = np.full((n, len(names)), np.nan)
    found = np.zeros(n, dtype=bool)
    cutoffs = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    categoricals: dict[str, list[str | None]] = {c: [None] * n for c in cats}
    layout = layout_hash()
    for i, (stamp, values) in enumerate(rows):
        if not values:
            continue
        blob, lay = _proto_value(values.get("vector")), _proto_value(values.get("layout"))
        if blob is None or lay != layout:
            continue
        matrix[i] = np.frombuffer(blob, dtype=np.float64)
        found[i] = True
        if stamp is not None:  # a datetime, UTC (naive ones are UTC too)
            cutoffs[i] = np.datetime64(stamp.replace(tzinfo=None) if stamp.utcoffset() is None else
                                       stamp.astimezone(timezone.utc).replace(tzinfo=None), "us")  # fmt: skip
        for c in cats:
            categoricals[c][i] = _proto_value(values.get(c))
    return matrix, categoricals, cutoffs, found


def read_online_arrays(
    store: Any, customer_ids: Sequence[str], now: pd.Timestamp
) -> tuple[np.ndarray, dict[str, list[str | None]], np.ndarray, np.ndarray]:
    """Online features as stored: (matrix n x k, categoricals, feature cutoffs as UTC
    datetime64[us] with NaT where not found, found mask).

    Values are as of each row's cutoff (not aged; read_online ages them). Missing customers
    get NaN rows and found=False.
    """
    provider, request = _online_request(store, customer_ids)
    return _online_arrays(provider.online_read(**request), len(customer_ids))


def reads_async(store: Any) -> bool:
    """Whether the online store reads without blocking the event loop (Redis: redis.asyncio)."""
    return bool(getattr(store.config.online_store, "type", None) == "redis")


async def read_online_async(store: Any, customer_ids: Sequence[str], now: pd.Timestamp) -> pd.DataFrame:
    """`read_online` through the store's asynchronous client (`reads_async(store)` stores only): an
    API worker awaits Redis on its event loop instead of sending the request to a thread."""
    provider, request = _online_request(store, customer_ids)
    rows = await provider.online_read_async(**request)
    return _aged_frame(customer_ids, now, _online_arrays(rows, len(customer_ids)))


def read_online(store: Any, customer_ids: Sequence[str], now: pd.Timestamp) -> pd.DataFrame:
    """Online features aged to `now`: customer_id, cutoff (= now), feature_time, found, features...

    `feature_time` is when the stored row was computed; aging features (days since ...,
    tenure, recency ratios, the stage) are moved forward to `now` by the batch definitions
    (features.journeys.aging). Unknown customers get all-missing rows and found=False.
    """
    return _aged_frame(customer_ids, now, read_online_arrays(store, customer_ids, now))


def _aged_frame(
    customer_ids: Sequence[str],
    now: pd.Timestamp,
    arrays: tuple[np.ndarray, dict[str, list[str | None]], np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """read_online_arrays' arrays aged to `now`, as the online frame."""
    from features.journeys.aging import age_arrays

    matrix, categoricals, cutoffs, found = arrays
    names = numeric_names()
    now64 = np.datetime64(now.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64(), "us")
    elapsed = np.where(found, (now64 - cutoffs) / np.timedelta64(1, "s") / 86400.0, 0.0)
    stage_name = "journey_stage"
    if found.any():
        stages = np.asarray(categoricals.get(stage_name, [None] * len(found)), dtype=object)
        matrix, stages = age_arrays(matrix, names, stages, elapsed)
        if stage_name in categoricals:
            categoricals[stage_name] = [s if f else None for s, f in zip(stages, found, strict=True)]
    ids = np.empty(len(found), dtype=object)
    ids[:] = list(customer_ids)
    return _online_frame(ids, np.full(len(found), now64), cutoffs, found, matrix, names, categoricals)


_FRAME_COLUMNS: dict[tuple[str, ...], pd.Index] = {}


def _online_frame(
    ids: np.ndarray,
    cutoff: np.ndarray,
    feature_time: np.ndarray,
    found: np.ndarray,
    matrix: np.ndarray,
    names: list[str],
    categoricals: dict[str, list[str | None]],
) -> pd.DataFrame:
    """The online frame: customer_id, cutoff, feature_time, found, the numeric features, the categoricals.

    Built from pandas blocks directly (one float64 block for the features, as `pd.concat` makes
    it): the public constructors cost ~0.4 ms for a one-customer request, ~10% of its time,
    against ~0.04 ms here. Falls back to the public path if pandas' internals differ."""
    n = len(ids)
    utc = pd.DatetimeTZDtype("us", "UTC")
    cut = pd.arrays.DatetimeArray._from_sequence(cutoff, dtype=utc)
    seen = pd.arrays.DatetimeArray._from_sequence(feature_time, dtype=utc)
    cats = list(categoricals)
    try:
        from pandas.core.internals import BlockManager
        from pandas.core.internals.api import make_block

        key = (*names, "|", *cats)
        columns = _FRAME_COLUMNS.get(key)
        if columns is None:
            columns = _FRAME_COLUMNS[key] = pd.Index(["customer_id", "cutoff", "feature_time", "found", *names, *cats])
        k = len(names)
        objects = np.empty((len(cats), n), dtype=object)
        for j, c in enumerate(cats):
            objects[j, :] = categoricals[c]
        blocks = [
            make_block(ids.reshape(1, n), placement=slice(0, 1), ndim=2),
            make_block(cut, placement=slice(1, 2), ndim=2),
            make_block(seen, placement=slice(2, 3), ndim=2),
            make_block(np.asarray(found, dtype=bool).reshape(1, n), placement=slice(3, 4), ndim=2),
            make_block(np.ascontiguousarray(matrix.T), placement=slice(4, 4 + k), ndim=2),
        ]
        if cats:
            blocks.append(make_block(objects, placement=slice(4 + k, 4 + k + len(cats)), ndim=2))
        manager = BlockManager(blocks, [columns, pd.RangeIndex(n)], verify_integrity=False)
        return pd.DataFrame._from_mgr(manager, axes=manager.axes)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, TypeError, ValueError):
        head = pd.DataFrame({"customer_id": ids, "cutoff": cut, "feature_time": seen, "found": found})
        parts = [head, pd.DataFrame(matrix, columns=names), pd.DataFrame(categoricals, dtype=object)]
        return pd.concat(parts, axis=1)


def historical_features(entity_df: pd.DataFrame, service: str, settings: Settings) -> pd.DataFrame:
    """Point-in-time join through Feast: entity_df(customer_id, event_timestamp) -> features as of each row."""
    store = open_store(settings)
    entity = entity_df[["customer_id", "event_timestamp"]].copy()
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    job = store.get_historical_features(entity_df=entity, features=store.get_feature_service(service))
    out = job.to_df()
    return out.sort_values(["event_timestamp", "customer_id"]).reset_index(drop=True)
