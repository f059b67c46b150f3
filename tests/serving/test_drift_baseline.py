"""The drift baseline is the population a champion was tested on, built when it is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd

from core.settings import Settings
from features.events.store import EventStore
from features.online import table_path
from serving.drift import baseline_table, ensure_baseline_table


def test_missing_baseline_is_built_at_the_test_cutoff_and_reused(trained_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_home / "events", home / "events")
    if (trained_home / "customers.parquet").exists():
        shutil.copy(trained_home / "customers.parquet", home / "customers.parquet")
    settings = Settings(home=home)
    glob = EventStore(settings.events_dir).glob
    last = duckdb.sql(f"select max(event_time) from read_parquet('{glob}', hive_partitioning=false)").fetchall()[0]
    cutoff = pd.Timestamp(last[0]).tz_convert("UTC").normalize() - pd.Timedelta(days=90)

    assert ensure_baseline_table(settings, []) is None
    built = ensure_baseline_table(settings, [cutoff])
    assert built is not None and built[1] == cutoff
    path = built[0]
    assert path.exists() and path.name == table_path(settings, cutoff).name
    assert not table_path(settings, cutoff).exists(), "cached outside the offline feature view"
    frame = pd.read_parquet(path)
    seen = duckdb.sql(
        f"select count(distinct customer_id) from read_parquet('{glob}', hive_partitioning=false) "
        f"where event_time <= '{cutoff.isoformat()}'"
    ).fetchall()[0]
    assert len(frame) == seen[0] > 0, "every customer seen by the cutoff, no one after"
    assert (pd.to_datetime(frame["event_timestamp"], utc=True) == cutoff).all()

    stamp = path.stat().st_mtime_ns
    assert ensure_baseline_table(settings, [cutoff]) == (path, cutoff) and path.stat().st_mtime_ns == stamp, "reused"
    chosen, why = baseline_table([path], [cutoff], {cutoff: path})
    assert chosen == path and "test cutoff" in why
