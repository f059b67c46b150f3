"""What one API worker holds: champions, the feature store, the action policy; loaded after the fork.

- Champions come from the MLflow registry (`@champion`, resolved to a concrete version).
  Each load also refreshes a local bundle cache; when the registry is unreachable at start,
  the last-known-good champions are loaded from that cache and `/health/ready` says so.
- A poller re-resolves the aliases every `reload_interval_s`; a moved alias loads the new
  version beside the old one and swaps one reference, so no request fails during a reload.
- When the online store (Redis) fails, scoring continues with fallback (cold-start)
  features and `degraded: true`; the next request tries the store again.
"""

from __future__ import annotations

import gc
import logging
import math
import pickle
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.settings import Settings
from serving.errors import ApiError
from serving.observability import LOGGER_NAME, Metrics, log
from serving.schemas import ItemError
from serving.scoring import TASK_ORDER, Reference, primary_column, score_columns, to_results

logger = logging.getLogger(LOGGER_NAME)
STORE_RETRY_S = 0.2  # after an online-store failure, requests fall back this long before one probes it
ASYNC_READ_TIMEOUT_S = 1.0  # an awaited online read gives up after this (a healthy Redis answers in ~1 ms)


@dataclass
class Loaded:
    """An immutable snapshot: swapped as a whole on reload."""

    scorer: Any
    versions: dict[str, str]
    reference: Reference
    source: str  # registry | bundle_cache
    policy: Any = None
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)


def _cache_path(settings: Settings, task: str) -> Path:
    return settings.bundle_dir / f"{task}.pkl"


def _save_bundle(settings: Settings, task: str, model: Any, info: dict[str, Any]) -> None:
    path = _cache_path(settings, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump({"model": model, "info": info}, fh)
    tmp.replace(path)


def _load_bundle(settings: Settings, task: str) -> tuple[Any, dict[str, Any]] | None:
    path = _cache_path(settings, task)
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        data = pickle.load(fh)  # noqa: S301 - our own cache, written by this module
    return data["model"], data["info"]


def _sqlite_path(uri: str) -> str:
    """The file of a `sqlite:///path` URI ("" or ":memory:" for an in-memory database)."""
    return uri.split("://", 1)[-1][1:]


def registry_reachable(uri: str, timeout: float = 2.0) -> bool:
    """A quick look before MLflow's: it retries an unreachable database for about an hour, and
    creates whatever folders a sqlite URI names. A sqlite file in a folder that does not exist is
    unreachable; a missing file in an existing folder is a new, empty registry (MLflow creates it)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        path = _sqlite_path(uri)
        return path in ("", ":memory:") or Path(path).parent.is_dir()
    if scheme in ("postgresql", "postgres", "mysql", "mssql"):
        import socket
        from urllib.parse import urlparse

        parsed = urlparse(uri)
        if not parsed.hostname:
            return True  # a unix socket: let MLflow try
        port = parsed.port or {"mysql": 3306, "mssql": 1433}.get(scheme, 5432)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        except OSError:
            return False
    return True


def load_champions(settings: Settings) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """(models, version infos, source). Registry first; the bundle cache when it cannot be read."""
    from models.task_model import SpecMismatchError
    from training.registry import RegistryError, load_version

    models: dict[str, Any] = {}
    infos: dict[str, dict[str, Any]] = {}
    registry_down = not registry_reachable(settings.tracking_uri)
    if registry_down:
        log(logger, "registry_unreachable", error="unreachable")
    for task in TASK_ORDER if not registry_down else ():
        try:
            model, info = load_version(task, tracking_uri=settings.tracking_uri)
        except RegistryError:
            continue  # no champion for this task yet
        except SpecMismatchError as exc:
            # conf/labels/<task>.yaml changed since the champion was trained: it must not score
            # under the new definition, so the task is served by no model until one trained on it is.
            log(logger, "champion_spec_mismatch", task=task, error=str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - registry unreachable or broken: fall back below
            registry_down = True
            log(logger, "registry_unreachable", task=task, error=type(exc).__name__)
            break
        models[task], infos[task] = model, info
        _save_bundle(settings, task, model, info)
    if not registry_down:
        return models, infos, "registry"
    models, infos = {}, {}
    for task in TASK_ORDER:
        cached = _load_bundle(settings, task)
        if cached is not None:
            models[task], infos[task] = cached
    return models, infos, "bundle_cache"


def _reference(settings: Settings, scorer: Any, limit: int = 20_000) -> Reference:
    """Score (a sample of) the newest offline feature table: the population for percentiles."""
    from features.online import feature_tables

    tables = feature_tables(settings)
    if not tables or not scorer.tasks:
        return Reference()
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(tables[-1])
    frame = next(pf.iter_batches(batch_size=limit)).to_pandas().rename(columns={"event_timestamp": "cutoff"})
    table = scorer.score(frame, reasons=False)
    return Reference.from_table(table)


GC_THRESHOLDS = (10_000, 10, 10)


def settle_heap() -> None:
    """Move everything loaded so far (models, Feast, pandas, MLflow: hundreds of thousands of
    objects) out of the garbage collector's sight: each full collection would otherwise walk them
    all, a pause of tens of milliseconds landing on whichever request triggered it.

    Requests still have their objects collected, but a collection now starts after 10,000 new
    container objects instead of 700: a 100-customer answer allocates thousands of dicts and lists
    that reference counting frees when the request ends, and at 700 the collector ran ~4 times
    per such request on them and moved survivors up to the older generations (measured in
    process, 300 requests: 187 ms of collections against 12 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _registry_stamp(uri: str) -> tuple[int, ...] | None:
    """For a SQLite registry, (mtime, size) of its files: unchanged means no alias moved, so the
    poller need not ask MLflow (~12 ms of a worker's CPU each time). None (ask MLflow) for other
    backends, and when a file changed in the last 2 s: a later write in the same coarse timestamp
    tick could leave the stamp equal."""
    if uri.split(":", 1)[0].lower() != "sqlite":
        return None
    path = _sqlite_path(uri)
    if path in ("", ":memory:"):
        return None
    stamp: list[int] = []
    for name in (path, path + "-wal"):  # a WAL database writes to its -wal file first
        try:
            st = Path(name).stat()
        except OSError:
            stamp += [0, 0]
            continue
        if st.st_mtime_ns > time.time_ns() - 2_000_000_000:
            return None
        stamp += [st.st_mtime_ns, st.st_size]
    return tuple(stamp)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = False
        self.loaded: Loaded | None = None
        self.feature_store: Any = None
        self.events_store: Any = None
        self.metrics: Metrics | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._store_failed_at: float | None = None  # when the online store last failed (None: healthy)
        self._store_probe = threading.Lock()
        self.last_reload_error: str | None = None
        self._registry_seen: tuple[int, ...] | None = None  # the SQLite registry's stamp when last found current

    @property
    def scores_inline_safely(self) -> bool:
        """Whether a small request may be read and scored on the event loop: only with the local
        SQLite online store, healthy. A networked store (Redis) can hang rather than refuse; its
        reads are awaited (`reads_async`) or go to the threadpool, so a hung store holds those
        requests to its timeout but never the event loop (health checks and other requests keep
        answering)."""
        return not self.settings.redis_url and self._store_failed_at is None

    @property
    def reads_async(self) -> bool:
        """Whether a small request should await its online read on the event loop and be scored
        there, with no threadpool hop: an online store with an asynchronous client (Redis), healthy.
        While the store is failing, requests answer degraded from the threadpool as before: under
        a saturating load the loop, scoring every request itself, answered /health/live in
        250-500 ms during a Redis hang, against ~70 ms with the threadpool."""
        from features.online import reads_async

        return self.feature_store is not None and self._store_failed_at is None and reads_async(self.feature_store)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        runtime = cls(settings)
        runtime.load()
        runtime._poller = threading.Thread(target=runtime._poll, name="champion-poller", daemon=True)
        runtime._poller.start()
        return runtime

    # ---- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        from features.events.store import EventStore
        from features.online import open_store

        self.feature_store = open_store(self.settings)
        self.events_store = EventStore(self.settings.events_dir)
        self.loaded = self._build(*load_champions(self.settings))
        settle_heap()
        self.ready = bool(self.loaded.versions)
        log(logger, "models_loaded", versions=self.loaded.versions, source=self.loaded.source)

    def _build(self, models: dict[str, Any], infos: dict[str, dict[str, Any]], source: str) -> Loaded:
        from models.scorer import Scorer
        from training.nba import load_policy

        scorer = Scorer(models, attribution=self.settings.reasons_method)
        versions = {t: str(info.get("version")) for t, info in infos.items()}
        try:
            if source == "registry":
                policy = load_policy(self.settings)
            else:  # registry out of reach: the catalog's priors now, not after MLflow's minutes of retries
                from training.nba import Policy, load_catalog

                policy = Policy(
                    catalog=load_catalog(), holdout_share=self.settings.holdout_share, priors_only=True, version=None
                )
        except Exception as exc:  # noqa: BLE001 - scores without actions beat no scores
            log(logger, "policy_unavailable", error=type(exc).__name__)
            policy = None
        if policy is not None and getattr(policy, "version", None):
            versions["nba"] = str(policy.version)
        return Loaded(
            scorer=scorer,
            versions=versions,
            reference=_reference(self.settings, scorer),
            source=source,
            policy=policy,
            infos=infos,
        )

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            try:
                self.reload_if_moved()
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded models
                self.last_reload_error = type(exc).__name__
                log(logger, "reload_failed", error=type(exc).__name__)

    def current_versions(self) -> dict[str, str]:
        from training.registry import alias_version, client, registered_name

        if not registry_reachable(self.settings.tracking_uri):
            raise ConnectionError("the registry is unreachable")
        cl = client(self.settings.tracking_uri)
        out: dict[str, str] = {}
        for task in TASK_ORDER:
            mv = alias_version(cl, registered_name(task), "champion")
            if mv is not None:
                out[task] = str(mv.version)
        return out

    def reload_if_moved(self) -> bool:
        loaded = self.loaded
        stamp = _registry_stamp(self.settings.tracking_uri)
        if stamp is not None and stamp == self._registry_seen and loaded is not None and loaded.source == "registry":
            return False
        wanted = self.current_versions()
        have = {t: v for t, v in (loaded.versions if loaded else {}).items() if t in TASK_ORDER}
        if wanted == have and loaded is not None and loaded.source == "registry":
            self._registry_seen = stamp
            return False
        new = self._build(*load_champions(self.settings))
        if new.source != "registry":
            return False
        self.loaded = new  # one reference swap: requests in flight keep the snapshot they started with
        self.ready = bool(new.versions)
        settle_heap()
        log(logger, "models_reloaded", versions=new.versions)
        return True

    # ---- status and metrics ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "models": dict(loaded.versions) if loaded else {},
            "model_source": loaded.source if loaded else None,
            "last_known_good": bool(loaded and loaded.source == "bundle_cache"),
            "online_store": self.settings.redis_url and "redis" or "sqlite",
            "policy": "uplift" if loaded and loaded.policy is not None and not loaded.policy.priors_only else "priors",
        }

    def attach_metrics(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        if self.metrics is None or self.loaded is None:
            return
        for task, version in self.loaded.versions.items():
            if version.isdigit():
                self.metrics.model_version.labels(task).set(float(version))

    def close(self) -> None:
        self._stop.set()

    # ---- features ----------------------------------------------------------------------------
    def _may_read(self) -> tuple[bool, bool]:
        """(read the online store now?, holding the probe lock?).

        After a failure, one request at a time probes the store (its client may wait for its
        timeout) and the others fall back at once, so an outage degrades answers rather than
        stalling them."""
        if self._store_failed_at is None:
            return True, False
        if time.monotonic() - self._store_failed_at < STORE_RETRY_S or not self._store_probe.acquire(False):
            return False, False
        return True, True

    def _store_failed(self, exc: Exception, ids: list[str], now: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
        self._store_failed_at = time.monotonic()
        log(logger, "online_store_unavailable", error=type(exc).__name__)
        return self._fallback(ids, now)

    def _online(self, ids: list[str], now: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
        """Online features aged to now, and a degraded flag per row (the store failed)."""
        from features.online import read_online

        read, probing = self._may_read()
        if not read:
            return self._fallback(ids, now)
        try:
            frame = read_online(self.feature_store, ids, now)
            self._store_failed_at = None
            return frame, np.zeros(len(ids), dtype=bool)
        except Exception as exc:  # noqa: BLE001 - the online store is down: fall back, never 5xx
            return self._store_failed(exc, ids, now)
        finally:
            if probing:
                self._store_probe.release()

    async def _online_async(self, ids: list[str], now: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
        """`_online` through the store's asynchronous client: the event loop keeps serving while
        Redis answers, or hangs (the read gives up after ASYNC_READ_TIMEOUT_S)."""
        import asyncio

        from features.online import read_online_async

        read, probing = self._may_read()
        if not read:
            return self._fallback(ids, now)
        try:
            frame = await asyncio.wait_for(read_online_async(self.feature_store, ids, now), ASYNC_READ_TIMEOUT_S)
            self._store_failed_at = None
            return frame, np.zeros(len(ids), dtype=bool)
        except Exception as exc:  # noqa: BLE001 - the online store is down or hung: fall back, never 5xx
            return self._store_failed(exc, ids, now)
        finally:
            if probing:
                self._store_probe.release()

    def _fallback(self, ids: list[str], now: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
        if self.metrics is not None:
            self.metrics.degraded.inc()
        return self._empty_features(ids, now), np.ones(len(ids), dtype=bool)

    @staticmethod
    def _empty_features(ids: list[str], now: pd.Timestamp) -> pd.DataFrame:
        from features.online import categorical_names, numeric_names

        frame = pd.DataFrame(np.full((len(ids), len(numeric_names())), np.nan), columns=numeric_names())
        for name in categorical_names():
            frame[name] = None
        frame.insert(0, "customer_id", ids)
        frame.insert(1, "cutoff", pd.Series([now] * len(ids), dtype="datetime64[us, UTC]"))
        frame.insert(2, "feature_time", pd.NaT)
        frame.insert(3, "found", False)
        return frame

    # ---- scoring -----------------------------------------------------------------------------
    def score(
        self, ids: list[str], tasks: list[str] | None, explain: bool, actions: bool
    ) -> tuple[list[dict[str, Any]], bool, dict[str, str]]:
        loaded = self.loaded
        assert loaded is not None
        now = pd.Timestamp.now(tz="UTC")
        features, degraded = self._online(ids, now)
        return self._score(loaded, features, degraded, tasks, explain, actions)

    async def score_async(
        self, ids: list[str], tasks: list[str] | None, explain: bool, actions: bool
    ) -> tuple[list[dict[str, Any]], bool, dict[str, str]]:
        """`score` with the online read awaited (`reads_async` stores); the scoring itself runs on
        the caller's thread, so keep it to small requests."""
        loaded = self.loaded
        assert loaded is not None
        now = pd.Timestamp.now(tz="UTC")
        features, degraded = await self._online_async(ids, now)
        return self._score(loaded, features, degraded, tasks, explain, actions)

    def _score(
        self,
        loaded: Loaded,
        features: pd.DataFrame,
        degraded: np.ndarray,
        tasks: list[str] | None,
        explain: bool,
        actions: bool,
    ) -> tuple[list[dict[str, Any]], bool, dict[str, str]]:
        table = score_columns(
            features, loaded.scorer, loaded.policy, loaded.reference, tasks=tasks, explain=explain, actions=actions
        )
        if "found" in features.columns:  # unknown customers are cold starts, whatever the model thinks
            table["cold_start"] = np.asarray(table["cold_start"], dtype=bool) | ~features["found"].to_numpy(dtype=bool)
        self._observe(table, features)
        return to_results(table, features, loaded.versions, degraded), bool(degraded.any()), dict(loaded.versions)

    def _observe(self, table: dict[str, Any], features: pd.DataFrame) -> None:
        if self.metrics is None:
            return
        for task in TASK_ORDER:
            col = primary_column(task, list(table.keys()))
            if col is not None and task != "clv":
                histogram = self.metrics.scores.labels(task)
                for v in np.asarray(table[col], dtype=float).tolist():
                    if math.isfinite(v):
                        histogram.observe(v)
        if "feature_time" in features.columns:
            times = features["feature_time"]
            if times.dtype.kind != "M":
                times = pd.to_datetime(times, utc=True, errors="coerce")
            stamps = times.to_numpy(dtype="datetime64[us]")  # UTC (a tz-aware column is converted)
            now = np.datetime64(pd.Timestamp.now(tz="UTC").tz_convert(None).to_datetime64(), "us")
            ages = (now - stamps) / np.timedelta64(1, "s")
            for age in ages.tolist():
                if math.isfinite(age):
                    self.metrics.feature_age.observe(age)

    def score_inline(
        self, customer_id: str, events: pd.DataFrame, as_of: pd.Timestamp | None, tasks: list[str] | None, explain: bool
    ) -> tuple[list[dict[str, Any]], bool, dict[str, str]]:
        from features.journeys import compute_features

        loaded = self.loaded
        assert loaded is not None
        cutoff = as_of if as_of is not None else pd.Timestamp(events["event_time"].max())
        features = compute_features(events, [cutoff])
        if features.empty:
            raise ApiError(422, "invalid_events", f"no events at or before {cutoff.isoformat()}")
        features["feature_time"] = cutoff
        features["found"] = True
        return self._score(loaded, features, np.zeros(len(features), dtype=bool), tasks, explain, True)

    # ---- events ------------------------------------------------------------------------------
    def validate_events(
        self, items: list[dict[str, Any]], customer_id: str | None = None
    ) -> tuple[pd.DataFrame, list[ItemError]]:
        """Contract validation (the same as ingestion). Returns (valid events, one error per invalid item)."""
        import json as _json

        from features.events.validate import validate

        frame = pd.DataFrame(items)
        if "properties" in frame.columns:
            frame["properties"] = [_json.dumps(p) if isinstance(p, dict) else None for p in frame["properties"]]
        frame["event_time"] = [pd.Timestamp(t).isoformat() for t in frame["event_time"]]
        frame["_row"] = range(len(frame))
        accepted, rejects = validate(frame, pd.Timestamp.now(tz="UTC"))
        errors = [
            ItemError(index=int(r), reason=str(why)) for r, why in zip(rejects["_row"], rejects["reason"], strict=True)
        ]
        if customer_id is not None:
            other = accepted["customer_id"] != customer_id
            errors += [ItemError(index=int(r), reason="other_customer") for r in accepted.loc[other, "_row"]]
            accepted = accepted[~other]
        errors.sort(key=lambda e: e.index)
        return accepted.drop(columns=["_row"]).reset_index(drop=True), errors

    def append_events(self, events: pd.DataFrame) -> tuple[int, int, int, bool]:
        """Durably append (fsynced before returning), then refresh the customers' online features."""
        from features.events.ingest import append_events
        from features.realtime import refresh_online

        if events.empty:
            return 0, 0, 0, False
        with self._write_lock:
            written, duplicates, customers = append_events(self.events_store, events, pd.Timestamp.now(tz="UTC"))
        refreshed, degraded = 0, False
        if customers:
            try:
                refreshed = refresh_online(customers, settings=self.settings, store=self.feature_store)
            except Exception as exc:  # noqa: BLE001 - events are stored; the online view catches up later
                degraded = True
                log(logger, "online_refresh_failed", error=type(exc).__name__, customers=len(customers))
        return written, duplicates, refreshed, degraded


def wait_ready(runtime: Runtime, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime.ready:
            return True
        time.sleep(0.05)
    return runtime.ready
