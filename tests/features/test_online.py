"""Feast: offline tables, materialize, online reads, pushes and point-in-time joins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.settings import get_settings
from features.events.ingest import append_events
from features.events.store import EventStore
from features.journeys import compute_features
from features.online import (
    historical_features,
    materialize,
    numeric_names,
    open_store,
    read_online,
    write_feature_table,
)
from features.realtime import refresh_online
from support import need_service

T1 = pd.Timestamp("2025-03-01", tz="UTC")
T2 = pd.Timestamp("2025-04-01", tz="UTC")


def events(rows: list[tuple[str, str, str, float | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "event_time", "event_type", "value"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype("datetime64[us, UTC]")
    frame["event_id"] = [f"e{i}-{c}" for i, c in enumerate(frame["customer_id"])]
    frame["channel"] = "web"
    frame["session_id"] = None
    frame["properties"] = None
    return frame[
        ["event_id", "customer_id", "event_time", "event_type", "channel", "session_id", "value", "properties"]
    ]


HISTORY = events(
    [
        ("a", "2025-01-05T10:00:00", "session_start", None),
        ("a", "2025-01-05T10:01:00", "product_view", None),
        ("a", "2025-01-05T10:02:00", "add_to_cart", None),
        ("a", "2025-01-05T10:05:00", "purchase", 40.0),
        ("a", "2025-02-20T09:00:00", "purchase", 60.0),
        ("b", "2025-02-10T12:00:00", "session_start", None),
        ("b", "2025-02-10T12:03:00", "add_to_cart", None),
        ("c", "2025-03-15T08:00:00", "purchase", 25.0),
    ]
)


@pytest.fixture
def built(workspace: Path) -> Path:
    settings = get_settings()
    store = EventStore(settings.events_dir)
    append_events(store, HISTORY, pd.Timestamp("2025-06-01", tz="UTC"))
    frame = compute_features(store.glob, [T1, T2])
    write_feature_table(frame, settings)
    return workspace


def test_materialize_then_read_equals_the_offline_table(built: Path) -> None:
    settings = get_settings()
    summary = materialize(settings)
    assert summary["rows"] == 3 and not summary["skipped"]
    assert materialize(settings)["skipped"], "a second materialize with nothing new does no work"
    offline = compute_features(EventStore(settings.events_dir).glob, [T2]).set_index("customer_id")
    online = read_online(open_store(settings), ["a", "b", "c", "zz"], now=T2).set_index("customer_id")
    assert online["found"].tolist() == [True, True, True, False]
    names = numeric_names()
    np.testing.assert_allclose(
        online.loc[["a", "b", "c"], names].to_numpy(float),
        offline.loc[["a", "b", "c"], names].to_numpy(float),
        equal_nan=True,
    )
    assert online.loc["zz", names].isna().all()


def test_aging_features_move_forward_at_read_time(built: Path) -> None:
    from features.journeys.definitions import aging_features

    settings = get_settings()
    materialize(settings)
    aging = list(aging_features())
    assert aging, "recency features must be marked as aging"
    later = T2 + pd.Timedelta(days=10)
    now = read_online(open_store(settings), ["a"], now=T2).iloc[0]
    after = read_online(open_store(settings), ["a"], now=later).iloc[0]
    for name in aging:
        if pd.notna(now[name]):
            assert after[name] == pytest.approx(now[name] + 10)


def test_push_after_new_events_equals_a_batch_recomputation(built: Path) -> None:
    settings = get_settings()
    materialize(settings)
    now = pd.Timestamp("2025-04-10T12:00:00", tz="UTC")
    new = events([("b", "2025-04-10T11:00:00", "purchase", 99.0), ("b", "2025-04-10T11:30:00", "review_written", None)])
    store = EventStore(settings.events_dir)
    written, _, customers = append_events(store, new, now)
    assert written == 2 and customers == ["b"]
    assert refresh_online(customers, settings=settings, now=now) == 1
    online = read_online(open_store(settings), ["b"], now=now).set_index("customer_id")
    batch = compute_features(store.glob, [now]).set_index("customer_id")
    names = numeric_names()
    np.testing.assert_allclose(
        online.loc[["b"], names].to_numpy(float), batch.loc[["b"], names].to_numpy(float), equal_nan=True, atol=1e-9
    )


def test_historical_features_are_a_point_in_time_join(built: Path) -> None:
    settings = get_settings()
    entity = pd.DataFrame(
        {
            "customer_id": ["a", "a", "c"],
            "event_timestamp": [T1 + pd.Timedelta(days=5), T2 + pd.Timedelta(days=1), T2],
        }
    )
    joined = historical_features(entity, "churn_v1", settings)
    assert len(joined) == 3
    offline = compute_features(EventStore(settings.events_dir).glob, [T1, T2]).set_index(["customer_id", "cutoff"])
    by_time = joined.set_index(["customer_id", "event_timestamp"])
    name = numeric_names()[0]
    # a on T1+5 days sees the T1 table, a on T2+1 sees T2; c has no row at T1 but one at T2.
    assert by_time.loc[("a", T1 + pd.Timedelta(days=5)), name] == pytest.approx(
        offline.loc[("a", T1), name], nan_ok=True
    )
    assert by_time.loc[("a", T2 + pd.Timedelta(days=1)), name] == pytest.approx(
        offline.loc[("a", T2), name], nan_ok=True
    )


@pytest.mark.integration
def test_redis_online_store(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    monkeypatch.setenv("JOURNEY_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("JOURNEY_FEAST_PROJECT", f"journeyml_test_{os.getpid()}")
    settings = get_settings()
    summary = materialize(settings)
    assert summary["rows"] == 3
    store = open_store(settings)
    online = read_online(store, ["a", "nobody"], now=T2)
    assert online["found"].tolist() == [True, False]

    # Repeated reads ask Redis for the same fields: the Redis store appends its timestamp field to
    # the list it is given, and a reused list grew by one field a read (reads slowed without end).
    provider = store._get_provider()
    asked: list[int] = []
    real = provider.online_read

    def spy(**kwargs: object) -> object:
        asked.append(len(kwargs["requested_features"]))  # type: ignore[arg-type]
        return real(**kwargs)

    monkeypatch.setattr(provider, "online_read", spy)
    again = [read_online(store, ["a"], now=T2) for _ in range(4)]
    assert len(set(asked)) == 1 and len(asked) == 4
    for frame in again:
        pd.testing.assert_frame_equal(frame, online.iloc[:1])


def test_features_cli_build_materialize_get(built: Path) -> None:
    env = {**os.environ}
    run = lambda *a: subprocess.run([sys.executable, "-m", "core", *a], capture_output=True, text=True, env=env)  # noqa: E731
    out = run("features", "build", "--as-of", "2025-04-02", "--json")
    assert out.returncode == 0, out.stderr
    assert '"ok": true' in out.stdout
    assert run("features", "materialize", "--json").returncode == 0
    got = run("features", "get", "--customer", "a", "--json")
    assert got.returncode == 0 and '"source": "online"' in got.stdout
    missing = run("features", "get", "--customer", "nobody", "--json")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    bad = run("features", "build", "--as-of", "yesterday-ish", "--json")
    assert bad.returncode == 1 and "not a timestamp" in bad.stdout


def test_realtime_refresh_carries_email_consent(built: Path) -> None:
    """The packed online vector holds email_opt_in, and a refresh reads the customers table as the batch does."""
    settings = get_settings()
    assert "email_opt_in" in numeric_names()
    pd.DataFrame({
        "customer_id": ["a", "b"],
        "first_seen": pd.to_datetime(["2024-12-01", "2024-12-01"], utc=True).astype("datetime64[us, UTC]"),
        "email_opt_in": [False, True],
    }).to_parquet(settings.customers_path)  # fmt: skip
    materialize(settings)
    now = pd.Timestamp("2025-04-10T12:00:00", tz="UTC")
    assert np.isnan(read_online(open_store(settings), ["a"], now=now).iloc[0]["email_opt_in"])  # built without it
    new = events([("a", "2025-04-10T11:00:00", "page_view", None), ("b", "2025-04-10T11:00:00", "consent_change", 0.0)])
    new["event_id"] = ["consent-test-a", "consent-test-b"]
    new.loc[1, "channel"] = "email"
    store = EventStore(settings.events_dir)
    written, _, customers = append_events(store, new, now)
    assert written == 2 and customers == ["a", "b"]
    assert refresh_online(customers, settings=settings, now=now) == 2
    online = read_online(open_store(settings), ["a", "b"], now=now).set_index("customer_id")
    assert online.loc["a", "email_opt_in"] == 0.0  # the customers table
    assert online.loc["b", "email_opt_in"] == 0.0  # the event wins over the table's opt-in
    batch = compute_features(store.glob, [now], customers=settings.customers_path).set_index("customer_id")
    names = numeric_names()
    np.testing.assert_allclose(
        online.loc[["a", "b"], names].to_numpy(float), batch.loc[["a", "b"], names].to_numpy(float),
        equal_nan=True, atol=1e-9,
    )  # fmt: skip
