"""Turn the day loop's logs into contract events: visits expanded into touchpoints, emails, ads, after-sales.

Details (page counts, seconds, amounts, times of day) come from their own random stream and never
feed back into the state machine, so no event before a cutoff carries information about what
happens after it beyond the latent state at the cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contract import CHANNELS, CUSTOMER_SCHEMA, EVENT_SCHEMA, EVENT_TYPE_LIST
from features.simulator import params as P
from features.simulator.faults import (
    BAD_CHANNEL,
    BAD_PROPERTIES,
    BAD_TYPES,
    FAULT_KINDS,
    FAULTY_SCHEMA,
    Codes,
    empty_fault_log,
    inject,
)
from features.simulator.generate import ARRIVAL, BROWSE, CONSIDER, PURCHASE, SimConfig, Trajectory

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
TYPE = {name: i for i, name in enumerate(EVENT_TYPE_LIST)}
CHAN = {name: i for i, name in enumerate(CHANNELS)}
SRC_CHAN = np.array([CHAN[c] for c in P.SOURCE_CHANNEL], dtype=np.int8)


def stream(seed: int, k: int) -> np.random.Generator:
    """The k-th independent random stream of a seed (0 latent, 1 day loop, 2 details, 3 faults)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(k,))))


def fixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Strings prefix + zero-padded number, built as one Arrow buffer (no Python loop over rows)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    length = len(head) + width
    buf = np.empty((n, length), dtype=np.uint8)
    buf[:, : len(head)] = head
    rest = numbers.copy()
    for j in range(width - 1, -1, -1):  # one pass per digit
        buf[:, len(head) + j] = 48 + rest % 10
        rest //= 10
    offsets = np.arange(n + 1, dtype=np.int64) * length
    if offsets[-1] < 2**31:
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buf))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf)).cast(pa.string())


def id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def customer_ids(n: int) -> pa.Array:
    return fixed_ids("c", np.arange(n), id_width(n, 6))


class _Chunks:
    """Columns of events under construction, appended chunk by chunk as compact numpy arrays."""

    DTYPES: dict[str, type] = {
        "cust": np.int32,
        "time": np.int64,  # microseconds since the start
        "etype": np.int8,
        "chan": np.int8,
        "session": np.int32,  # -1: none
        "value": np.float64,  # NaN: none
        "prop": np.int32,  # index into the static property strings, -1: none
        "order": np.int32,  # order number for purchases and refunds, -1: none
        "items": np.int16,  # items in the order (purchases only)
    }
    DEFAULTS: dict[str, float] = {"session": -1, "value": np.nan, "prop": -1, "order": -1, "items": 0}

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in self.DTYPES}

    def add(
        self,
        cust: np.ndarray,
        time: np.ndarray,
        etype: int | np.ndarray,
        chan: int | np.ndarray,
        **extra: np.ndarray | float,
    ) -> None:
        n = len(cust)
        given: dict[str, object] = {"cust": cust, "time": time, "etype": etype, "chan": chan, **extra}
        for key, dtype in self.DTYPES.items():
            col: np.ndarray = np.asarray(given.get(key, self.DEFAULTS.get(key)), dtype=dtype)
            self.cols[key].append(col if col.ndim else np.full(n, col, dtype=dtype))

    def finish(self) -> dict[str, np.ndarray]:
        """All columns, sorted by time (ties keep the order of construction); frees the chunks as it goes."""
        out: dict[str, np.ndarray] = {}
        for key in list(self.cols):
            chunks = self.cols.pop(key)
            out[key] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=self.DTYPES[key])
            del chunks
        order = np.argsort(out["time"], kind="stable")
        for key in out:
            out[key] = out[key][order]
        return out


@dataclass
class _Props:
    """The small set of distinct property strings; events point into it by index."""

    strings: list[str] = field(default_factory=list)

    def block(self, strings: Sequence[str]) -> int:
        base = len(self.strings)
        self.strings.extend(strings)
        return base


@dataclass
class Built:
    events: pa.Table  # EVENT_SCHEMA sorted by event_time; with faults FAULTY_SCHEMA, in faulty file order
    customers: pa.Table
    purchases: pd.DataFrame  # clean purchase log (ground truth helper)
    contacts: pd.DataFrame  # contact log with true effects
    faults: pd.DataFrame  # row, event_id, kind of every faulty row of `events`
    consent: dict[str, np.ndarray]  # email_opt_in / email_opt_out: per customer, microseconds since the start, -1 never


def _time_of_day(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """Microseconds into the day: an hour by weight, uniform within the hour."""
    hour = rng.choice(24, n, p=weights / weights.sum())
    return ((hour + rng.random(n)) * 3600 * SECOND_US).astype(np.int64)


def _later_same_day(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    later = t + (rng.uniform(lo, hi, len(t)) * SECOND_US).astype(np.int64)
    return np.minimum(later, (t // DAY_US + 1) * DAY_US - SECOND_US)


class _Builder:
    """Expands a trajectory into event columns. One method per family of touchpoints."""

    def __init__(self, cfg: SimConfig, traj: Trajectory) -> None:
        self.cfg, self.traj, self.lat = cfg, traj, traj.latent
        self.rng = stream(cfg.seed, 2)
        self.n, self.days = cfg.n_customers, cfg.days
        self.ch = _Chunks()
        props = self.props = _Props()
        self.product_base = props.block([f'{{"product_id": "p{i:05d}"}}' for i in range(P.N_PRODUCTS)])
        product_p = 1.0 / (np.arange(P.N_PRODUCTS) + 10.0) ** 1.1
        self.product_p = product_p / product_p.sum()
        self.campaign_base = props.block([f'{{"campaign": "{c}"}}' for c in ("newsletter", *P.ACTION_IDS)])
        self.rating_base = props.block([f'{{"rating": {r}}}' for r in range(1, 6)]) - 1
        self.topic_base = props.block([f'{{"topic": "{t}"}}' for t in P.SUPPORT_TOPICS])
        self.plan_prop = props.block(['{"plan": "membership"}'])
        death_day = self.lat["death_day"]
        self.last_alive = np.where(death_day < 0, self.days - 1, death_day)

        # purchases: which are in store, amounts, times of day
        pur = traj.purchases
        rng = self.rng
        self.n_pur = n_pur = len(pur["cust"])
        self.in_store = ~pur["first"] & (rng.random(n_pur) < self.lat["store_share"][pur["cust"]])
        self.amount = np.round(self.lat["amount_mean"][pur["cust"]] * rng.lognormal(-0.08, 0.4, n_pur), 2)
        self.pur_tod = _time_of_day(rng, n_pur, P.HOUR_WEIGHTS)
        self.pur_time = pur["day"] * DAY_US + self.pur_tod
        self.first_seen = np.zeros(self.n, dtype=np.int64)
        opt_out_day = self.lat["opt_out_day"]
        self.opted_out_before = np.where(opt_out_day < 0, self.days, opt_out_day + 1)  # the first day without email
        self.consent: dict[str, np.ndarray] = {}
        self.n_sessions = 0
        self.con_time = np.zeros(0, dtype=np.int64)

    def alive_on(self, cust: np.ndarray, day: np.ndarray | int) -> np.ndarray:
        return np.asarray(day <= self.last_alive[cust])

    def visits(self) -> None:
        """Loop visits plus one visit per online purchase, expanded slot by slot into touchpoints."""
        rng, lat, pur, ses = self.rng, self.lat, self.traj.purchases, self.traj.sessions
        online = np.flatnonzero(~self.in_store)
        p_cust = pur["cust"][online]
        p_in_app = lat["app_user"][p_cust] & (rng.random(len(online)) < 0.6)
        p_src = np.where(
            p_in_app, P.SRC_APP, rng.choice(5, len(online), p=P.SOURCE_P_PURCHASE / P.SOURCE_P_PURCHASE.sum())
        )
        no_email = pur["day"][online] >= self.opted_out_before[p_cust]  # as in the day loop's visits
        p_src = np.where((p_src == P.SRC_EMAIL) & no_email, P.SRC_WEB, p_src)
        s_cust = np.concatenate([ses["cust"], p_cust])
        s_day = np.concatenate([ses["day"], pur["day"][online]])
        s_kind = np.concatenate([ses["kind"], np.full(len(online), PURCHASE, dtype=np.int8)])
        s_state = np.concatenate(
            [ses["state"], np.where(pur["first"][online], P.CONSIDERING, P.CUSTOMER).astype(np.int8)]
        )
        s_src = np.concatenate([ses["src"], p_src]).astype(np.int8)
        s_cart = np.concatenate([ses["cart"], np.ones(len(online), dtype=bool)])
        s_purchase = np.concatenate([np.full(len(ses["cust"]), -1), online])
        n_s = self.n_sessions = len(s_cust)

        considering = s_state == P.CONSIDERING
        bounce_p = np.array([0.0, 0.35, 0.15, 0.15, 0.5])[s_state]
        bounce = ((s_kind == BROWSE) | (s_kind == ARRIVAL)) & (rng.random(n_s) < bounce_p)
        full = ~bounce
        s_cart &= full
        is_pur = s_kind == PURCHASE
        landing = np.isin(s_src, (P.SRC_EMAIL, P.SRC_SOCIAL, P.SRC_ADS)) | (s_kind == ARRIVAL)
        pv_mean = np.where(considering, 2.0, np.where(s_state == P.AWARE, 0.6, 1.2))
        n_add = np.where(s_cart, 1 + rng.poisson(0.5, n_s), 0)
        n_remove = (n_add > 0) & (rng.random(n_s) < np.where(is_pur, 0.1, 0.2)) & (~is_pur | (n_add >= 2))
        u = rng.random((7, n_s))
        slots: list[tuple[str, np.ndarray]] = [
            ("social_engagement", s_src == P.SRC_SOCIAL),
            ("ad_impression", s_src == P.SRC_ADS),
            ("ad_click", s_src == P.SRC_ADS),
            ("email_open", s_src == P.SRC_EMAIL),
            ("email_click", s_src == P.SRC_EMAIL),
            ("session_start", np.ones(n_s, dtype=bool)),
            ("landing_page_view", landing),
            ("login", (s_src == P.SRC_APP) & full),
            ("page_view", np.where(full, 1 + rng.poisson(0.8, n_s), ~landing)),
            ("search", np.where(full & (u[0] < 0.4), 1 + (u[1] < 0.3), 0)),
            ("product_view", np.where(full, rng.poisson(pv_mean) + ((s_kind == CONSIDER) | is_pur | considering), 0)),
            ("review_read", full & (u[2] < np.where(considering, 0.3, 0.12))),
            ("compare", full & (u[3] < np.where(considering, 0.2, 0.06))),
            ("video_view", full & (u[4] < 0.08)),
            ("content_download", full & (u[5] < np.where(considering, 0.12, 0.03))),
            ("add_to_cart", n_add),
            ("remove_from_cart", n_remove),
            ("checkout_start", is_pur | (s_cart & (u[6] < 0.25))),
            ("purchase", is_pur),
            ("bounce", bounce),
        ]
        del u, considering, full, landing, pv_mean
        counts = [np.asarray(c, dtype=np.int32) for _, c in slots]
        per_session = np.sum(counts, axis=0, dtype=np.int64)
        session_base = np.concatenate([[0], np.cumsum(per_session)[:-1]])
        total = int(per_session.sum())
        e_session = np.empty(total, dtype=np.int32)
        e_type = np.empty(total, dtype=np.int8)
        running = session_base.copy()
        for (name, _), c in zip(slots, counts, strict=True):  # one pass per slot kind, vectorised over visits
            who = np.repeat(np.arange(n_s, dtype=np.int32), c)
            within = np.arange(len(who)) - np.repeat(np.cumsum(c, dtype=np.int64) - c, c)
            pos = running[who] + within
            e_session[pos] = who
            e_type[pos] = TYPE[name]
            running += c
        del slots, counts, running

        # seconds to the next event; page, product and video views record theirs as the value
        gap = np.zeros(total)
        value = np.full(total, np.nan)
        for name, (lo, hi) in GAP_SECONDS.items():
            mask = e_type == TYPE[name]
            gap[mask] = rng.uniform(lo, hi, int(mask.sum()))
        for name, median in (("landing_page_view", 25.0), ("page_view", 35.0), ("product_view", 45.0)):
            mask = e_type == TYPE[name]
            secs = np.minimum(rng.lognormal(np.log(median), 0.8, int(mask.sum())), 900.0)
            gap[mask] = secs
            if name != "landing_page_view":
                value[mask] = secs
        mask = e_type == TYPE["video_view"]
        value[mask] = gap[mask] = rng.uniform(10, 240, int(mask.sum()))
        offset = np.cumsum(gap)
        offset -= gap  # seconds since the visit's first event, once the visit's start is subtracted
        del gap
        offset -= offset[session_base][e_session]
        last = session_base + per_session - 1
        duration = offset[last]
        scale = np.minimum(1.0, P.MAX_VISIT_SECONDS / np.maximum(duration, 1e-9))
        offset *= scale[e_session]
        value *= scale[e_session]
        value = np.round(value, 1)

        base = np.zeros(n_s, dtype=np.int64)
        base[~is_pur] = _time_of_day(rng, int((~is_pur).sum()), P.VISIT_HOURS)
        base[is_pur] = self.pur_tod[s_purchase[is_pur]] - np.round(duration[is_pur] * scale[is_pur] * SECOND_US).astype(
            np.int64
        )
        s_time = s_day * DAY_US + base
        e_time = s_time[e_session] + np.round(offset * SECOND_US).astype(np.int64)
        del offset
        pur_pos = last[is_pur]  # a purchase is the last event of its visit: pin it to the drawn time
        e_time[pur_pos] = self.pur_time[s_purchase[is_pur]]

        src_slot = np.isin(e_type, [TYPE[t] for t in SOURCE_TYPES])
        platform = np.where(s_src == P.SRC_APP, CHAN["app"], CHAN["web"]).astype(np.int8)
        e_chan = np.where(src_slot, SRC_CHAN[s_src[e_session]], platform[e_session])
        e_prop = np.full(total, -1, dtype=np.int32)
        is_product = np.isin(e_type, [TYPE["product_view"], TYPE["add_to_cart"], TYPE["remove_from_cart"]])
        e_prop[is_product] = self.product_base + rng.choice(P.N_PRODUCTS, int(is_product.sum()), p=self.product_p)
        del is_product
        e_prop[np.isin(e_type, [TYPE["email_open"], TYPE["email_click"]])] = self.campaign_base
        e_order = np.full(total, -1, dtype=np.int32)
        e_items = np.zeros(total, dtype=np.int16)
        e_order[pur_pos] = s_purchase[is_pur]
        e_items[pur_pos] = (n_add - n_remove)[is_pur]
        value[pur_pos] = self.amount[s_purchase[is_pur]]
        e_cust = s_cust[e_session]
        e_session[src_slot] = -1  # the ad or email that led to a visit is not part of it
        self.ch.add(
            e_cust,
            e_time,
            e_type,
            e_chan,
            session=e_session,
            value=value,
            prop=e_prop,
            order=e_order,
            items=e_items,
        )
        arrival_visit = s_kind == ARRIVAL
        self.first_seen[s_cust[arrival_visit]] = s_time[arrival_visit]

    def store_purchases(self) -> None:
        pur, st = self.traj.purchases, np.flatnonzero(self.in_store)
        items = 1 + self.rng.poisson(0.6, len(st))
        self.ch.add(
            pur["cust"][st],
            self.pur_time[st],
            TYPE["purchase"],
            CHAN["store"],
            value=self.amount[st],
            order=st,
            items=items,
        )

    def contacts(self) -> None:
        """Marketing contacts and the message that carries each: an email (opens, clicks), an app push or an ad."""
        rng, ch, con = self.rng, self.ch, self.traj.contacts
        n_con = len(con["cust"])
        con_time = self.con_time = con["day"] * DAY_US + ((10 + 2 * rng.random(n_con)) * 3600 * SECOND_US).astype(
            np.int64
        )
        combos = sorted(set(zip(con["action"].tolist(), con["propensity"].tolist(), strict=True)))
        combo_base = self.props.block([f'{{"action": "{P.ACTION_IDS[a]}", "propensity": {p!r}}}' for a, p in combos])
        con_prop = np.full(n_con, -1, dtype=np.int32)
        for i, (a, p) in enumerate(combos):  # one pass per distinct (action, propensity): a handful
            con_prop[(con["action"] == a) & (con["propensity"] == p)] = combo_base + i
        act_chan = np.array([CHAN[P.ACTION_CHANNEL[a]] for a in P.ACTION_IDS], dtype=np.int8)[con["action"]]
        ch.add(con["cust"], con_time, TYPE["marketing_contact"], act_chan, prop=con_prop)
        by_email = act_chan == CHAN["email"]
        cust, sent, camp = (
            con["cust"][by_email],
            con_time[by_email] + SECOND_US,
            self.campaign_base + 1 + con["action"][by_email],
        )
        ch.add(cust, sent, TYPE["email_sent"], CHAN["email"], prop=camp)
        engaged = self.lat["email_engagement"][cust] * np.where(self.alive_on(cust, con["day"][by_email]), 1.0, 0.2)
        opened = rng.random(len(cust)) < engaged
        open_time = _later_same_day(rng, sent[opened], 60, 6 * 3600)
        ch.add(cust[opened], open_time, TYPE["email_open"], CHAN["email"], prop=camp[opened])
        clicked = rng.random(len(open_time)) < 0.3
        click_time = _later_same_day(rng, open_time[clicked], 5, 300)
        ch.add(cust[opened][clicked], click_time, TYPE["email_click"], CHAN["email"], prop=camp[opened][clicked])
        by_ads = act_chan == CHAN["ads"]
        ch.add(
            con["cust"][by_ads], _later_same_day(rng, con_time[by_ads], 60, 3600), TYPE["ad_impression"], CHAN["ads"]
        )

    def newsletter(self) -> None:
        """A weekly newsletter (Thursdays) to subscribers known before that day and not opted out; the churned
        rarely open it."""
        rng, lat, ch = self.rng, self.lat, self.ch
        dows = pd.DatetimeIndex(self.cfg.start + pd.to_timedelta(np.arange(self.days), unit="D")).dayofweek.to_numpy()
        for d in np.flatnonzero(dows == P.NEWSLETTER_WEEKDAY):  # one pass per week
            who = np.flatnonzero(lat["subscribed"] & (lat["arrival_day"] < d) & (self.opted_out_before > d))
            t = d * DAY_US + ((9 + 0.5 * rng.random(len(who))) * 3600 * SECOND_US).astype(np.int64)
            ch.add(who, t, TYPE["email_sent"], CHAN["email"], prop=self.campaign_base)
            p_open = 0.8 * lat["email_engagement"][who] * np.where(self.alive_on(who, int(d)), 1.0, 0.2)
            opened = rng.random(len(who)) < p_open
            open_time = _later_same_day(rng, t[opened], 60, 8 * 3600)
            ch.add(who[opened], open_time, TYPE["email_open"], CHAN["email"], prop=self.campaign_base)
            clicked = rng.random(len(open_time)) < 0.25
            click_time = _later_same_day(rng, open_time[clicked], 5, 300)
            ch.add(who[opened][clicked], click_time, TYPE["email_click"], CHAN["email"], prop=self.campaign_base)

    def _spread(self, rate: float, first: np.ndarray, last_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poisson(rate per day) touchpoints per customer, uniform over the days first..last_day."""
        rng = self.rng
        span = np.maximum(last_day - first + 1, 0)
        k = rng.poisson(rate * span)
        cust = np.repeat(np.arange(self.n), k)
        day = first[cust] + (rng.random(len(cust)) * span[cust]).astype(np.int64)
        return cust, day * DAY_US + _time_of_day(rng, len(cust), P.VISIT_HOURS)

    def background(self) -> None:
        """Ads reach everyone known; social engagement and support tickets only come from the living."""
        arrival, ch = self.lat["arrival_day"], self.ch
        c, t = self._spread(0.025, arrival + 1, np.full(self.n, self.days - 1))
        ch.add(c, t, TYPE["ad_impression"], CHAN["ads"])
        c, t = self._spread(0.01, arrival + 1, self.last_alive)
        ch.add(c, t, TYPE["social_engagement"], CHAN["social"])
        c, t = self._spread(0.002, arrival + 1, self.last_alive)
        topics = self.topic_base + self.rng.integers(0, len(P.SUPPORT_TOPICS), len(c))
        ch.add(c, t, TYPE["support_ticket"], CHAN["support"], prop=topics)

    def _after(self, p: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Purchases drawn with probability p and a time lo..hi days later (dropped past the end)."""
        rng, pur = self.rng, self.traj.purchases
        pick = np.flatnonzero(rng.random(self.n_pur) < p)
        day = pur["day"][pick] + rng.integers(lo, hi + 1, len(pick))
        t = day * DAY_US + _time_of_day(rng, len(pick), P.VISIT_HOURS)
        keep = day < self.days
        return pick[keep], t[keep]

    def after_sales(self) -> None:
        """Refunds, tickets, NPS answers, reviews and referrals after purchases; satisfaction drives most."""
        rng, ch, amount = self.rng, self.ch, self.amount
        cust = self.traj.purchases["cust"]
        sat = self.lat["satisfaction"][cust]
        k, t = self._after(0.02 + 0.1 * (1 - sat), 2, 25)
        refund = np.where(rng.random(len(k)) < 0.7, amount[k], np.round(amount[k] * rng.uniform(0.2, 0.8, len(k)), 2))
        ch.add(cust[k], t, TYPE["refund"], CHAN["web"], value=refund, order=k)
        k, t = self._after(np.full(self.n_pur, 0.05), 1, 10)
        topics = self.topic_base + rng.integers(0, len(P.SUPPORT_TOPICS), len(k))
        ch.add(cust[k], t, TYPE["support_ticket"], CHAN["support"], prop=topics)
        k, t = self._after(np.full(self.n_pur, 0.12), 2, 7)
        nps = np.clip(np.round(10 * sat[k] + rng.normal(0, 1.5, len(k))), 0, 10)
        ch.add(cust[k], t, TYPE["nps_response"], CHAN["email"], value=nps)
        k, t = self._after(np.full(self.n_pur, 0.07), 3, 20)
        rating = np.clip(np.round(1 + 4 * sat[k] + rng.normal(0, 0.8, len(k))), 1, 5).astype(np.int64)
        ch.add(cust[k], t, TYPE["review_written"], CHAN["web"], prop=self.rating_base + rating)
        k, t = self._after(0.05 * sat, 1, 30)
        ch.add(cust[k], t, TYPE["referral"], CHAN["web"])

    def cancellations(self) -> None:
        """A member's cancellation shows the day after they churned (never before: it must not foretell)."""
        de = self.traj.deaths
        cancel = (
            self.lat["app_user"][de["cust"]] & (de["day"] + 1 < self.days) & (self.rng.random(len(de["cust"])) < 0.5)
        )
        t = (de["day"][cancel] + 1) * DAY_US + _time_of_day(self.rng, int(cancel.sum()), P.VISIT_HOURS)
        self.ch.add(de["cust"][cancel], t, TYPE["subscription_cancel"], CHAN["app"], prop=self.plan_prop)

    def consents(self) -> None:
        """Email consent records: a subscriber opts in during the first visit; the day loop's opt-outs land
        after that day's marketing emails (contacts 10:00-12:00, newsletter 09:00-09:30)."""
        rng, lat = self.rng, self.lat
        joins = np.flatnonzero(lat["subscribed"])
        opt_in = np.full(self.n, -1, dtype=np.int64)
        opt_in[joins] = _later_same_day(rng, self.first_seen[joins], 20, 600)
        self.ch.add(joins, opt_in[joins], TYPE["consent_change"], CHAN["email"], value=1.0)
        leaves = np.flatnonzero(lat["opt_out_day"] >= 0)
        lo, hi = P.OPT_OUT_HOURS
        opt_out = np.full(self.n, -1, dtype=np.int64)
        opt_out[leaves] = lat["opt_out_day"][leaves] * DAY_US + (
            rng.uniform(lo, hi, len(leaves)) * 3600 * SECOND_US
        ).astype(np.int64)
        self.ch.add(leaves, opt_out[leaves], TYPE["consent_change"], CHAN["email"], value=0.0)
        self.consent = {"email_opt_in": opt_in, "email_opt_out": opt_out}


GAP_SECONDS: dict[str, tuple[float, float]] = {
    "social_engagement": (5, 120),
    "ad_impression": (2, 300),
    "ad_click": (1, 4),
    "email_open": (5, 600),
    "email_click": (1, 4),
    "session_start": (0.5, 3),
    "login": (2, 10),
    "search": (3, 20),
    "review_read": (20, 180),
    "compare": (20, 200),
    "content_download": (5, 30),
    "add_to_cart": (5, 40),
    "remove_from_cart": (3, 20),
    "checkout_start": (30, 240),
}
SOURCE_TYPES = ("social_engagement", "ad_impression", "ad_click", "email_open", "email_click")


def build(cfg: SimConfig, traj: Trajectory) -> Built:
    """Events (sorted by time, ids e000000000.. in that order), customers and the clean logs."""
    b = _Builder(cfg, traj)
    b.visits()
    b.store_purchases()
    b.contacts()
    b.newsletter()
    b.background()
    b.after_sales()
    b.cancellations()
    b.consents()
    start_us = int(cfg.start.value // 1000)
    cids = customer_ids(cfg.n_customers)
    cols = b.ch.finish()
    cols["eid"] = np.arange(len(cols["time"]), dtype=np.int64)
    fault: np.ndarray | None = None
    if cfg.faults > 0 and len(cols["time"]):
        codes = Codes(
            purchase=TYPE["purchase"],
            bad_types=np.arange(len(EVENT_TYPE_LIST), len(EVENT_TYPE_LIST) + len(BAD_TYPES)),
            bad_channel=len(CHANNELS),
            bad_properties=b.props.block([BAD_PROPERTIES]),
            start_us=start_us,
        )
        cols, fault = inject(cols, cfg.faults, stream(cfg.seed, 3), codes)
    # The seed is part of every event id: two simulations ingested into one workspace never collide.
    events = _to_arrow(
        cols,
        b.props.strings,
        cids,
        start_us,
        b.n_pur,
        b.n_sessions,
        faulty=fault is not None,
        id_prefix=f"s{cfg.seed}-e",
    )
    fault_log = empty_fault_log()
    if fault is not None:
        rows = np.flatnonzero(fault)
        fault_log = pd.DataFrame(
            {
                "row": rows.astype(np.int64),
                "event_id": arrow_strings(events.column("event_id").take(pa.array(rows))),
                "kind": arrow_strings(pa.array(np.array(FAULT_KINDS)[fault[rows]], type=pa.string())),
            }
        )
    lat = traj.latent
    customers = pa.Table.from_arrays(
        [
            cids,
            pa.array(b.first_seen + start_us, type=pa.timestamp("us", tz="UTC")),
            pa.array(np.array(P.COUNTRIES)[lat["country"]]),
            pa.array(np.array(P.SEGMENTS)[lat["segment"]]),
            pa.array(np.array(P.ACQUISITION)[lat["acquisition"]]),
        ],
        schema=CUSTOMER_SCHEMA,
    )
    pur, con = traj.purchases, traj.contacts
    purchases = pd.DataFrame(
        {
            "customer_id": arrow_strings(pc.take(cids, pa.array(pur["cust"]))),
            "event_time": pd.to_datetime(b.pur_time + start_us, unit="us", utc=True),
            "day": pur["day"],
            "order_id": arrow_strings(fixed_ids("o", np.arange(b.n_pur), id_width(b.n_pur, 7))),
            "amount": b.amount,
            "first": pur["first"],
            "in_store": b.in_store,
        }
    )
    contacts = pd.DataFrame(
        {
            "customer_id": arrow_strings(pc.take(cids, pa.array(con["cust"]))),
            "event_time": pd.to_datetime(b.con_time + start_us, unit="us", utc=True),
            "day": con["day"],
            "action": arrow_strings(pa.array(np.array(P.ACTION_IDS)[con["action"]], type=pa.string())),
            "propensity": con["propensity"],
            "targeted": con["targeted"],
            "stage": arrow_strings(pa.array(np.array(P.STAGE_NAMES)[con["stage"]], type=pa.string())),
            "beta": con["beta"],
            "rho": con["rho"],
        }
    )
    return Built(
        events=events,
        customers=customers,
        purchases=purchases,
        contacts=contacts,
        faults=fault_log,
        consent=b.consent,
    )


def arrow_strings(arr: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """An Arrow string array as a pandas column without copying (dtype string[pyarrow], an ArrowDtype)."""
    return pd.arrays.ArrowExtensionArray(arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr]))


def _to_arrow(
    cols: dict[str, np.ndarray],
    prop_strings: list[str],
    cids: pa.Array,
    start_us: int,
    n_orders: int,
    n_sessions: int,
    faulty: bool,
    id_prefix: str = "e",
) -> pa.Table:
    """Arrow columns in the event schema; numpy columns are dropped from `cols` as soon as they are converted.

    Negative codes mean null; codes past the contract's vocabularies are the malformed values of faults.
    """
    prop = cols.pop("prop")
    properties = pc.take(pa.array(prop_strings, type=pa.string()), pa.array(prop, mask=prop < 0))
    del prop
    order, items, etype = cols.pop("order"), cols.pop("items"), cols.pop("etype")
    has_order = order >= 0
    if has_order.any():
        order_ids = pc.take(fixed_ids("o", np.arange(n_orders), id_width(n_orders, 7)), pa.array(order[has_order]))
        is_purchase = etype[has_order] == TYPE["purchase"]
        items_text = pa.array(items[has_order].astype(str))
        with_items = pc.binary_join_element_wise('{"order_id": "', order_ids, '", "items": ', items_text, "}", "")
        without = pc.binary_join_element_wise('{"order_id": "', order_ids, '"}', "")
        order_json = pc.if_else(pa.array(is_purchase), with_items, without)
        properties = pc.replace_with_mask(properties, pa.array(has_order), order_json)
    del order, items, has_order
    eid = cols.pop("eid")
    arrays: list[pa.Array] = [fixed_ids(id_prefix, eid, id_width(int(eid.max(initial=0)) + 1, 9))]
    del eid
    cust = cols.pop("cust")
    arrays.append(pc.take(cids, pa.array(cust, mask=cust < 0)))
    del cust
    arrays.append(pa.array(cols.pop("time") + start_us, type=pa.timestamp("us", tz="UTC")))
    arrays.append(pc.take(pa.array([*EVENT_TYPE_LIST, *BAD_TYPES], type=pa.string()), pa.array(etype)))
    del etype
    arrays.append(pc.take(pa.array([*CHANNELS, BAD_CHANNEL], type=pa.string()), pa.array(cols.pop("chan"))))
    session = cols.pop("session")
    session_ids = fixed_ids("s", np.arange(n_sessions), id_width(n_sessions, 8))
    arrays.append(pc.take(session_ids, pa.array(session, mask=session < 0)))
    del session, session_ids
    value = cols.pop("value")
    arrays.append(pa.array(value, mask=np.isnan(value)))
    del value
    arrays.append(properties)
    return pa.Table.from_arrays(arrays, schema=FAULTY_SCHEMA if faulty else EVENT_SCHEMA)
