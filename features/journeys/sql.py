"""The one SQL statement both engines run: events + cutoffs -> long partial aggregates.

The statement returns one table (`PARTIAL_COLUMNS`) stacking several parts (`PART_COLUMNS`
says what each column holds in each part). Every row carries `r`, the output row of its
(customer, cutoff): rows are numbered by cutoff index `ci`, then customer_id, in the `customer`
part, the only one that carries customer_id and ci. Several parts are also keyed by an age
bucket `b` (`definitions.BUCKET_EDGES_DAYS`):

- `events`:        per event type and bucket (one int `slot`): events, sum and count of `value`;
- `customer`:      one row per (customer, cutoff) with any event at or before it (this is the
                   population): first/last times of key events;
- `last_nps`, `last_contact`: the latest NPS value and marketing contact action;
- `channels`:      activity events in the last 90 days per channel;
- `sessions`:      per bucket of a session's first event: sessions, converted, bounced, and total
                   duration (first to last event at or before the cutoff);
- `carts`:         per bucket of the add time: cart adds resolved by the cutoff, abandoned ones;
- `active_days`:   per bucket of the day's first activity: distinct UTC days with activity;
- `purchase_days`: distinct purchase days, mean and sample std of the gaps between them;
- `first_seen`:    the customers table's first_seen, when it is at or before the cutoff.

Why long and not one wide GROUP BY with a column per feature: DuckDB's cost grows with
aggregates x rows, so ~140 conditional aggregates over 10M events are several times slower
than a few aggregates over (customer, cutoff, type, bucket) groups (measured: 84 CASE
aggregates 6-10 s against 2.3 s on 11M events and 2 threads). The wide table is assembled
from the long one with numpy (`assemble.py`).

Leakage: every part joins rows to cutoffs with `<= cutoff` on the time the fact became known
(the event time; for carts, the add time + 24 h), so no event after a cutoff can reach it.
Times are integer microseconds since the epoch (UTC), which keeps the dialects apart in few
places (`Dialect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from core.contract import EVENT_TYPE_LIST
from features.journeys.definitions import (
    BUCKET_EDGES_DAYS,
    BUSINESS_INITIATED,
    CART_RESOLUTION_HOURS,
    DAY_US,
)

SLOT_WIDTH = 8  # events part: slot = type code * SLOT_WIDTH + age bucket
_CODE = {t: i for i, t in enumerate(EVENT_TYPE_LIST)}

PARTIAL_COLUMNS: tuple[str, ...] = (
    "part", "r", "customer_id", "ci", "k", "b", "n", "s1", "s2", "s3", "s4", "s5", "s6",
)  # fmt: skip
# What k, b, n and s1..s6 hold in each part. Times are microseconds since the epoch as DOUBLE
# (exact below 2**53 us, i.e. until the year 2255).
PART_COLUMNS: dict[str, dict[str, str]] = {
    "events": {"b": "slot = type code (EVENT_TYPE_LIST index) * SLOT_WIDTH + bucket", "n": "events",
               "s1": "value_sum", "s2": "value_n"},
    "customer": {
        "customer_id": "customer_id", "ci": "cutoff index", "s1": "first_event_t", "s2": "last_activity_t",
        "s3": "first_purchase_t", "s4": "last_purchase_t", "s5": "last_contact_t", "s6": "last_cancel_t",
    },  # last_nps_t stays in SQL
    "last_nps": {"s1": "value of the latest nps_response (the largest at a tie)"},
    "last_contact": {"k": "action of the latest marketing_contact (the largest at a tie)"},
    "channels": {"k": "channel", "n": "activity_events_90d"},
    "sessions": {"b": "bucket", "n": "sessions", "s1": "converted", "s2": "bounced", "s3": "duration_us"},
    "carts": {"b": "bucket", "n": "resolved_carts", "s1": "abandoned"},
    "active_days": {"b": "bucket", "n": "days"},
    "purchase_days": {"n": "purchase_days", "s1": "gap_mean", "s2": "gap_std"},
    "first_seen": {"s1": "first_seen_t"},
}  # fmt: skip


@dataclass(frozen=True)
class Dialect:
    """The few spellings in which DuckDB and Spark SQL differ."""

    name: str
    epoch_us_fn: str  # function: timestamp -> BIGINT microseconds since the epoch
    json_action_fmt: str  # format with {col}: properties JSON -> action string or NULL
    type_code_fmt: str  # format with {col}, {types}: position of an event type in EVENT_TYPE_LIST, -1 if absent
    cte_materialized: str  # keyword after AS for an aggregate CTE read several times (compute it once)

    def epoch_us(self, col: str) -> str:
        return f"{self.epoch_us_fn}({col})"

    def json_action(self, col: str) -> str:
        return self.json_action_fmt.format(col=col)

    def type_code(self, col: str) -> str:
        return self.type_code_fmt.format(col=col, types=", ".join(f"'{t}'" for t in EVENT_TYPE_LIST))


DUCKDB = Dialect(
    name="duckdb",
    epoch_us_fn="epoch_us",
    json_action_fmt="json_extract_string(CASE WHEN json_valid({col}) THEN {col} END, '$.action')",
    # an ENUM cast is a hash lookup; grouping and comparing small ints is much cheaper than strings
    type_code_fmt="CAST(COALESCE(enum_code(TRY_CAST({col} AS ENUM({types}))), -1) AS INT)",
    cte_materialized="MATERIALIZED ",
)
SPARK = Dialect(
    name="spark",
    epoch_us_fn="unix_micros",
    json_action_fmt="get_json_object({col}, '$.action')",
    type_code_fmt="CAST(array_position(array({types}), {col}) - 1 AS INT)",
    cte_materialized="",
)
DIALECTS = {"duckdb": DUCKDB, "spark": SPARK}


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def bucket(age_us: str) -> str:
    """Age bucket index of an age in microseconds (0: < 7 days ... 5: >= 365 days)."""
    whens = " ".join(f"WHEN {age_us} < {d * DAY_US} THEN {i}" for i, d in enumerate(BUCKET_EDGES_DAYS))
    return f"CASE {whens} ELSE {len(BUCKET_EDGES_DAYS)} END"


def _day(t: str) -> str:
    return f"CAST(FLOOR(CAST({t} AS DOUBLE) / {DAY_US}.0) AS BIGINT)"


def _select(part: str, source: str, values: dict[str, str]) -> str:
    """One UNION branch: `values` maps partial columns to expressions; the rest are typed NULLs.

    Branches other than `customer` and `last_*` take their output row `r` from the population (`pop`).
    """
    types = {"r": "BIGINT", "customer_id": "STRING", "ci": "INT", "k": "STRING", "b": "INT"}
    cols = [f"'{part}' AS part"]
    for name in PARTIAL_COLUMNS[1:]:
        expr = values.get(name, "NULL")
        cols.append(f"CAST({expr} AS {types.get(name, 'DOUBLE')}) AS {name}")
    if part in ("customer", "last_nps", "last_contact"):
        return "SELECT " + ", ".join(cols) + f" FROM {source} x"
    join = "JOIN pop ON pop.customer_id = x.customer_id AND pop.ci = x.ci"
    return "SELECT " + ", ".join(cols) + f" FROM {source} x {join}"


@lru_cache(maxsize=64)
def partials_sql(
    dialect_name: str,
    *,
    events: str,
    cutoffs: str,
    max_cutoff_literal: str,
    customer_ids: str | None = None,
    customers: str | None = None,
) -> str:
    """The partials query (columns `PARTIAL_COLUMNS`, meanings `PART_COLUMNS`).

    events: a relation with the contract's columns (a view name or `read_parquet(...)`);
    cutoffs: a relation (ci INT, c BIGINT microseconds) of distinct cutoffs;
    max_cutoff_literal: a timestamp literal of the latest cutoff, to prune the scan;
    customer_ids: an optional relation (customer_id) restricting the population;
    customers: an optional relation with (customer_id, first_seen).
    """
    d = DIALECTS[dialect_name]
    mat = d.cte_materialized
    cart_us = CART_RESOLUTION_HOURS * 3_600_000_000
    code = _CODE
    # activity: any known type that the business does not initiate
    business = ", ".join(str(code[t]) for t in BUSINESS_INITIATED)
    activity = f"(tc >= 0 AND tc NOT IN ({business}))"
    def slot_of(kind: str) -> str:
        return f"slot >= {code[kind] * SLOT_WIDTH} AND slot < {(code[kind] + 1) * SLOT_WIDTH}"

    activity_slot = f"slot >= 0 AND NOT ({' OR '.join(f'({slot_of(t)})' for t in BUSINESS_INITIATED)})"
    restrict = f" AND customer_id IN (SELECT customer_id FROM {customer_ids})" if customer_ids else ""
    joined = f"ev e JOIN {cutoffs} k ON e.t <= k.c"
    action = f"COALESCE({d.json_action('e.p')}, 'unknown')"
    ctes = [
        f"""ev AS (
  SELECT customer_id, {d.epoch_us("event_time")} AS t, {d.type_code("event_type")} AS tc, channel AS ch,
         session_id AS sid, value AS v, CASE WHEN event_type = 'marketing_contact' THEN properties END AS p
  FROM {events}
  WHERE event_time <= {max_cutoff_literal}{restrict}
)""",
        f"""events_part AS {mat}(
  SELECT e.customer_id, k.ci, e.tc * {SLOT_WIDTH} + {bucket("k.c - e.t")} AS slot,
         COUNT(*) AS n, SUM(e.v) AS vs, COUNT(e.v) AS vn, MIN(e.t) AS t_min, MAX(e.t) AS t_max
  FROM {joined}
  GROUP BY 1, 2, 3
),
cust0 AS (
  SELECT customer_id, ci, MIN(t_min) AS first_t,
         MAX(t_max) FILTER (WHERE {activity_slot}) AS last_activity_t,
         MIN(t_min) FILTER (WHERE {slot_of("purchase")}) AS first_purchase_t,
         MAX(t_max) FILTER (WHERE {slot_of("purchase")}) AS last_purchase_t,
         MAX(t_max) FILTER (WHERE {slot_of("marketing_contact")}) AS last_contact_t,
         MAX(t_max) FILTER (WHERE {slot_of("subscription_cancel")}) AS last_cancel_t,
         MAX(t_max) FILTER (WHERE {slot_of("nps_response")}) AS last_nps_t
  FROM events_part
  GROUP BY 1, 2
),
pop AS {mat}(
  SELECT cust0.*, ROW_NUMBER() OVER (ORDER BY ci, customer_id) - 1 AS r FROM cust0
)""",
        # The latest NPS value and contact action: only the events at the latest instant are read.
        f"""nps_part AS (
  SELECT pop.r, MAX(e.v) AS nps
  FROM ev e JOIN pop ON e.customer_id = pop.customer_id AND e.t = pop.last_nps_t
  WHERE e.tc = {code["nps_response"]}
  GROUP BY 1
),
contact_part AS (
  SELECT pop.r, MAX({action}) AS action
  FROM ev e JOIN pop ON e.customer_id = pop.customer_id AND e.t = pop.last_contact_t
  WHERE e.tc = {code["marketing_contact"]}
  GROUP BY 1
)""",
        f"""channels_part AS (
  SELECT e.customer_id, k.ci, e.ch, COUNT(*) AS n
  FROM {joined} AND e.t > k.c - {90 * DAY_US}
  WHERE {activity}
  GROUP BY 1, 2, 3
)""",
        f"""sess AS (
  SELECT e.customer_id, k.ci, k.c, e.sid, MIN(e.t) AS s0, MAX(e.t) AS s1,
         MAX(CASE WHEN e.tc = {code["purchase"]} THEN 1 ELSE 0 END) AS conv,
         MAX(CASE WHEN e.tc = {code["bounce"]} THEN 1 ELSE 0 END) AS bnc
  FROM {joined}
  WHERE e.sid IS NOT NULL
  GROUP BY 1, 2, 3, 4
),
sessions_part AS (
  SELECT customer_id, ci, {bucket("c - s0")} AS b, COUNT(*) AS n, SUM(conv) AS conv, SUM(bnc) AS bnc,
         SUM(CAST(s1 - s0 AS DOUBLE)) AS dur
  FROM sess
  GROUP BY 1, 2, 3
)""",
        f"""cp AS (
  SELECT customer_id, t, tc,
         MIN(CASE WHEN tc = {code["purchase"]} THEN t END) OVER (
           PARTITION BY customer_id ORDER BY t RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS np
  FROM ev
  WHERE tc IN ({code["add_to_cart"]}, {code["purchase"]})
),
carts_part AS (
  SELECT a.customer_id, k.ci, {bucket("k.c - a.t")} AS b, COUNT(*) AS n,
         SUM(CASE WHEN a.np IS NOT NULL AND a.np <= a.t + {cart_us} THEN 0 ELSE 1 END) AS abandoned
  FROM cp a JOIN {cutoffs} k ON a.t + {cart_us} <= k.c
  WHERE a.tc = {code["add_to_cart"]}
  GROUP BY 1, 2, 3
)""",
        f"""pd0 AS (
  SELECT customer_id, {_day("t")} AS d, MIN(t) AS t0 FROM ev WHERE tc = {code["purchase"]} GROUP BY 1, 2
),
pd1 AS (
  SELECT customer_id, t0, d - LAG(d) OVER (PARTITION BY customer_id ORDER BY d) AS gap FROM pd0
),
pdays_part AS (
  SELECT p.customer_id, k.ci, COUNT(*) AS n, AVG(CAST(p.gap AS DOUBLE)) AS gap_mean,
         STDDEV_SAMP(CAST(p.gap AS DOUBLE)) AS gap_std
  FROM pd1 p JOIN {cutoffs} k ON p.t0 <= k.c
  GROUP BY 1, 2
)""",
        f"""ad0 AS (
  SELECT customer_id, MIN(t) AS t0 FROM ev WHERE {activity} GROUP BY customer_id, {_day("t")}
),
adays_part AS (
  SELECT a.customer_id, k.ci, {bucket("k.c - a.t0")} AS b, COUNT(*) AS n
  FROM ad0 a JOIN {cutoffs} k ON a.t0 <= k.c
  GROUP BY 1, 2, 3
)""",
    ]
    selects = [
        _select("customer", "pop", {"r": "r", "customer_id": "customer_id", "ci": "ci", "s1": "first_t",
                                    "s2": "last_activity_t", "s3": "first_purchase_t", "s4": "last_purchase_t",
                                    "s5": "last_contact_t", "s6": "last_cancel_t"}),
        _select("last_nps", "nps_part", {"r": "x.r", "s1": "x.nps"}),
        _select("last_contact", "contact_part", {"r": "x.r", "k": "x.action"}),
        _select("events", "events_part", {"r": "pop.r", "b": "x.slot", "n": "x.n", "s1": "x.vs", "s2": "x.vn"}),
        _select("channels", "channels_part", {"r": "pop.r", "k": "x.ch", "n": "x.n"}),
        _select("sessions", "sessions_part", {"r": "pop.r", "b": "x.b", "n": "x.n", "s1": "x.conv", "s2": "x.bnc",
                                              "s3": "x.dur"}),
        _select("carts", "carts_part", {"r": "pop.r", "b": "x.b", "n": "x.n", "s1": "x.abandoned"}),
        _select("active_days", "adays_part", {"r": "pop.r", "b": "x.b", "n": "x.n"}),
        _select("purchase_days", "pdays_part", {"r": "pop.r", "n": "x.n", "s1": "x.gap_mean", "s2": "x.gap_std"}),
    ]  # fmt: skip
    if customers:
        ctes.append(f"""seen AS (
  SELECT s.customer_id, k.ci, MIN(s.t) AS t_min
  FROM (SELECT customer_id, {d.epoch_us("first_seen")} AS t FROM {customers} WHERE first_seen IS NOT NULL) s
  JOIN {cutoffs} k ON s.t <= k.c
  GROUP BY 1, 2
)""")
        selects.append(_select("first_seen", "seen", {"r": "pop.r", "s1": "x.t_min"}))
    return "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(selects)
