"""`journey report [--as-of T] --out report.html`: the journey analytics report, one static HTML file.

The file opens offline: every plot is inline SVG drawn by matplotlib (Agg), the styles are
inline, and there is no script, font or image to fetch. Sections (each a <figure id=...>):

- funnel: customers reaching each step by T, with step conversion and drop-off;
- transitions: the journey-stage transition matrix between T - `since_days` and T;
- time_to_first_purchase: days from the first event to the first purchase;
- cohort_retention: share of each first-purchase month's cohort buying again, by month;
- channel_contribution: revenue by purchase channel, last marketing touch (30 days) and first touch;
- friction_dropoff and cart_abandonment: the funnel steps that lose most customers, and carts
  and checkouts abandoned by channel;
- scores_by_segment and actions_by_segment: champion scores and top actions by customer
  segment (the customers table's `segment`, else the journey stage), when champions exist.

Event analytics are DuckDB queries over the event store (events at or before T only); stages
come from the feature engine. The report is also logged to MLflow (experiment
`journeyml-reports`).
"""

from __future__ import annotations

import html
import io
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from core.contract import NOT_ACTIVITY
from core.output import emit, err, fail
from core.settings import Settings, get_settings

EXPERIMENT = "journeyml-reports"
STAGE_ORDER = ("awareness", "consideration", "first_purchase", "repeat", "lapsing", "churned")
MARKETING_TOUCHES = ("ad_click", "email_click", "email_open", "social_engagement", "referral")
CONSIDERATION = ("product_view", "search", "compare", "content_download", "video_view", "review_read")


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


PALETTE = {"awareness": "#8da0cb", "consideration": "#66c2a5", "purchase": "#fc8d62", "retention": "#e78ac3"}
FUNNEL = (  # (step, contract stage, SQL condition over one customer's events)
    ("seen", "awareness", "true"),
    ("engaged", "awareness", f"event_type NOT IN {_sql_list(NOT_ACTIVITY)}"),
    ("considered", "consideration", f"event_type IN {_sql_list(CONSIDERATION)}"),
    ("added to cart", "purchase", "event_type = 'add_to_cart'"),
    ("started checkout", "purchase", "event_type = 'checkout_start'"),
    ("purchased", "purchase", "event_type = 'purchase'"),
)


class ReportError(RuntimeError):
    """Nothing to report on (no events), or an output that cannot be written."""


@dataclass
class Analytics:
    cutoff: pd.Timestamp
    since: pd.Timestamp
    headline: dict[str, Any]
    funnel: pd.DataFrame
    transitions: pd.DataFrame
    first_purchase_days: np.ndarray
    cohorts: pd.DataFrame
    channels: pd.DataFrame
    carts: pd.DataFrame
    scores: pd.DataFrame | None = None
    score_columns: dict[str, str] = field(default_factory=dict)
    segment_by: str = "stage"
    score_note: str = ""


# ------------------------------------------------------------------------------ analytics (DuckDB)
def _events_view(con: Any, glob: str, cutoff: pd.Timestamp) -> None:
    literal = cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")
    path = glob.replace("'", "''")
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW ev AS SELECT customer_id, event_time, event_type, channel, session_id, value "
        f"FROM read_parquet('{path}', hive_partitioning = false) WHERE event_time <= TIMESTAMPTZ '{literal}+00'"
    )


def _funnel(con: Any) -> pd.DataFrame:
    row = con.execute(
        "SELECT "
        + ",\n".join(
            f"count(DISTINCT customer_id) FILTER (WHERE {cond}) AS s{i}" for i, (_, _, cond) in enumerate(FUNNEL)
        )
        + " FROM ev"
    ).fetchone()
    repeat = con.execute(
        "SELECT count(*) FROM (SELECT customer_id FROM ev WHERE event_type = 'purchase' "
        "GROUP BY customer_id HAVING count(DISTINCT date_trunc('day', event_time)) >= 2)"
    ).fetchone()[0]
    steps = [*[(name, stage) for name, stage, _ in FUNNEL], ("bought again", "retention")]
    counts = [int(v) for v in row] + [int(repeat)]
    frame = pd.DataFrame({"step": [s for s, _ in steps], "stage": [g for _, g in steps], "customers": counts})
    prev = frame["customers"].shift(1)
    frame["conversion"] = np.where(prev > 0, frame["customers"] / prev, np.nan)
    frame.loc[0, "conversion"] = 1.0
    frame["drop_off"] = 1.0 - frame["conversion"]
    frame["lost"] = (prev - frame["customers"]).fillna(0).astype(int)
    top = frame["customers"].iloc[0]
    frame["of_all"] = frame["customers"] / top if top else np.nan
    return frame


def _first_purchase_days(con: Any) -> np.ndarray:
    rows = con.execute(
        "SELECT epoch(min(event_time) FILTER (WHERE event_type = 'purchase') - min(event_time)) / 86400.0 "
        "FROM ev GROUP BY customer_id HAVING count(*) FILTER (WHERE event_type = 'purchase') > 0"
    ).fetchnumpy()
    return np.asarray(next(iter(rows.values())), dtype=float)


def _cohorts(con: Any, min_size: int = 10) -> pd.DataFrame:
    """cohort (first purchase month), month (months since), customers, share buying in that month."""
    return con.execute(
        f"""
        WITH buys AS (
            SELECT customer_id, date_trunc('month', event_time AT TIME ZONE 'UTC') AS m
            FROM ev WHERE event_type = 'purchase' GROUP BY ALL
        ), first AS (SELECT customer_id, min(m) AS cohort FROM buys GROUP BY customer_id),
        sizes AS (SELECT cohort, count(*) AS size FROM first GROUP BY cohort HAVING count(*) >= {min_size})
        SELECT strftime(f.cohort, '%Y-%m') AS cohort,
               (year(b.m) - year(f.cohort)) * 12 + month(b.m) - month(f.cohort) AS month,
               s.size AS customers, count(DISTINCT b.customer_id) / s.size AS share
        FROM buys b JOIN first f USING (customer_id) JOIN sizes s ON s.cohort = f.cohort
        GROUP BY 1, 2, 3 ORDER BY cohort, month
        """
    ).df()


def _channels(con: Any) -> pd.DataFrame:
    """Revenue share by channel under three views: the purchase's channel, the last marketing touch
    in the 30 days before it (else 'none'), and the customer's first touch."""
    touches, skip = _sql_list(MARKETING_TOUCHES), _sql_list(NOT_ACTIVITY)
    frame = con.execute(
        f"""
        WITH p AS (SELECT customer_id, event_time, channel, coalesce(value, 0) AS value FROM ev
                   WHERE event_type = 'purchase'),
        t AS (SELECT customer_id, event_time AS touch_time, channel AS touch FROM ev WHERE event_type IN {touches}),
        f AS (SELECT customer_id, arg_min(channel, event_time) AS first_touch FROM ev
              WHERE event_type NOT IN {skip} GROUP BY customer_id),
        last AS (
            SELECT p.value, p.channel,
                   CASE WHEN t.touch_time > p.event_time - INTERVAL 30 DAY THEN t.touch ELSE 'none' END AS last_touch,
                   p.customer_id
            FROM p ASOF LEFT JOIN t ON p.customer_id = t.customer_id AND p.event_time >= t.touch_time
        )
        SELECT 'purchase channel' AS view, channel, sum(value) AS revenue, count(*) AS purchases FROM last GROUP BY ALL
        UNION ALL SELECT 'last touch (30 days)', last_touch, sum(value), count(*) FROM last GROUP BY ALL
        UNION ALL SELECT 'first touch', coalesce(f.first_touch, 'none'), sum(value), count(*)
                  FROM last LEFT JOIN f USING (customer_id) GROUP BY ALL
        """
    ).df()
    totals = frame.groupby("view")["revenue"].transform("sum")
    frame["share"] = np.where(totals > 0, frame["revenue"] / totals, 0.0)
    return frame


def _carts(con: Any) -> pd.DataFrame:
    """Per channel: carts (a session with an add to cart; without a session id, a customer-day) and
    checkouts, and the shares abandoned (no purchase in the session, or within 24 hours)."""
    frames = []
    for kind, etype in (("cart", "add_to_cart"), ("checkout", "checkout_start")):
        frames.append(
            con.execute(
                f"""
                WITH c AS (
                    SELECT customer_id, session_id, min(event_time) AS t, arg_min(channel, event_time) AS channel
                    FROM ev WHERE event_type = '{etype}'
                    GROUP BY customer_id, session_id,
                             CASE WHEN session_id IS NULL THEN date_trunc('day', event_time) END
                ),
                s AS (SELECT DISTINCT customer_id, session_id FROM ev
                      WHERE event_type = 'purchase' AND session_id IS NOT NULL),
                b AS (SELECT customer_id, event_time AS bought FROM ev WHERE event_type = 'purchase'),
                j AS (
                    SELECT c.channel, (s.customer_id IS NOT NULL)
                           OR (c.session_id IS NULL AND b.bought <= c.t + INTERVAL 1 DAY) AS converted
                    FROM c LEFT JOIN s ON s.customer_id = c.customer_id AND s.session_id = c.session_id
                    ASOF LEFT JOIN b ON b.customer_id = c.customer_id AND b.bought >= c.t
                )
                SELECT '{kind}' AS kind, channel, count(*) AS started,
                       count(*) FILTER (WHERE NOT coalesce(converted, false)) AS abandoned
                FROM j GROUP BY ALL ORDER BY channel
                """
            ).df()
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["rate"] = np.where(frame["started"] > 0, frame["abandoned"] / frame["started"], np.nan)
    return frame


def _headline(con: Any) -> dict[str, Any]:
    row = con.execute(
        "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT customer_id) FILTER (WHERE event_type = "
        "'purchase'), coalesce(sum(value) FILTER (WHERE event_type = 'purchase'), 0), "
        "count(*) FILTER (WHERE event_type = 'purchase'), min(event_time), max(event_time) FROM ev"
    ).fetchone()
    return {
        "events": int(row[0]),
        "customers": int(row[1]),
        "buyers": int(row[2]),
        "revenue": round(float(row[3]), 2),
        "purchases": int(row[4]),
        "first_event": pd.Timestamp(row[5]).isoformat() if row[5] is not None else None,
        "last_event": pd.Timestamp(row[6]).isoformat() if row[6] is not None else None,
    }


def _stages(settings: Settings, cutoff: pd.Timestamp) -> pd.Series:
    """customer_id -> journey stage at the cutoff (offline table if built, else the feature engine)."""
    from serving.batch import plan_features

    plan = plan_features(settings, cutoff, None)
    parts = [feats.set_index("customer_id")["journey_stage"] for feats in plan.chunks(50_000)]
    return pd.concat(parts) if parts else pd.Series(dtype=object)


def _transitions(settings: Settings, since: pd.Timestamp, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Counts of customers by (stage at `since`, stage at `cutoff`); 'not yet seen' before their first event."""
    after = _stages(settings, cutoff)
    try:
        before = _stages(settings, since)
    except Exception:  # noqa: BLE001 - no events before `since`: everyone was unseen
        before = pd.Series(dtype=object)
    frame = pd.DataFrame({"to": after})
    frame["from"] = before.reindex(frame.index).fillna("not yet seen")
    frame["to"] = frame["to"].fillna("unknown")
    return frame.groupby(["from", "to"]).size().rename("customers").reset_index()


def gather(settings: Settings, cutoff: pd.Timestamp | None, since_days: int = 90) -> Analytics:
    """Every number the report shows. Raises ReportError when the store is empty."""
    import duckdb

    from features.events.store import EventStore

    store = EventStore(settings.events_dir)
    if store.is_empty():
        raise ReportError(f"the event store is empty ({settings.events_dir}): run `journey ingest` first")
    con = duckdb.connect()
    try:
        if cutoff is None:
            row = con.execute(
                f"SELECT max(event_time) FROM read_parquet('{store.glob}', hive_partitioning = false)"
            ).fetchone()
            last = row[0] if row else None
            from core.time import to_utc

            if last is None:
                raise ReportError("the event store holds no events")
            # The end of the last day with events: a whole-day cutoff, like the feature tables'.
            cutoff = to_utc(pd.Timestamp(last)).ceil("D")
        _events_view(con, store.glob, cutoff)
        headline = _headline(con)
        if headline["events"] == 0:
            raise ReportError(f"no events at or before {cutoff.isoformat()}")
        since = cutoff - pd.Timedelta(days=since_days)
        return Analytics(
            cutoff=cutoff,
            since=since,
            headline=headline,
            funnel=_funnel(con),
            transitions=_transitions(settings, since, cutoff),
            first_purchase_days=_first_purchase_days(con),
            cohorts=_cohorts(con),
            channels=_channels(con),
            carts=_carts(con),
        )
    finally:
        con.close()


def add_scores(settings: Settings, analytics: Analytics, sample: int = 20_000) -> None:
    """Champion scores and top actions for (a sample of) the customers at the cutoff, with their segment.

    Reads the scores `journey score` wrote for the cutoff when present; else scores a sample with
    the API's scoring function. Leaves `scores` None (and says why) without champions.
    """
    from serving.batch import BatchError, default_destination, load_context, plan_features, score_chunk
    from serving.scoring import TASK_ORDER, primary_column

    cutoff = analytics.cutoff
    path = Path(default_destination(settings, cutoff))
    if path.is_file():
        frame = pd.read_parquet(path)
        analytics.score_note = (
            f"scores written by `journey score` for this cutoff ({path.name}), {len(frame):,} customers"
        )
    else:
        try:
            ctx, _ = load_context(settings, cutoff)
        except BatchError as exc:
            analytics.score_note = f"No scores: {exc}."
            return
        plan = plan_features(settings, cutoff, None)
        n = len(plan.ids)
        if n > sample:
            keep = np.unique(np.linspace(0, n - 1, sample).astype(int))
            plan = plan_features(settings, cutoff, sorted(plan.ids.take(keep).to_pylist()))
        ctx.reasons = False
        frame = pd.concat([score_chunk(f, ctx) for f in plan.chunks(50_000)], ignore_index=True)
        versions = ", ".join(f"{t} v{v}" for t, v in ctx.versions.items())
        analytics.score_note = f"current champions ({versions}), {len(frame):,} customers" + (
            f" (an even sample of {n:,})" if n > sample else ""
        )
    if settings.customers_path.exists():
        customers = pd.read_parquet(settings.customers_path)
        if "segment" in customers.columns:
            seg = customers.drop_duplicates("customer_id").set_index("customer_id")["segment"].astype(str)
            frame["segment"] = frame["customer_id"].map(seg).fillna("unknown")
            analytics.segment_by = "segment"
    if "segment" not in frame.columns:
        frame["segment"] = frame["stage"].fillna("unknown")
    analytics.score_columns = {
        t: c for t in TASK_ORDER if (c := primary_column(t, list(frame.columns))) is not None and c in frame.columns
    }
    analytics.scores = frame


# ------------------------------------------------------------------------------ figures (matplotlib Agg)
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: smaller files, selectable words
            "svg.hashsalt": "journeyml",  # stable ids: the same data gives the same file
            "font.family": "sans-serif",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
        }
    )
    return plt


def _svg(fig: Any) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def fig_funnel(a: Analytics) -> str:
    plt = _plt()
    f = a.funnel
    fig, ax = plt.subplots(figsize=(10, 3.6))
    y = np.arange(len(f))[::-1]
    ax.barh(y, f["customers"], color=[PALETTE[s] for s in f["stage"]])
    top = max(int(f["customers"].max()), 1)
    for yi, (_, r) in zip(y, f.iterrows(), strict=True):
        label = f"{r['customers']:,}  ({r['of_all']:.0%} of all"
        label += ")" if r.name == 0 else f", {r['conversion']:.0%} of the step above, -{r['drop_off']:.0%})"
        ax.text(r["customers"] + top * 0.01, yi, label, va="center", fontsize=8)
    ax.set_yticks(y, f["step"])
    ax.set_xlim(0, top * 1.7)
    ax.set_xlabel("customers")
    ax.set_title(f"Funnel by stage (customers reaching each step by {a.cutoff.date()})")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PALETTE.values()]
    ax.legend(handles, list(PALETTE), loc="lower right", fontsize=8, frameon=False)
    return _svg(fig)


def fig_transitions(a: Analytics) -> str:
    plt = _plt()
    t = a.transitions
    rows = [s for s in ("not yet seen", *STAGE_ORDER) if s in set(t["from"])] + sorted(
        set(t["from"]) - {"not yet seen", *STAGE_ORDER}
    )
    cols = [s for s in STAGE_ORDER if s in set(t["to"])] + sorted(set(t["to"]) - set(STAGE_ORDER))
    counts = t.pivot_table(index="from", columns="to", values="customers", aggfunc="sum", fill_value=0)
    counts = counts.reindex(index=rows, columns=cols, fill_value=0)
    shares = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    mesh = ax.pcolormesh(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1, edgecolors="white", linewidth=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            share, n = shares.iat[i, j], counts.iat[i, j]
            if n:
                ax.text(j + 0.5, i + 0.5, f"{share:.0%}\n{n:,}", ha="center", va="center", fontsize=7,
                        color="white" if share > 0.55 else "black")  # fmt: skip
    ax.set_xticks(np.arange(len(cols)) + 0.5, cols, rotation=20, ha="right")
    ax.set_yticks(np.arange(len(rows)) + 0.5, [f"{r} ({int(counts.loc[r].sum()):,})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"stage at {a.cutoff.date()}")
    ax.set_ylabel(f"stage at {a.since.date()}")
    ax.set_title("Stage transitions (row shares and customers)")
    fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.02, format=lambda v, _: f"{v:.0%}")
    return _svg(fig)


def fig_time_to_first_purchase(a: Analytics) -> str:
    plt = _plt()
    days = a.first_purchase_days
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if days.size == 0:
        ax.text(0.5, 0.5, "no purchases yet", ha="center", va="center", transform=ax.transAxes)
        return _svg(fig)
    edges = np.array([0, 1, 2, 3, 7, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365, max(366, days.max() + 1)])
    counts, _ = np.histogram(days, bins=edges)
    labels = [f"{int(lo)}-{int(hi)}" if hi <= 365 else f"{int(lo)}+" for lo, hi in zip(edges[:-1], edges[1:],
                                                                                        strict=True)]  # fmt: skip
    ax.bar(np.arange(len(counts)), counts, color=PALETTE["purchase"])
    ax.set_xticks(np.arange(len(counts)), labels, rotation=30, ha="right")
    ax.set_xlabel("days from first event to first purchase")
    ax.set_ylabel("buyers")
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(counts)), np.cumsum(counts) / counts.sum(), color="#333", marker="o", ms=3, lw=1.2)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("cumulative share of buyers")
    ax2.spines["right"].set_visible(True)
    ax.set_title(f"Time to first purchase (median {np.median(days):.0f} days, {days.size:,} buyers)")
    return _svg(fig)


def fig_cohorts(a: Analytics) -> str:
    plt = _plt()
    c = a.cohorts
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if c.empty:
        ax.text(0.5, 0.5, "no cohort has 10 buyers yet", ha="center", va="center", transform=ax.transAxes)
        return _svg(fig)
    cohorts = sorted(c["cohort"].unique())[-12:]
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(cohorts):
        part = c[(c["cohort"] == name) & (c["month"] >= 1)]
        size = int(c.loc[c["cohort"] == name, "customers"].iloc[0])
        if not part.empty:
            ax.plot(part["month"], part["share"], marker="o", ms=3, lw=1.4,
                    color=cmap(i / max(len(cohorts) - 1, 1)), label=f"{name} ({size:,})")  # fmt: skip
    ax.set_xlabel("months since the first purchase")
    ax.set_ylabel("share of the cohort buying")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_title("Cohort retention by first-purchase month (repeat purchases)")
    ax.legend(fontsize=7, frameon=False, title="cohort (buyers)", title_fontsize=7, bbox_to_anchor=(1.01, 1),
              loc="upper left")  # fmt: skip
    return _svg(fig)


def fig_channels(a: Analytics) -> str:
    plt = _plt()
    ch = a.channels
    views = ["purchase channel", "last touch (30 days)", "first touch"]
    channels = sorted(set(ch["channel"].astype(str)))
    pivot = ch.assign(channel=ch["channel"].astype(str)).pivot_table(
        index="channel", columns="view", values="share", aggfunc="sum", fill_value=0.0
    )
    pivot = pivot.reindex(index=channels, columns=views, fill_value=0.0)
    order = pivot.sum(axis=1).sort_values().index
    pivot = pivot.loc[order]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(channels) + 1.4))
    y = np.arange(len(pivot))
    colors = ["#fc8d62", "#8da0cb", "#66c2a5"]
    for k, view in enumerate(views):
        ax.barh(y + (k - 1) * 0.27, pivot[view], height=0.26, color=colors[k], label=view)
    ax.set_yticks(y, pivot.index)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of revenue")
    ax.set_title("Channel contribution to revenue")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _svg(fig)


def fig_dropoff(a: Analytics) -> str:
    plt = _plt()
    f = a.funnel.iloc[1:].copy()
    f["transition"] = [f"{p} → {s}" for p, s in zip(a.funnel["step"].iloc[:-1], f["step"], strict=True)]
    f = f.sort_values("lost")
    worst = set(f.nlargest(2, "lost")["transition"])
    fig, ax = plt.subplots(figsize=(10, 3.2))
    y = np.arange(len(f))
    ax.barh(y, f["lost"], color=["#d62728" if t in worst else "#bbbbbb" for t in f["transition"]])
    top = max(int(f["lost"].max()), 1)
    for yi, (_, r) in zip(y, f.iterrows(), strict=True):
        ax.text(r["lost"] + top * 0.01, yi, f"{r['lost']:,} lost ({r['drop_off']:.0%} drop-off)", va="center",
                fontsize=8)  # fmt: skip
    ax.set_yticks(y, f["transition"])
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("customers lost between the steps")
    ax.set_title("Biggest friction points: where the funnel loses customers")
    return _svg(fig)


def fig_carts(a: Analytics) -> str:
    plt = _plt()
    c = a.carts
    fig, ax = plt.subplots(figsize=(10, 3.0))
    if c.empty:
        ax.text(0.5, 0.5, "no carts yet", ha="center", va="center", transform=ax.transAxes)
        return _svg(fig)
    channels = sorted(set(c["channel"].astype(str)))
    x = np.arange(len(channels))
    for k, (kind, color) in enumerate((("cart", "#fc8d62"), ("checkout", "#8da0cb"))):
        part = c[c["kind"] == kind].assign(channel=lambda d: d["channel"].astype(str)).set_index("channel")
        rates = part["rate"].reindex(channels)
        bars = ax.bar(x + (k - 0.5) * 0.38, rates.fillna(0), width=0.36, color=color, label=f"{kind}s abandoned")
        for bar, (ch, rate) in zip(bars, rates.items(), strict=True):
            if rate == rate:
                n = int(part.loc[ch, "started"])
                ax.text(bar.get_x() + bar.get_width() / 2, rate + 0.01, f"{rate:.0%}\nof {n:,}", ha="center",
                        va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(x, channels)
    ax.set_ylim(0, 1.2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_ylabel("abandoned (no purchase)")
    ax.set_title("Cart and checkout abandonment by channel")
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    return _svg(fig)


def _segments(frame: pd.DataFrame) -> list[str]:
    counts = frame["segment"].value_counts()
    order = [s for s in STAGE_ORDER if s in counts.index] + sorted(set(counts.index) - set(STAGE_ORDER))
    return order


def _percent(v: float, _: Any = None) -> str:
    return f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"


def fig_scores(a: Analytics) -> str:
    plt = _plt()
    assert a.scores is not None
    frame, cols = a.scores, a.score_columns
    segs = _segments(frame)
    ncols = 2 if len(cols) > 1 else 1
    nrows = -(-len(cols) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, (0.32 * len(segs) + 1.3) * nrows), squeeze=False)
    for ax in axes.flat[len(cols) :]:
        ax.set_visible(False)
    box, median = {"facecolor": "#cfe1f2", "edgecolor": "#4a78a8"}, {"color": "#d62728", "linewidth": 1.5}
    for ax, (task, col) in zip(axes.flat, cols.items(), strict=False):
        data = [frame.loc[frame["segment"] == s, col].dropna().to_numpy() for s in segs]
        ax.boxplot(data, vert=False, showfliers=False, patch_artist=True, boxprops=box, medianprops=median,
                   widths=0.6)  # fmt: skip
        ax.set_yticks(np.arange(1, len(segs) + 1), [f"{s} ({len(d):,})" for s, d in zip(segs, data, strict=True)])
        ax.invert_yaxis()
        ax.set_title(f"{task}: {col}", loc="left")
        if col.startswith("clv"):
            ax.set_xscale("symlog", linthresh=1.0)
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        elif "probability" in col:
            ax.xaxis.set_major_formatter(plt.FuncFormatter(_percent))
    fig.tight_layout()
    return _svg(fig)


def fig_actions(a: Analytics) -> str:
    plt = _plt()
    assert a.scores is not None
    frame = a.scores
    segs = _segments(frame)
    table = pd.crosstab(frame["segment"], frame["top_action"].fillna("none"), normalize="index").reindex(segs)
    actions = table.sum().sort_values(ascending=False).index.tolist()
    table = table[actions]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(segs) + 1.6))
    left = np.zeros(len(segs))
    cmap = plt.get_cmap("tab20")
    for k, action in enumerate(actions):
        values = table[action].fillna(0).to_numpy()
        color = "#dddddd" if action == "no_action" else cmap(k % 20)
        ax.barh(np.arange(len(segs)), values, left=left, color=color, label=action, edgecolor="white", linewidth=0.5)
        left += values
    ax.set_yticks(np.arange(len(segs)), segs)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of customers (best action)")
    ax.set_title(f"Next best actions by {a.segment_by}")
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _svg(fig)


# ------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2d3d;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d3de;font-size:13px}main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 16px}.card{background:#fff;border-radius:8px;
padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:130px}.card b{display:block;font-size:20px}
.card span{font-size:12px;color:#667}section{background:#fff;border-radius:8px;padding:12px 20px 16px;
margin:14px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}h2{font-size:16px;margin:6px 0 4px}
p.finding{margin:2px 0 8px;color:#445;font-size:13px}figure{margin:0}figure svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#667;margin-top:4px}p.note{color:#8a5a00;background:#fff6e0;padding:8px 12px;
border-radius:6px}footer{font-size:12px;color:#889;text-align:center;margin-top:24px}
"""


def _section(fig_id: str, title: str, finding: str, svg: str, caption: str) -> str:
    return (
        f'<section><h2>{html.escape(title)}</h2><p class="finding">{html.escape(finding)}</p>'
        f'<figure class="plot" id="{fig_id}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure></section>'
    )


def findings(a: Analytics) -> dict[str, str]:
    """One sentence per section, from the numbers."""
    f = a.funnel
    worst = f.iloc[1:].nlargest(1, "lost").iloc[0]
    prev_step = f["step"].iloc[int(worst.name) - 1]
    buyers = f.loc[f["step"] == "purchased", "customers"].iloc[0]
    out = {
        "funnel": f"{f['customers'].iloc[0]:,} customers seen; {buyers:,} bought "
        f"({buyers / max(f['customers'].iloc[0], 1):.1%}), {f['customers'].iloc[-1]:,} bought again.",
        "friction_dropoff": f"The largest loss is {prev_step} → {worst['step']}: {worst['lost']:,} customers "
        f"({worst['drop_off']:.0%} of those who reached {prev_step}).",
    }
    days = a.first_purchase_days
    if days.size:
        out["time_to_first_purchase"] = (
            f"Half of the buyers bought within {np.median(days):.0f} days of their first event; "
            f"{(days <= 30).mean():.0%} within 30 days."
        )
    c = a.cohorts
    m1 = c[c["month"] == 1]
    if not m1.empty:
        out["cohort_retention"] = (
            f"On average {m1['share'].mean():.1%} of a cohort buys again in the month after its first purchase "
            f"({len(c['cohort'].unique())} cohorts of at least 10 buyers)."
        )
    last = a.channels[a.channels["view"] == "last touch (30 days)"]
    if not last.empty:
        top = last.sort_values("share", ascending=False).iloc[0]
        out["channel_contribution"] = (
            f"The last marketing touch before most revenue is {top['channel']} ({top['share']:.0%})."
        )
    carts = a.carts[a.carts["kind"] == "cart"]
    if not carts.empty:
        w = carts.sort_values("rate", ascending=False).iloc[0]
        out["cart_abandonment"] = (
            f"Carts are abandoned most on {w['channel']}: {w['rate']:.0%} of {int(w['started']):,}."
        )
    t = a.transitions
    moved = t[(t["from"] != t["to"]) & (t["from"] != "not yet seen")]["customers"].sum()
    known = t[t["from"] != "not yet seen"]["customers"].sum()
    out["transitions"] = (
        f"{moved:,} of {known:,} customers known at {a.since.date()} changed stage by {a.cutoff.date()}; "
        f"{t[t['from'] == 'not yet seen']['customers'].sum():,} arrived since."
    )
    return out


def render(a: Analytics) -> str:
    """The whole report as one HTML string (no external resources)."""
    h = a.headline
    say = findings(a)
    cards = [
        ("customers", f"{h['customers']:,}"),
        ("buyers", f"{h['buyers']:,}"),
        ("purchases", f"{h['purchases']:,}"),
        ("revenue", f"{h['revenue']:,.0f}"),
        ("events", f"{h['events']:,}"),
    ]
    parts = [
        _section("funnel", "Funnel by stage", say["funnel"], fig_funnel(a),
                 "Customers with at least one event of each step by the cutoff; colours are the contract's stages."),
        _section("transitions", "Stage transitions", say["transitions"], fig_transitions(a),
                 "Journey stage (feature engine) at the two cutoffs; each row sums to 100%."),
        _section("time_to_first_purchase", "Time to first purchase", say.get("time_to_first_purchase", "No purchases."),
                 fig_time_to_first_purchase(a), "Days from a buyer's first event of any kind to their first purchase."),
        _section("cohort_retention", "Cohort retention", say.get("cohort_retention", "Too few buyers per month."),
                 fig_cohorts(a), "Share of each first-purchase month's buyers who buy in each later calendar month; "
                 "the latest month may be partial."),
        _section("channel_contribution", "Channel contribution", say.get("channel_contribution", ""), fig_channels(a),
                 "Revenue share by the channel of the purchase, of the last marketing touch (ad click, email open or "
                 "click, social engagement, referral) in the 30 days before it ('none' without one), and of the "
                 "customer's first own event."),
        _section("friction_dropoff", "Biggest friction points", say["friction_dropoff"], fig_dropoff(a),
                 "Customers who reached a step but not the next one; the two largest losses in red."),
        _section("cart_abandonment", "Cart abandonment by channel", say.get("cart_abandonment", "No carts."),
                 fig_carts(a), "A cart (or checkout) is a session with an add to cart (checkout start); abandoned "
                 "when no purchase follows in the session (without a session id: within 24 hours)."),
    ]  # fmt: skip
    if a.scores is not None and a.score_columns:
        parts.append(
            _section("scores_by_segment", f"Scores by {a.segment_by}", a.score_note, fig_scores(a),
                     "Distribution of each champion's main score (box: quartiles, line: median; outliers hidden).")
        )  # fmt: skip
        parts.append(
            _section("actions_by_segment", f"Next best actions by {a.segment_by}", a.score_note, fig_actions(a),
                     "Share of customers whose best action is each one (no_action in grey).")
        )  # fmt: skip
    else:
        parts.append(
            '<section id="scores_missing"><h2>Scores and actions by segment</h2><p class="note">'
            + html.escape(a.score_note or "No champion models yet: run `journey train` to add scores and actions.")
            + "</p></section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>journeyml report as of {a.cutoff.date()}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Customer journey report</h1><p>events up to {html.escape(a.cutoff.isoformat())} "
        f"(first event {html.escape(str(h['first_event'])[:10])}); stage transitions since {a.since.date()}</p>"
        '</header><main><div class="cards">'
        + "".join(f'<div class="card"><b>{v}</b><span>{k}</span></div>' for k, v in cards)
        + "</div>"
        + "".join(parts)
        + "<footer>journeyml · generated by <code>journey report</code> · static file, no external resources"
        "</footer></main></body></html>\n"
    )


def write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def log_report(settings: Settings, a: Analytics, path: Path) -> str | None:
    import mlflow

    from training.registry import client, default_artifact_root, use_experiment

    uri = settings.tracking_uri
    try:
        client(uri)
        use_experiment(EXPERIMENT, default_artifact_root(uri, settings.root))
        with mlflow.start_run(run_name=f"report-{a.cutoff.date()}", tags={"cutoff": a.cutoff.isoformat()}) as run:
            mlflow.log_metrics({k: float(v) for k, v in a.headline.items() if isinstance(v, int | float)})
            mlflow.log_artifact(str(path))
            return str(run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - the report is written; a tracking failure must not hide that
        err.print(f"[yellow]warning[/yellow]: could not log the report to MLflow ({type(exc).__name__}: {exc})")
        return None


def build_report(settings: Settings, cutoff: pd.Timestamp | None, out: Path, since_days: int = 90) -> dict[str, Any]:
    started = time.perf_counter()
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out must be an .html file, not {out}")
    analytics = gather(settings, cutoff, since_days)
    add_scores(settings, analytics)
    text = render(analytics)
    write_atomic(out, text)
    sections = re.findall(r'<figure class="plot" id="([a-z_]+)"', text)
    return {
        "ok": True,
        "out": str(out.resolve()),
        "cutoff": analytics.cutoff.isoformat(),
        "since": analytics.since.isoformat(),
        "bytes": len(text.encode()),
        "plots": sections,
        "scores": analytics.scores is not None,
        "headline": analytics.headline,
        "findings": findings(analytics),
        "mlflow_run_id": log_report(settings, analytics, out),
        "seconds": round(time.perf_counter() - started, 3),
    }


def command(
    as_of: str | None = typer.Option(None, "--as-of", help="Cutoff (UTC); default: the last event in the store."),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    since_days: int = typer.Option(90, "--since-days", min=1, help="Stage transitions from T minus these days."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Write the journey analytics report: funnel, transitions, cohorts, channels, friction, scores."""
    from core.time import to_utc

    cutoff = None
    if as_of is not None:
        try:
            cutoff = to_utc(as_of)
        except ValueError as exc:
            fail(str(exc), json_out)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        summary = build_report(get_settings(), cutoff, out, since_days)
    except ReportError as exc:
        fail(str(exc), json_out)
    emit(summary, json_out, f"report as of {summary['cutoff']} -> {summary['out']} ({len(summary['plots'])} plots)")
