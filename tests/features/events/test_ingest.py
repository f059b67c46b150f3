from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contract import EVENT_SCHEMA
from features.events.ingest import append_events, ingest_files
from features.events.mapping import Mapping, MappingError
from features.events.store import EventStore
from support import REPO, need_shared

NOW = pd.Timestamp("2025-06-01", tz="UTC")

CONTRACT_CSV = """customer_id,event_time,event_type,channel,value
c1,2025-01-01T10:00:00Z,page_view,web,12
c1,2025-01-01T10:05:00Z,purchase,web,30
c2,not a time,page_view,web,
c3,2025-01-02 09:00,teleport,web,
c4,2025-01-02 09:00,purchase,web,-5
c5,2025-01-02 09:00,purchase,web
"""


def run(tmp_path: Path, *paths: Path, mapping: Mapping | None = None):
    store = EventStore(tmp_path / "events")
    return store, ingest_files(list(paths), store, tmp_path / "quarantine", mapping=mapping, now=NOW)


def test_counts_add_up_and_reasons_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(CONTRACT_CSV)
    store, result = run(tmp_path, src)
    assert (result.read, result.accepted, result.duplicates, result.quarantined) == (6, 2, 0, 4)
    assert dict(result.reasons) == {"bad_timestamp": 1, "unknown_event_type": 1, "negative_amount": 1, "ragged_row": 1}
    q = pq.read_table(result.quarantine_path).to_pandas()
    assert sorted(q["row"]) == [4, 5, 6, 7]
    assert "teleport" in q.loc[q["reason"] == "unknown_event_type", "raw"].iloc[0]
    stored = store.read().to_pandas()
    assert stored["value"].tolist() == [12.0, 30.0]
    assert store.read().schema.equals(EVENT_SCHEMA)


def test_second_ingest_of_the_same_file_adds_nothing(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(CONTRACT_CSV)
    store, _ = run(tmp_path, src)
    files = store.files()
    _, again = run(tmp_path, src)
    assert (again.accepted, again.duplicates, again.quarantined) == (0, 2, 4)
    assert store.files() == files and store.count() == 2


def test_whitespace_headerless_gzip_and_jsonl(tmp_path: Path) -> None:
    ws = tmp_path / "ws.txt.gz"
    with gzip.open(ws, "wt") as fh:
        fh.write("a   2025-01-01T10:00:00Z   login   app\nb\t2025-01-01T11:00:00Z  login  web\n")
    jl = tmp_path / "e.jsonl"
    jl.write_text(
        json.dumps(
            {
                "customer_id": "j",
                "event_time": "2025-01-03T00:00:00Z",
                "event_type": "marketing_contact",
                "properties": {"action": "win_back_offer"},
            }
        )
        + "\n{broken json\n[1,2]\n"
    )
    store, result = run(tmp_path, ws, jl)
    assert (result.read, result.accepted, result.quarantined) == (5, 3, 2)
    assert dict(result.reasons) == {"bad_json": 2}
    stored = store.read().to_pandas().sort_values("customer_id")
    assert stored["customer_id"].tolist() == ["a", "b", "j"]
    assert stored["channel"].tolist() == ["app", "web", "other"]
    assert json.loads(stored["properties"].iloc[2]) == {"action": "win_back_offer"}


def test_non_utf8_and_empty_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"customer_id,event_time,event_type\nc1,2025-01-01,login\nc\xff\xfe,2025-01-01,login\n")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _, result = run(tmp_path, bad, empty, tmp_path / "missing.csv")
    assert (result.read, result.accepted, result.quarantined) == (2, 1, 1)
    assert dict(result.reasons) == {"non_utf8": 1}
    assert len(result.unreadable) == 2 and "empty" in result.unreadable[0]


def test_parquet_in_contract(tmp_path: Path) -> None:
    t = pa.table(
        {
            "event_id": ["x1", "x2", "x1"],
            "customer_id": ["a", "b", "a"],
            "event_time": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-01"], utc=True),
            "event_type": ["search", "purchase", "search"],
            "value": [None, 5.0, None],
        }
    )
    src = tmp_path / "e.parquet"
    pq.write_table(t, src)
    store, result = run(tmp_path, src)
    assert (result.read, result.accepted, result.duplicates) == (3, 2, 1)
    assert [p.parent.name for p in store.files()] == ["event_date=2025-01-01", "event_date=2025-01-02"]


def test_transactions_mapping_for_an_unseen_layout(tmp_path: Path) -> None:
    src = tmp_path / "sales.csv"
    src.write_text(
        "Kunde;Datum;Beleg;Menge;Preis\nk1;20250103;B1;2;5,5\n".replace("5,5", "5.5")
        + "k1;20250103;B1;1;1\n"
        + "k2;20250104;B2;1;10\n"
        + "k2;20250105;XB2;-1;10\n"
        + ";20250105;B3;1;10\n"
        + "k3;2025-13-45;B4;1;10\n"
    )
    mapping = Mapping.from_dict(
        {
            "kind": "transactions",
            "columns": {"customer_id": "Kunde", "event_time": "Datum"},
            "time": {"format": "yyyymmdd", "timezone": "Europe/Berlin"},
            "constants": {"channel": "store"},
            "transactions": {"order_id": "Beleg", "quantity": "Menge", "unit_price": "Preis", "cancel_prefix": "X"},
        }
    )
    store, result = run(tmp_path, src, mapping=mapping)
    assert result.read == 6 and result.balanced
    assert (result.accepted, result.quarantined) == (4, 2)
    assert dict(result.reasons) == {"missing_customer_id": 1, "bad_timestamp": 1}
    ev = store.read().to_pandas().sort_values("event_time")
    assert ev["event_type"].tolist() == ["purchase", "purchase", "refund"]
    assert ev["value"].tolist() == [12.0, 10.0, 10.0]
    assert ev["event_time"].iloc[0] == pd.Timestamp("2025-01-02T23:00Z")
    assert set(ev["channel"]) == {"store"}


def test_clickstream_mapping_by_position_without_header(tmp_path: Path) -> None:
    src = tmp_path / "clicks.tsv"
    src.write_text("u1\tview\t1735689600\nu1\tbasket\t1735689700\nu2\theartbeat\t1735689800\nu2\tzap\t1735689900\n")
    mapping = Mapping.from_dict(
        {
            "kind": "clickstream",
            "columns": {"customer_id": 0, "event_type": 1, "event_time": 2},
            "time": {"format": "epoch_s"},
            "event_map": {"view": "page_view", "basket": "add_to_cart", "heartbeat": None},
            "format": {"header": False},
        }
    )
    store, result = run(tmp_path, src, mapping=mapping)
    assert (result.read, result.accepted, result.quarantined) == (4, 2, 2)
    assert dict(result.reasons) == {"dropped_by_mapping": 1, "unknown_event_type": 1}
    assert sorted(store.read().to_pandas()["event_type"]) == ["add_to_cart", "page_view"]


def test_mapping_errors_are_clear() -> None:
    with pytest.raises(MappingError, match="not an event type"):
        Mapping.from_dict({"columns": {"customer_id": "u", "event_time": "t"}, "event_map": {"x": "nope"}})
    with pytest.raises(MappingError, match="unknown mapping keys"):
        Mapping.from_dict({"colums": {}})
    with pytest.raises(MappingError, match="quantity"):
        Mapping.from_dict({"kind": "transactions", "columns": {"customer_id": "u", "event_time": "t"}})


def test_online_retail_every_row_accounted_for(tmp_path: Path) -> None:
    src = need_shared("online_retail.parquet")
    mapping = Mapping.load(REPO / "conf" / "mappings" / "online_retail.yaml")
    store, result = run(tmp_path, src, mapping=mapping)
    assert result.read == 541_909
    assert result.balanced
    assert result.reasons["missing_customer_id"] == 135_080
    raw = pd.read_parquet(src)
    with_customer = raw[raw["CustomerID"].notna()]
    assert result.accepted == len(with_customer)
    ev = store.read().to_pandas()
    invoices = with_customer["InvoiceNo"].astype(str)
    assert (ev["event_type"] == "refund").sum() == invoices[invoices.str.startswith("C")].nunique()
    assert len(ev) == with_customer.groupby(["CustomerID", "InvoiceNo"]).ngroups
    one = with_customer[with_customer["CustomerID"] == 12347.0]
    assert ev.loc[ev["customer_id"] == "12347", "value"].sum() == pytest.approx(
        (one["Quantity"] * one["UnitPrice"]).sum()
    )


def test_append_events_dedups(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events")
    ev = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "customer_id": ["a", "b"],
            "event_time": pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True).astype("datetime64[us, UTC]"),
            "event_type": ["login", "login"],
            "channel": ["app", "app"],
            "session_id": [None, None],
            "value": [np.nan, np.nan],
            "properties": [None, None],
        }
    )
    assert append_events(store, ev, NOW)[:2] == (2, 0)
    assert append_events(store, ev, NOW)[:2] == (0, 2)
    assert store.count() == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet='ab,;\t \n0123456789:-TZ"é', max_size=60), min_size=1, max_size=12))
def test_any_text_file_is_accounted_for(tmp_path: Path, lines: list[str]) -> None:
    src = tmp_path / f"fuzz{abs(hash(tuple(lines)))}.csv"
    src.write_text("customer_id,event_time,event_type\n" + "\n".join(lines) + "\n")
    store = EventStore(tmp_path / f"ev{abs(hash(tuple(lines)))}")
    result = ingest_files([src], store, tmp_path / "q", now=NOW)
    assert result.balanced


KILL_SCRIPT = """
import sys, pandas as pd
from pathlib import Path
from features.events.ingest import ingest_files
from features.events.store import EventStore
ingest_files([Path(sys.argv[1])], EventStore(Path(sys.argv[2])), Path(sys.argv[3]),
             now=pd.Timestamp("2025-06-01", tz="UTC"), chunk_rows=20_000)
"""


@pytest.mark.slow
def test_kill_9_during_ingest_leaves_before_or_after(tmp_path: Path) -> None:
    n = 300_000
    rng = np.random.default_rng(1)
    times = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86400 * 90, n), unit="s")
    pq.write_table(
        pa.table(
            {
                "event_id": [f"e{i}" for i in range(n)],
                "customer_id": [f"c{i % 5000}" for i in range(n)],
                "event_time": pa.array(times.astype("datetime64[us, UTC]")),
                "event_type": ["page_view"] * n,
            }
        ),
        tmp_path / "big.parquet",
    )
    root = tmp_path / "events"
    outcomes = set()
    for delay in (0.8, 1.6, 2.4, 3.5):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "big.parquet"), str(root), str(tmp_path / "q")],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = EventStore(root)
        store.recover()
        count = store.count()
        assert count in (0, n), f"half a batch visible: {count}"
        outcomes.add(count)
        if count == n:
            break
    store = EventStore(root)
    result = ingest_files([tmp_path / "big.parquet"], store, tmp_path / "q", now=NOW, chunk_rows=20_000)
    assert result.balanced and store.count() == n
    assert store.read(["event_id"]).column(0).to_pandas().is_unique


def test_simulated_faults_are_all_caught(tmp_path: Path) -> None:
    from features.simulator import simulate, write_simulation

    sim = simulate(300, 60, seed=5, faults=0.02)
    paths = write_simulation(sim, tmp_path / "sim")
    store = EventStore(tmp_path / "events")
    result = ingest_files([Path(paths["events"])], store, tmp_path / "q", now=sim.end + pd.Timedelta(days=1))
    assert result.balanced
    clean = sim.clean_events()
    assert store.count() == len(clean)
    assert set(store.read(["event_id"]).column(0).to_pylist()) == set(clean["event_id"].astype(str))
    kinds = sim.faults["kind"].value_counts()
    assert result.duplicates == kinds.get("duplicate", 0)
