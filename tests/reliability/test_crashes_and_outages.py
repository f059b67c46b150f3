"""kill -9 in the middle of each writing stage, Redis dying under load, the registry down at start, sustained load.

The scenarios live in benchmarks/reliability.py (which prints the full table with larger sizes);
these tests run them small enough for CI and assert the outcomes, not only the pass flag.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks import reliability as rel
from support import IN_CI


def _assert_kill_outcome(outcome: rel.Outcome, rows: int) -> None:
    trials = outcome.details["trials"]
    assert outcome.details["reference"][0] == rows
    assert any(t["killed"] for t in trials), f"no kill landed before the stage finished: {trials}"
    for t in trials:
        assert t["rerun_rc"] == 0, t
        assert t["final"] == outcome.details["reference"], t  # nothing lost, nothing duplicated
        assert t["leftovers"] == [], t
    assert outcome.passed, outcome.observed


def test_kill_9_during_ingestion_then_rerun(trained_home: Path, tmp_path: Path) -> None:
    source = pq.read_table(trained_home / "sim" / "events.parquet")
    events = tmp_path / "events.parquet"
    pq.write_table(source.slice(0, 80_000), events)
    outcome = rel.kill_and_rerun(rel.ingest_stage(events), tmp_path / "work", [0.1, 0.5])
    _assert_kill_outcome(outcome, 80_000)
    # A kill leaves the store as before the batch or as after it (recovery rolls forward), never half.
    assert {t["after_kill"] for t in outcome.details["trials"]} <= {"before", "after"}


def test_kill_9_during_materialization_then_rerun(trained_home: Path, tmp_path: Path) -> None:
    table = sorted((trained_home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]
    outcome = rel.kill_and_rerun(rel.materialize_stage(trained_home), tmp_path / "work", [0.4])
    _assert_kill_outcome(outcome, pq.read_metadata(table).num_rows)


def test_kill_9_during_batch_scoring_then_rerun(trained_home: Path, tmp_path: Path) -> None:
    table = sorted((trained_home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]
    stage = rel.score_stage(trained_home, rel.feature_cutoff(trained_home))
    outcome = rel.kill_and_rerun(stage, tmp_path / "work", [0.3])
    _assert_kill_outcome(outcome, pq.read_metadata(table).num_rows)
    # The destination is renamed into place whole: a kill leaves no file or the complete one.
    assert {t["after_kill"] for t in outcome.details["trials"]} <= {"before", "after"}


def need_redis_server() -> None:
    """The Redis scenarios start a private redis-server: required in CI, skipped without it elsewhere."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server is not installed")


def test_redis_killed_in_the_middle_of_a_load_test(trained_home: Path, tmp_path: Path) -> None:
    need_redis_server()
    outcome = rel.redis_outage(trained_home, tmp_path, seconds=3.0, concurrency=8)
    d = outcome.details
    assert d["unhandled"] == {}, d
    for phase in ("up", "down", "back", "overlapping"):
        assert not any(k.startswith("status_") and k != "status_200" for k in d[phase]), d  # no 5xx, no error
    assert d["up"]["full"] > 0 and d["up"].get("degraded", 0) == 0
    assert d["down"]["degraded"] > 0 and d["down"].get("full", 0) == 0
    assert d["back"]["full"] > 0 and d["back"].get("degraded", 0) == 0 and d["back"]["cold_start"] == 0
    assert outcome.passed, outcome.observed


def test_redis_hanging_never_blocks_the_event_loop(trained_home: Path, tmp_path: Path) -> None:
    need_redis_server()
    outcome = rel.redis_hang(trained_home, tmp_path, seconds=3.0, concurrency=8)
    d = outcome.details
    assert d["unhandled"] == {} and d["errors"] == 0, d
    assert d["degraded"] > 0 and d["slowest_ms"] < 3000, d  # answered degraded, held ~the 1 s socket timeout
    assert d["health_checks"] > 5 and d["health_max_ms"] < 500, d  # the event loop never waited on Redis
    assert d["after_full"] > 0, d
    assert outcome.passed, outcome.observed


def test_sustained_load_then_registry_unreachable_at_start(trained_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "served"
    shutil.copytree(trained_home, home, ignore=shutil.ignore_patterns("bundles"))
    load = rel.sustained_load(home, requests=300, concurrency=32)
    assert load.details["errors"] == 0 and load.details["n"] == 300, load.details
    assert 0 < load.details["p50_ms"] <= load.details["p99_ms"]
    assert load.passed
    # That normal start refreshed the bundle cache; now the registry is out of reach.
    assert sorted(p.name for p in (home / "bundles").glob("*.pkl"))
    outcome = rel.registry_unreachable(home, load.details["ready"])
    for label in ("unreachable PostgreSQL", "sqlite file in a missing folder"):
        seen = outcome.details[label]
        assert seen["ready"] == 200 and seen["model_source"] == "bundle_cache" and seen["last_known_good"] is True
        assert seen["models"] == load.details["ready"]["models"] and seen["score_status"] == 200
    assert not (home / "no-such-folder").exists(), "MLflow must not have been asked to create the registry"
    assert outcome.passed, outcome.observed
