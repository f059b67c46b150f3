"""Fault injection for ingestion tests: duplicates, late and out-of-order rows, malformed rows, missing ids.

Clean rows are never altered: every malformed row is an extra, corrupted copy with a new event_id,
and duplicates are extra exact copies. Late and out-of-order rows are clean rows moved in file
order. So dropping the extra rows listed in the fault log gives back exactly the clean events.
Faults are applied to the numpy event columns before they become Arrow (cheap at 10M rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from core.contract import EVENT_SCHEMA

DAY_US = 86_400_000_000

# kind -> share of the fault rate
FAULT_SHARES: dict[str, float] = {
    "duplicate": 0.30,
    "late": 0.15,
    "out_of_order": 0.15,
    "unknown_event_type": 0.08,
    "negative_amount": 0.06,
    "epoch_time": 0.06,
    "future_time": 0.06,
    "null_customer_id": 0.08,
    "unknown_channel": 0.03,
    "bad_properties": 0.03,
}
FAULT_KINDS: tuple[str, ...] = ("", *FAULT_SHARES)  # code 0: not a fault
EXTRA_KINDS: frozenset[str] = frozenset(FAULT_SHARES) - {"late", "out_of_order"}
FAULTY_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])
BAD_TYPES: tuple[str, ...] = ("purchse", "page-view", "teleport", "click_ad")
BAD_CHANNEL = "fax"
BAD_PROPERTIES = '{"action": '
FUTURE_US = int(pd.Timestamp("2099-01-01", tz="UTC").value // 1000)


@dataclass(frozen=True)
class Codes:
    """Where the malformed values live in the vocabularies the columns index into."""

    purchase: int  # event type code of purchases
    bad_types: np.ndarray  # event type codes outside the contract's vocabulary
    bad_channel: int
    bad_properties: int
    start_us: int  # the columns' times are microseconds since this instant


def empty_fault_log() -> pd.DataFrame:
    strings = pd.ArrowDtype(pa.string())
    return pd.DataFrame(
        {
            "row": pd.Series([], dtype="int64"),
            "event_id": pd.Series([], dtype=strings),
            "kind": pd.Series([], dtype=strings),
        }
    )


def inject(
    cols: dict[str, np.ndarray], rate: float, rng: np.random.Generator, codes: Codes
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Faulty columns and, per output row, the code of its fault kind (index into FAULT_KINDS, 0 = clean).

    `cols` are the clean event columns sorted by time, with "eid" the event number; they are consumed.
    About `rate` x rows are faulty; with rate > 0 every kind occurs at least once.
    """
    n = len(cols["time"])
    counts = {kind: max(1, int(round(n * rate * share))) for kind, share in FAULT_SHARES.items()}
    code = {kind: i for i, kind in enumerate(FAULT_KINDS)}
    purchase_rows = np.flatnonzero(cols["etype"] == codes.purchase)

    sources: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    for kind in [k for k in FAULT_SHARES if k in EXTRA_KINDS]:  # a fixed order: sets iterate by hash
        pool = purchase_rows if kind == "negative_amount" else np.arange(n)
        k = min(counts[kind], len(pool))
        sources.append(np.sort(rng.choice(pool, k, replace=False)))
        kinds.append(np.full(k, code[kind], dtype=np.int8))
    src = np.concatenate(sources)
    extra_kind = np.concatenate(kinds)
    extra = {name: col[src] for name, col in cols.items()}
    _corrupt(extra, extra_kind, rng, codes, first_new_eid=n)

    # file positions: clean rows at i, extras near their source, moved rows later
    keys = np.arange(n, dtype=np.float64)
    moved = rng.permutation(max(n - 1, 0))[: counts["late"] + counts["out_of_order"]]
    late, ooo = moved[: counts["late"]], moved[counts["late"] :]
    times = cols["time"]
    delay = (rng.uniform(1.0, 10.0, len(late)) * DAY_US).astype(np.int64)
    keys[late] = np.searchsorted(times, times[late] + delay) + 0.25
    keys[ooo] = ooo + 1.5  # lands just after its successor
    is_dup = extra_kind == code["duplicate"]
    extra_keys = np.where(is_dup, src + 0.5, src + rng.uniform(0.0, 50.0, len(src)))
    order = np.argsort(np.concatenate([keys, extra_keys]), kind="stable")
    del keys, extra_keys
    fault = np.zeros(n + len(src), dtype=np.int8)
    fault[late] = code["late"]
    fault[ooo] = code["out_of_order"]
    fault[n:] = extra_kind
    out: dict[str, np.ndarray] = {}
    for name in list(cols):  # one column at a time keeps the peak memory low
        out[name] = np.concatenate([cols.pop(name), extra.pop(name)])[order]
    return out, fault[order]


def _corrupt(
    extra: dict[str, np.ndarray], kind: np.ndarray, rng: np.random.Generator, codes: Codes, first_new_eid: int
) -> None:
    """Corrupt the extra rows in place according to their kind; malformed rows get new event numbers."""
    k = {name: i for i, name in enumerate(FAULT_KINDS)}
    malformed = kind != k["duplicate"]
    extra["eid"][malformed] = first_new_eid + np.arange(int(malformed.sum()))
    rows = kind == k["unknown_event_type"]
    extra["etype"][rows] = rng.choice(codes.bad_types, int(rows.sum()))
    rows = kind == k["negative_amount"]
    extra["value"][rows] = -np.where(np.isnan(extra["value"][rows]), 1.0, extra["value"][rows])
    time_of_day = (extra["time"] + codes.start_us) % DAY_US
    rows = kind == k["epoch_time"]
    extra["time"][rows] = time_of_day[rows] - codes.start_us
    rows = kind == k["future_time"]
    extra["time"][rows] = FUTURE_US + time_of_day[rows] - codes.start_us
    extra["cust"][kind == k["null_customer_id"]] = -1
    extra["chan"][kind == k["unknown_channel"]] = codes.bad_channel
    rows = kind == k["bad_properties"]
    extra["prop"][rows] = codes.bad_properties
    extra["order"][rows] = -1  # an order's properties are built from its order number: drop it to keep them broken
