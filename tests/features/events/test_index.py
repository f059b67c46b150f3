"""The event store's per-customer file index: readers of a few customers open only their files,
and always get what a scan of the whole store gives (old batches without an index, crashes
mid-commit, duplicates)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features.events.ingest as ingest_module
import features.events.store as store_module
from benchmarks.bench_refresh import full_scan
from core.contract import EVENT_SCHEMA
from core.settings import get_settings
from features.events.ingest import append_events, ingest_files
from features.events.store import INDEX_DIR, EventStore, customer_keys
from features.realtime import customer_history

NOW = pd.Timestamp("2025-06-01", tz="UTC")


def assert_same_history(store: EventStore, customer_ids: Sequence[str]) -> None:
    """Indexed read == full scan, row for row and dtype for dtype (the scan's row order is its hash join's)."""
    got = store.read_customers(customer_ids).to_pandas()
    want = full_scan(store, customer_ids)
    pd.testing.assert_frame_equal(
        got.sort_values("event_id").reset_index(drop=True), want.sort_values("event_id").reset_index(drop=True)
    )


def index_files(store: EventStore) -> dict[str, list[str]]:
    """batch -> the files its index lists."""
    return {
        p.stem: json.loads(pq.read_schema(p).metadata[b"files"])
        for p in sorted((store.root / INDEX_DIR).glob("*.parquet"))
    }


def events(rows: list[tuple[str, str]], prefix: str) -> pd.DataFrame:
    """Contract events from (customer_id, event day) pairs."""
    frame = pd.DataFrame(rows, columns=["customer_id", "day"])
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}-{i}" for i in range(len(frame))],
            "customer_id": frame["customer_id"],
            "event_time": (pd.to_datetime(frame["day"], utc=True) + pd.Timedelta(hours=9)).astype(
                "datetime64[us, UTC]"
            ),
            "event_type": "page_view",
            "channel": "web",
            "session_id": None,
            "value": np.nan,
            "properties": None,
        }
    )


@pytest.fixture
def simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EventStore, pd.DataFrame]:
    """Simulated events in five batches: three API-style appends, one ingest large enough for the
    compacted path, and a first batch whose index is removed (as if written before the index)."""
    from features.simulator import simulate, write_simulation

    sim = simulate(300, 90, seed=11)
    clean = sim.clean_events()
    batch_of = np.random.default_rng(0).integers(0, 5, len(clean))
    store = EventStore(tmp_path / "events")
    append_events(store, clean[batch_of == 0], NOW)
    (old,) = index_files(store)
    (store.root / INDEX_DIR / f"{old}.parquet").unlink()
    for b in (1, 2, 3):
        append_events(store, clean[batch_of == b], NOW)
    big = write_simulation(sim, tmp_path / "sim")["events"]
    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "IN_MEMORY_ROWS", 500)  # spill to chunks: the stage_compacted path
        patch.setattr(EventStore, "build_index", lambda self: 0)  # keep the old batch unindexed for now
        result = ingest_files([Path(big)], store, tmp_path / "q", now=NOW)
    assert result.events_written == int((batch_of == 4).sum())
    assert len(list((store.root / "_staging").glob("*"))) == 0
    return store, clean


def test_indexed_history_equals_a_full_scan(simulated: tuple[EventStore, pd.DataFrame]) -> None:
    store, clean = simulated
    assert len(index_files(store)) == 4 and len(list((store.root / "_keys").glob("*.npy"))) == 5
    customers = sorted(clean["customer_id"].unique())
    rng = np.random.default_rng(1)
    for n in (1, 1, 1, 3, 20):
        assert_same_history(store, list(rng.choice(customers, n, replace=False)))
    assert_same_history(store, ["nobody"])
    assert store.read_customers([]).schema.equals(EVENT_SCHEMA)
    one = customers[0]
    unindexed = [f for f in store.files() if f.name.startswith(f"part-{old_batch(store)}-")]
    candidates = store.candidate_files([one])
    assert set(unindexed) <= set(candidates) < set(store.files()), "the old batch is read whole, the rest pruned"


def old_batch(store: EventStore) -> str:
    (batch,) = {p.stem for p in (store.root / "_keys").glob("*.npy")} - set(index_files(store))
    return batch


def test_build_index_covers_old_batches(simulated: tuple[EventStore, pd.DataFrame]) -> None:
    store, clean = simulated
    old = old_batch(store)
    with store.writer_lock():
        assert EventStore(store.root).build_index() == 1
        assert EventStore(store.root).build_index() == 0
    assert sorted(index_files(store)[old]) == sorted(
        str(f.relative_to(store.root)) for f in store.files() if f.name.startswith(f"part-{old}-")
    )
    one = str(clean["customer_id"].iloc[0])
    keep = set(clean.loc[clean["customer_id"] == one, "event_time"].dt.strftime("event_date=%Y-%m-%d"))
    assert {f.parent.name for f in store.candidate_files([one])} == keep, "only days with the customer's events"
    for ids in ([one], sorted(clean["customer_id"].unique())[:7]):
        assert_same_history(store, ids)


def test_the_cached_index_follows_new_batches(tmp_path: Path) -> None:
    reader, writer = EventStore(tmp_path / "events"), EventStore(tmp_path / "events")
    append_events(writer, events([("a", "2025-01-01"), ("b", "2025-01-02")], "x"), NOW)
    assert len(reader.read_customers(["a"])) == 1
    append_events(writer, events([("a", "2025-01-02"), ("c", "2025-01-03")], "y"), NOW)
    assert len(reader.read_customers(["a"])) == 2 and len(reader.read_customers(["c"])) == 1
    assert [f.parent.name for f in reader.candidate_files(["b"])] == ["event_date=2025-01-02"]


def test_files_outside_any_batch_are_always_read(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events")
    append_events(store, events([("a", "2025-01-01")], "x"), NOW)
    foreign = store.root / "event_date=2025-01-01" / "part-0.parquet"
    pq.write_table(
        pa.Table.from_pandas(events([("a", "2025-01-01"), ("z", "2025-01-01")], "f"), schema=EVENT_SCHEMA), foreign
    )
    assert foreign in store.candidate_files(["nobody"])
    assert_same_history(store, ["a"])
    assert_same_history(store, ["z"])


def test_key_collisions_only_add_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "customer_keys", lambda ids: np.zeros(len(ids), np.uint64))
    store = EventStore(tmp_path / "events")
    append_events(store, events([("a", "2025-01-01"), ("b", "2025-01-02")], "x"), NOW)
    assert len(store.candidate_files(["a"])) == 2
    assert store.read_customers(["a"]).column("customer_id").to_pylist() == ["a"]


def test_resent_events_change_nothing(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events")
    first = events([("a", "2025-01-01"), ("a", "2025-01-02"), ("b", "2025-01-02")], "x")
    assert append_events(store, first, NOW)[:2] == (3, 0)
    before = (store.files(), index_files(store))
    assert append_events(store, first, NOW)[:2] == (0, 3)
    assert append_events(store, pd.concat([first.iloc[:1], first.iloc[:1]]), NOW)[:2] == (0, 2)
    assert (store.files(), index_files(store)) == before
    mixed = pd.concat([first.iloc[:1], events([("a", "2025-01-03")], "y")])
    assert append_events(store, mixed, NOW)[:2] == (1, 1)
    assert len(store.read_customers(["a"])) == 3
    assert_same_history(store, ["a", "b"])


def crash_at(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the store's n-th os.replace from now (0 = the intent's) die, as a kill -9 would."""
    calls = iter(range(10**6))
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if next(calls) == n:
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(store_module.os, "replace", replace)


@pytest.mark.parametrize("n", range(5))
def test_a_crash_mid_commit_leaves_the_index_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """The batch has 2 data files, its keys and its index: 1 intent + 4 renames. Killed at any
    of them, a reader still equals a full scan, and recovery ends with every file indexed."""
    store = EventStore(tmp_path / "events")
    append_events(store, events([("a", "2025-01-01"), ("b", "2025-01-02")], "x"), NOW)
    crash_at(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        append_events(store, events([("a", "2025-01-02"), ("c", "2025-01-03"), ("b", "2025-01-03")], "y"), NOW)
    monkeypatch.undo()
    reader = EventStore(store.root)
    for ids in (["a"], ["b"], ["c"], ["a", "b", "c"]):
        assert_same_history(reader, ids)  # mid-commit, before any recovery
    committed = reader.recover() == 1
    assert not list(store.root.glob(f"{INDEX_DIR}/.*")) and not list(store.root.glob("event_date=*/.*"))
    indexed = index_files(reader)
    assert len(indexed) == (2 if committed else 1) and committed == (n > 0)
    listed = sorted(f for files in indexed.values() for f in files)
    assert listed == [str(f.relative_to(store.root)) for f in reader.files()]
    assert reader.count() == (5 if committed else 2)
    for ids in (["a"], ["b"], ["c"], ["a", "b", "c"]):
        assert_same_history(reader, ids)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 6)), min_size=1, max_size=15),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
    asked=st.lists(st.sampled_from("abcdefghz"), min_size=1, max_size=4),
)
def test_any_batches_any_customers(batches: list[tuple[list[tuple[str, int]], bool]], asked: list[str]) -> None:
    """Whatever the batches, whichever lost their index (old batches), any customers asked."""
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "events")
        for n, (rows, indexed) in enumerate(batches):
            before = set(index_files(store))
            append_events(store, events([(c, f"2025-01-0{d}") for c, d in rows], f"b{n}"), NOW)
            if not indexed:
                for batch in set(index_files(store)) - before:
                    (store.root / INDEX_DIR / f"{batch}.parquet").unlink()
        assert_same_history(store, asked)


def test_customer_keys_are_64_bit_fnv_1a() -> None:
    """Persisted in every index: a change here would silently make old indexes miss customers."""

    def fnv1a(text: str) -> int:
        h = 0xCBF29CE484222325
        for byte in text.encode():
            h = ((h ^ byte) * 0x100000001B3) % 2**64
        return h

    ids = ["c000001", "", "é-ü", "x" * 40]
    assert customer_keys(ids).tolist() == [fnv1a(i) for i in ids]


def test_customer_history_uses_one_cached_store(workspace: Path) -> None:
    settings_ = get_settings()
    store = EventStore(settings_.events_dir)
    assert customer_history(settings_, ["a"]).empty
    append_events(store, events([("a", "2025-01-01"), ("b", "2025-01-02")], "x"), NOW)
    pd.testing.assert_frame_equal(customer_history(settings_, ["a"]), full_scan(store, ["a"]))
    append_events(store, events([("a", "2025-01-03")], "y"), NOW)
    assert customer_history(settings_, ["a"])["event_id"].tolist() == ["x-0", "y-0"]


@pytest.mark.parametrize("settle_ns", [0, store_module._SETTLE_NS])
def test_the_cached_listing_sees_files_added_to_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settle_ns: int
) -> None:
    """settle 0: every folder's listing is trusted at once, so only its changed stamp can trigger
    the new listing; the default: a folder changed just now is listed again anyway."""
    monkeypatch.setattr(store_module, "_SETTLE_NS", settle_ns)
    reader = EventStore(tmp_path / "events")
    append_events(EventStore(reader.root), events([("a", "2025-01-01")], "x"), NOW)
    assert len(reader.files()) == 1
    time.sleep(0.05)  # past any coarse timestamp tick: the next change gets a new stamp
    append_events(EventStore(reader.root), events([("b", "2025-01-01")], "y"), NOW)
    assert len(reader.files()) == 2
    assert reader.read_customers(["b"]).column("event_id").to_pylist() == ["y-0"]


def test_held_dedup_keys_follow_appends(simulated: tuple[EventStore, pd.DataFrame]) -> None:
    """A store object that served reads keeps its sorted dedup keys through later appends (merged,
    not reloaded) and they stay what a fresh object loads: a re-sent event is still a duplicate."""
    store, clean = simulated
    held = store.keys()
    assert held.size == len(clean) and np.all(held[1:] >= held[:-1])
    first = events([("late-1", "2025-03-02"), ("late-2", "2025-03-03")], "late")
    second = events([("late-3", "2025-03-04")], "later")
    for batch in (first, second):
        written, duplicates, _ = append_events(store, batch, NOW)
        assert written == len(batch) and duplicates == 0
        np.testing.assert_array_equal(store.keys(), EventStore(store.root).keys())
    assert store.keys().size == len(clean) + 3
    assert append_events(store, first, NOW)[:2] == (0, len(first))  # re-sent: nothing written
