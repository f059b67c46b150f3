"""The SQL both engines run: events -> cutoff-independent facts, one small table per part.

Nothing here multiplies events by cutoffs. Events are aggregated into *global buckets*: the
time intervals between consecutive boundaries {cutoff - d days : every cutoff, d in 0, 7, 30,
60, 90, 365}. Every window of every cutoff is a union of whole global buckets, so one GROUP BY
serves any number of cutoffs, and `assemble.py` (numpy) sums buckets per cutoff. Facts that
are not sums (first/last times, sessions, cart outcomes) are exported per customer, session,
day or event, and numpy takes what is known at each cutoff.

`journey_plan` returns the statements: relations to materialise first (`Plan.setup`, read by
several parts) and one SELECT per part (`Plan.parts`, columns in `PART_COLUMNS`); `run_plan`
runs them with an engine's two primitives. Every part carries `cix`, the customer's rank by
customer_id among customers with an event at or before the last cutoff.

Why not one wide GROUP BY with a column per feature: DuckDB's cost grows with aggregates x rows
(84 conditional aggregates took 6-10 s on 11M events and 2 threads); why not per-cutoff long
partials: their size grows with customers x cutoffs x types x windows (38M rows, 12 GB for a
12-cutoff grid over 100k customers).

Leakage: a part's rows carry the times at which its facts became known (event times; a cart's
add time + 24 h; a session's first purchase), and numpy keeps only those at or before each
cutoff. Sessions that straddle a cutoff get their length as of that cutoff from `session_cuts`.
Times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from core.contract import CHANNELS, EVENT_TYPE_LIST, NOT_ACTIVITY
from features.journeys.definitions import (
    BUCKET_EDGES_DAYS,
    CART_RESOLUTION_HOURS,
    DAY_US,
)

CHANNEL_WINDOW_DAYS = 90  # channel shares look at the last 90 days
MOMENT_TYPES = ("purchase", "nps_response", "marketing_contact", "subscription_cancel", "consent_change")
CONSENT_CHANNEL = "email"  # the channel of the consent_change events that feed `email_opt_in`
TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPE_LIST)}

# Columns of each part (all parts carry cix: INT). Times are BIGINT microseconds.
PART_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("cix", "customer_id", "first_t", "first_purchase_t"),
    "events": ("cix", "slot", "n", "value_sum", "value_n"),  # slot = type code * G + global bucket
    "activity": ("cix", "g", "t_max"),  # latest activity per global bucket
    "channels": ("cix", "slot", "n"),  # slot = channel code * G + global bucket; activity only
    "sessions": ("cix", "s0", "s1", "p0", "b0"),  # first/last event, first purchase, first bounce
    "session_cuts": ("cix", "ci", "s0", "s1c"),  # sessions straddling cutoff ci: last event <= cutoff
    "carts": ("cix", "t", "abandoned"),
    "active_days": ("cix", "t0"),  # first activity of each UTC day with activity
    # the events whose latest occurrence matters: purchases, NPS answers, contacts, cancellations,
    # email consent changes (other channels' consent events are not read)
    "moments": ("cix", "tc", "t", "v", "action"),
    "first_seen": ("cix", "t"),
    "opt_in": ("cix", "v"),  # the customers table's email_opt_in (1/0), when it has that column
}


@dataclass(frozen=True)
class Dialect:
    """The few spellings in which DuckDB and Spark SQL differ."""

    name: str
    epoch_us_fn: str  # timestamp -> BIGINT microseconds since the epoch
    json_action_fmt: str  # {col}: properties JSON -> properties.action or NULL
    code_fmt: str  # {col}, {values}: 0-based position of col in the value list, -1 when absent
    timestamp_fmt: str  # {iso} (UTC, microseconds) or {us}: a timestamp literal

    def epoch_us(self, col: str) -> str:
        return f"{self.epoch_us_fn}({col})"

    def json_action(self, col: str) -> str:
        return self.json_action_fmt.format(col=col)

    def timestamp(self, us: int) -> str:
        iso = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return self.timestamp_fmt.format(iso=f"{iso}.{us % 1_000_000:06d}", us=us)

    def code(self, col: str, values: Sequence[str]) -> str:
        return self.code_fmt.format(col=col, values=", ".join(f"'{v}'" for v in values))


DUCKDB = Dialect(
    name="duckdb",
    epoch_us_fn="epoch_us",
    json_action_fmt="json_extract_string(CASE WHEN json_valid({col}) THEN {col} END, '$.action')",
    # an ENUM cast is one hash lookup; grouping and comparing small ints is much cheaper than strings
    code_fmt="CAST(COALESCE(enum_code(TRY_CAST({col} AS ENUM({values}))), -1) AS INT)",
    timestamp_fmt="TIMESTAMPTZ '{iso}+00'",
)
SPARK = Dialect(
    name="spark",
    epoch_us_fn="unix_micros",
    json_action_fmt="get_json_object({col}, '$.action')",
    code_fmt="CAST(array_position(array({values}), {col}) - 1 AS INT)",
    timestamp_fmt="timestamp_micros({us})",
)
DIALECTS = {"duckdb": DUCKDB, "spark": SPARK}


def global_boundaries(cutoffs_us: Sequence[int]) -> list[int]:
    """Sorted distinct window starts and ends of every cutoff (microseconds)."""
    days = (0, *BUCKET_EDGES_DAYS)
    return sorted({int(c) - d * DAY_US for c in cutoffs_us for d in days})


def bucket_case(t: str, boundaries: Sequence[int]) -> str:
    """SQL for the global bucket of time `t`: the number of boundaries strictly before t.

    Bucket g is the interval (boundaries[g - 1], boundaries[g]]. A balanced tree of CASEs (about
    log2 of the boundary count comparisons per row), the same in both dialects. Only times at or
    before the last boundary (the last cutoff) are asked for.
    """

    def node(lo: int, hi: int) -> str:  # the answer is in [lo, hi]
        if lo == hi:
            return str(lo)
        mid = (lo + hi + 1) // 2  # answer >= mid  <=>  boundaries[mid - 1] < t
        return f"CASE WHEN {t} <= {boundaries[mid - 1]} THEN {node(lo, mid - 1)} ELSE {node(mid, hi)} END"

    return node(0, len(boundaries) - 1)


def _codes(kinds: Sequence[str]) -> str:
    return ", ".join(str(TYPE_CODE[k]) for k in kinds)


def _day(t: str) -> str:
    return f"CAST(FLOOR({t} / {DAY_US}e0) AS BIGINT)"  # the UTC day number (e0: a DOUBLE literal)


@dataclass(frozen=True)
class Plan:
    """The statements of one computation (run it with `run_plan`).

    setup: (relation name, SELECT) pairs to materialise in order; parts: part name -> SELECT;
    boundaries: the global bucket ends; straddle_ranges: a SELECT of (lo, hi) time ranges
    holding the sessions that straddle a cutoff; session_cuts: builds the SELECT of the
    `session_cuts` part from those ranges (only run when there are any).
    """

    setup: tuple[tuple[str, str], ...]
    parts: dict[str, str]
    boundaries: tuple[int, ...]
    straddle_ranges: str
    session_cuts: Callable[[Sequence[tuple[int, int]]], str]


def journey_plan(
    dialect_name: str,
    *,
    events: str,
    cutoffs: str,
    cutoffs_us: Sequence[int],
    prefix: str = "journey_",
    customer_ids: str | None = None,
    customers: str | None = None,
    customers_opt_in: bool = False,
) -> Plan:
    """The statements for events at or before the last cutoff.

    events: a relation with the contract's columns (a view name or `read_parquet(...)`);
    cutoffs: a relation (ci INT, c BIGINT microseconds) of the distinct sorted cutoffs, whose
        values are also passed as `cutoffs_us`; customer_ids: an optional relation
        (customer_id) restricting the population; customers: an optional relation with
        (customer_id, first_seen[, email_opt_in]); customers_opt_in: whether it has the boolean
        email_opt_in column; prefix: names the materialised relations.
    """
    d = DIALECTS[dialect_name]
    last = max(cutoffs_us)
    boundaries = global_boundaries(cutoffs_us)
    n_global = len(boundaries)
    ev, cust, events_g, sessions_g, straddlers = (
        f"{prefix}{n}" for n in ("ev", "cust", "events_g", "sessions_g", "straddlers")
    )
    activity = f"(tc >= 0 AND tc NOT IN ({_codes(NOT_ACTIVITY)}))"
    activity_slot = f"slot >= 0 AND FLOOR(slot / {n_global}) NOT IN ({_codes(NOT_ACTIVITY)})"

    def slot_of(kind: str) -> str:
        return f"slot >= {code[kind] * n_global} AND slot < {(code[kind] + 1) * n_global}"

    restrict = f" AND customer_id IN (SELECT customer_id FROM {customer_ids})" if customer_ids else ""
    known = f"event_time <= {d.timestamp(last)}{restrict}"  # a literal, so that Parquet row groups are pruned
    tc = d.code("event_type", EVENT_TYPE_LIST)
    code = TYPE_CODE
    setup = (
        # the events every part reads; kept narrow (strings cost most to materialise): the session id
        # is read by the session parts from `events` directly, the action is NULL but on contacts
        (ev, f"""SELECT customer_id, {d.epoch_us("event_time")} AS t, {tc} AS tc,
       {d.code("channel", CHANNELS)} AS ch, value AS v,
       CASE WHEN event_type = 'marketing_contact'
            THEN COALESCE({d.json_action("properties")}, 'unknown') END AS action
FROM {events}
WHERE {known}"""),
        # per customer, event type (tc = -1: not in the vocabulary) and global bucket
        (events_g, f"""SELECT customer_id, tc * {n_global} + {bucket_case("t", boundaries)} AS slot,
       COUNT(*) AS n, SUM(v) AS value_sum, COUNT(v) AS value_n, MIN(t) AS t_min, MAX(t) AS t_max
FROM {ev}
GROUP BY 1, 2"""),
        # the customers with an event at or before the last cutoff, numbered by customer_id
        (cust, f"""SELECT customer_id, MIN(t_min) AS first_t,
       MIN(CASE WHEN {slot_of("purchase")} THEN t_min END) AS first_purchase_t,
       ROW_NUMBER() OVER (ORDER BY customer_id) - 1 AS cix
FROM {events_g}
GROUP BY customer_id"""),
        (sessions_g, f"""SELECT customer_id, sid, MIN(t) AS s0, MAX(t) AS s1,
       MIN(CASE WHEN tc = {code["purchase"]} THEN t END) AS p0, MIN(CASE WHEN tc = {code["bounce"]} THEN t END) AS b0
FROM (SELECT customer_id, session_id AS sid, {d.epoch_us("event_time")} AS t, {tc} AS tc
      FROM {events} WHERE {known} AND session_id IS NOT NULL)
GROUP BY 1, 2"""),
        (straddlers, f"""SELECT s.customer_id, s.sid, k.ci, k.c, s.s0
FROM {sessions_g} s JOIN {cutoffs} k ON s.s0 <= k.c AND s.s1 > k.c"""),
    )  # fmt: skip
    cart_us = CART_RESOLUTION_HOURS * 3_600_000_000
    channel_start = min(cutoffs_us) - CHANNEL_WINDOW_DAYS * DAY_US

    def with_cix(select: str, source: str, group: str = "") -> str:
        return f"SELECT c.cix, {select} FROM {source} x JOIN {cust} c ON c.customer_id = x.customer_id{group}"

    parts = {
        "customers": f"SELECT cix, customer_id, first_t, first_purchase_t FROM {cust}",
        "events": with_cix("x.slot, x.n, x.value_sum, x.value_n", f"(SELECT * FROM {events_g} WHERE slot >= 0)"),
        "activity": with_cix(
            f"x.slot % {n_global} AS g, MAX(x.t_max) AS t_max",
            f"(SELECT * FROM {events_g} WHERE {activity_slot})",
            f" GROUP BY c.cix, x.slot % {n_global}",
        ),
        "channels": with_cix(
            f"x.ch * {n_global} + {bucket_case('x.t', boundaries)} AS slot, COUNT(*) AS n",
            f"(SELECT * FROM {ev} WHERE {activity} AND ch >= 0 AND t > {channel_start})",
            f" GROUP BY c.cix, x.ch * {n_global} + {bucket_case('x.t', boundaries)}",
        ),
        "sessions": with_cix("x.s0, x.s1, x.p0, x.b0", sessions_g),
        "carts": with_cix(
            f"x.t, CASE WHEN x.np IS NOT NULL AND x.np <= x.t + {cart_us} THEN 0 ELSE 1 END AS abandoned",
            f"""(SELECT customer_id, t, tc,
         MIN(CASE WHEN tc = {code["purchase"]} THEN t END) OVER (
           PARTITION BY customer_id ORDER BY t RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS np
  FROM {ev} WHERE tc IN ({_codes(("add_to_cart", "purchase"))}))""",
        )
        + f" WHERE x.tc = {code['add_to_cart']}",
        "active_days": with_cix(
            "MIN(x.t) AS t0", f"(SELECT * FROM {ev} WHERE {activity})", f" GROUP BY c.cix, {_day('x.t')}"
        ),
        "moments": with_cix(
            "x.tc, x.t, x.v, x.action",
            f"(SELECT customer_id, tc, t, v, action FROM {ev} WHERE tc IN ({_codes(MOMENT_TYPES)})"
            f" AND (tc <> {code['consent_change']} OR ch = {CHANNELS.index(CONSENT_CHANNEL)}))",
        ),
    }
    if customers:
        parts["first_seen"] = with_cix(
            "MIN(x.t) AS t",
            f"(SELECT customer_id, {d.epoch_us('first_seen')} AS t FROM {customers} WHERE first_seen IS NOT NULL)",
            " GROUP BY c.cix",
        )
        if customers_opt_in:  # duplicated customers: an opt-out wins
            parts["opt_in"] = with_cix(
                "MIN(x.v) AS v",
                f"(SELECT customer_id, CASE WHEN email_opt_in THEN 1 ELSE 0 END AS v FROM {customers} "
                "WHERE email_opt_in IS NOT NULL)",
                " GROUP BY c.cix",
            )
    def session_cuts(ranges: Sequence[tuple[int, int]]) -> str:
        """Sessions straddling a cutoff: their last event at or before it. `ranges` are (earliest
        straddler start, cutoff) pairs, as literals so that only those slices of events are read."""
        spans = " OR ".join(
            f"(event_time >= {d.timestamp(lo)} AND event_time <= {d.timestamp(hi)})" for lo, hi in ranges
        )
        return with_cix(
            "x.ci, x.s0, x.s1c",
            f"""(SELECT s.customer_id, s.ci, s.s0, MAX(e.t) AS s1c
  FROM {straddlers} s
  JOIN (SELECT customer_id, session_id AS sid, {d.epoch_us("event_time")} AS t FROM {events}
        WHERE {known} AND session_id IS NOT NULL AND ({spans})) e
    ON e.customer_id = s.customer_id AND e.sid = s.sid AND e.t <= s.c
  GROUP BY s.customer_id, s.sid, s.ci, s.s0)""",
        )

    return Plan(
        setup=setup,
        parts=parts,
        boundaries=tuple(boundaries),
        straddle_ranges=f"SELECT MIN(s0) AS lo, MAX(c) AS hi FROM {straddlers} GROUP BY ci",
        session_cuts=session_cuts,
    )


def run_plan(
    plan: Plan, materialise: Callable[[str, str], None], query: Callable[[str], pa.Table]
) -> dict[str, pa.Table]:
    """Run a plan with an engine's two primitives: materialise(name, select) and query(select)."""
    for name, select in plan.setup:
        materialise(name, select)
    parts = {part: query(select) for part, select in plan.parts.items()}
    ranges = query(plan.straddle_ranges)
    if ranges.num_rows:
        pairs = list(zip(ranges.column("lo").to_pylist(), ranges.column("hi").to_pylist(), strict=True))
        parts["session_cuts"] = query(plan.session_cuts(pairs))
    else:  # no session straddles a cutoff: nothing to read
        parts["session_cuts"] = pa.table(
            {name: pa.array([], pa.int64()) for name in PART_COLUMNS["session_cuts"]}
        )
    return parts
