"""The day-by-day generative process: latent customers, their state machine, purchases, visits and contacts.

Each day is one vectorised step over all customers (no per-customer or per-event loops).
Every day draws the same number of uniforms whatever happens, so two runs from one seed
that differ only in one contact stay aligned (common random numbers).

Per customer and day d (days counted from the start, 00:00 UTC):

1. arrival: the customer becomes known (state AWARE) and makes a first visit;
2. the business may contact known customers (arrived before d): a targeting rule plus
   a random share, never within CONTACT_CAP_DAYS of the previous contact and never by email
   once the customer opted out; the contact's true effect multiplies hazards on days
   d+1 .. d+EFFECT_DAYS and may kill at the end of d; after the day's emails (contacts and
   the Thursday newsletter to subscribers) the customer may opt out of email for good,
   sleeping dogs far more often after a contact;
3. purchases: CONSIDERING converts with prob 1 - exp(-kappa s_d m_d), CUSTOMER buys with
   prob 1 - exp(-lambda s_d m_d) (at most one order a day; s_d seasonality, m_d contact multiplier);
4. visits (browsing) at a rate that depends on the state, so engagement reveals the state;
5. end of day: AWARE, CONSIDERING die (lose interest) with prob nu, CUSTOMER with prob mu,
   each also with the contact's death probability; surviving AWARE customers move to
   CONSIDERING with prob 1 - exp(-tau m_d).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.simulator import params as P


@dataclass(frozen=True)
class SimConfig:
    n_customers: int
    days: int
    seed: int = 0
    start: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2024-01-01", tz="UTC"))
    faults: float = 0.0
    marketing: float = 1.0  # scales the contact policy; 0 = no contacts at all
    force_contact: tuple[int, int] | None = None  # (day, action index): every known customer gets it that day


@dataclass
class Trajectory:
    """What the day loop produced: latent arrays per customer and the logs of what happened (numpy)."""

    latent: dict[str, np.ndarray]
    affinity: np.ndarray  # customers x actions
    purchases: dict[str, np.ndarray]  # cust, day, first
    sessions: dict[str, np.ndarray]  # cust, day, kind, state, src, cart
    contacts: dict[str, np.ndarray]  # cust, day, action, propensity, targeted, beta, rho
    deaths: dict[str, np.ndarray]  # cust, day (customers who had bought)


ARRIVAL, BROWSE, CONSIDER, PURCHASE = 0, 1, 2, 3
ACQ_SOURCE = np.array([P.SRC_WEB, P.SRC_ADS, P.SRC_SOCIAL, P.SRC_EMAIL, P.SRC_APP, P.SRC_WEB])
BROWSE_CART_P = np.array([0.0, 0.05, 0.35, 0.25, 0.0])  # by state
NEVER = -(10**6)


def draw_latent(n: int, days: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Static latent parameters per customer. Rates are per day."""
    segment = rng.choice(len(P.SEGMENTS), n, p=P.SEGMENT_P)
    country = rng.choice(len(P.COUNTRIES), n, p=P.COUNTRY_P)
    acq = rng.choice(len(P.ACQUISITION), n, p=P.ACQUISITION_P)
    quality = P.ACQUISITION_QUALITY[acq]
    early = rng.random(n) < 0.3
    arrival = np.where(early, rng.integers(0, min(14, days), n), rng.integers(0, days, n))
    sat = rng.beta(4.0, 2.0, n)
    lam = np.minimum(rng.gamma(0.6, (1 / 35) / 0.6, n) * quality * P.SEGMENT_RATE[segment], 0.7)
    effect_type = rng.choice(len(P.EFFECT_TYPES), n, p=P.EFFECT_TYPE_P)
    g = np.where(effect_type == 0, rng.uniform(0.2, 0.9, n), np.where(effect_type == 2, rng.uniform(0.2, 0.8, n), 0.0))
    n_actions = len(P.ACTION_IDS)
    affinity = (rng.random((n, n_actions)) < 0.6) * rng.uniform(0.5, 1.5, (n, n_actions))
    latent = {
        "segment": segment,
        "country": country,
        "acquisition": acq,
        "arrival_day": arrival.astype(np.int32),
        "app_user": rng.random(n) < np.where(acq == 4, 0.9, 0.3),
        "subscribed": rng.random(n) < 0.4,
        "tau": rng.gamma(1.0, 0.08, n) * quality,
        "nu": rng.gamma(2.0, 0.015, n),
        "kappa": rng.gamma(0.7, 0.04 / 0.7, n) * quality,
        "lam": lam,
        "mu": np.minimum(0.004 * np.exp(-2.5 * (sat - 0.67)) * rng.gamma(2.0, 0.5, n) * P.ACQUISITION_CHURN[acq], 0.2),
        "satisfaction": sat,
        "amount_mean": P.SEGMENT_SPEND[segment] * rng.lognormal(-0.125, 0.5, n),
        "browse_aware": 0.03 * rng.lognormal(0.0, 0.5, n),
        "browse_considering": 0.25 * rng.lognormal(0.0, 0.5, n),
        "browse_customer": np.minimum(0.03 + 1.5 * lam * rng.lognormal(0.0, 0.5, n), 0.9),
        "email_engagement": rng.beta(2.0, 5.0, n),
        "store_share": np.where(acq == 5, 0.6, 0.03),
        "effect_type": effect_type.astype(np.int8),
        "g": g,
        "rho": np.where(effect_type == 2, rng.uniform(0.02, 0.10, n), 0.0),
    }
    return latent, affinity


def rule_action(
    d: int,
    n_purch: np.ndarray,
    first_purch: np.ndarray,
    last_purch: np.ndarray,
    last_cart: np.ndarray,
    last_adclick: np.ndarray,
    last_session: np.ndarray,
) -> np.ndarray:
    """The business's targeting rule on what it has seen up to the end of day d-1: an action index or -1."""
    prospect = n_purch == 0
    since_last = d - last_purch
    conditions = [
        prospect & (d - last_cart <= 3),
        prospect & (d - last_adclick <= 7),
        prospect & (d - last_session <= 7),
        (n_purch == 1) & (d - first_purch <= 7),
        ~prospect & (since_last >= 3) & (since_last <= 10),
        ~prospect & (since_last > P.LAPSED_DAYS),
        n_purch >= 5,
        (n_purch >= 2) & (since_last <= 30),
    ]
    index = P.ACTION_IDS.index
    choices = [
        index("cart_reminder"),
        index("retargeting_content"),
        index("comparison_guide"),
        index("onboarding_series"),
        index("review_request"),
        index("win_back_offer"),
        index("loyalty_reward"),
        index("referral_invite"),
    ]
    return np.select(conditions, choices, -1).astype(np.int64)


def run(cfg: SimConfig) -> Trajectory:
    """Run the day loop. Random streams: one for latent parameters, one for the loop (details are drawn later)."""
    n, days = cfg.n_customers, cfg.days
    latent_rng, loop_rng = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(cfg.seed).spawn(2))
    lat, affinity = draw_latent(n, days, latent_rng)
    n_actions = len(P.ACTION_IDS)
    season = P.seasonality(cfg.start, np.arange(days))
    q_rule = min(P.Q_RULE * cfg.marketing, 1.0)
    q_rand = min(P.Q_RANDOM * cfg.marketing, 1.0 - q_rule)

    arrival = lat["arrival_day"]
    state = np.zeros(n, dtype=np.int8)
    n_purch = np.zeros(n, dtype=np.int64)
    first_purch = np.full(n, NEVER, dtype=np.int64)
    last_purch = np.full(n, NEVER, dtype=np.int64)
    consider_day = np.full(n, -1, dtype=np.int64)
    death_day = np.full(n, -1, dtype=np.int64)
    last_contact = np.full(n, NEVER, dtype=np.int64)
    exp_beta = np.ones(n)
    last_cart = np.full(n, NEVER, dtype=np.int64)
    last_adclick = np.full(n, NEVER, dtype=np.int64)
    last_session = np.full(n, NEVER, dtype=np.int64)
    opted_out = np.zeros(n, dtype=bool)  # opted out of email before today
    opt_out_day = np.full(n, -1, dtype=np.int64)
    subscribed = lat["subscribed"]
    sleeping_dog = lat["effect_type"] == P.SLEEPING_DOG
    dows = pd.DatetimeIndex(cfg.start + pd.to_timedelta(np.arange(days), unit="D")).dayofweek.to_numpy()

    browse_rate = np.stack(
        [np.zeros(n), lat["browse_aware"], lat["browse_considering"], lat["browse_customer"], np.full(n, 0.004)]
    )
    idx_all = np.arange(n)
    app_user = lat["app_user"]
    src_cum = np.cumsum(P.SOURCE_P_WEB / P.SOURCE_P_WEB.sum())
    src_cum[-1] = 1.0

    purchases: list[tuple[np.ndarray, ...]] = []
    sessions: list[tuple[np.ndarray, ...]] = []
    contacts: list[tuple[np.ndarray, ...]] = []
    deaths: list[tuple[np.ndarray, ...]] = []

    for d in range(days):
        s = season[d]
        u_contact, u_purchase, u_browse, u_cart, u_src, u_app, u_end, u_opt_out = loop_rng.random((8, n))
        u_action = loop_rng.integers(0, n_actions, n)

        arriving = arrival == d
        state[arriving] = P.AWARE
        known = arrival < d
        since_contact = d - last_contact
        m = np.where((since_contact >= 1) & (since_contact <= P.EFFECT_DAYS), exp_beta, 1.0)

        # 2. contacts, decided on what the business saw up to yesterday
        rho_today = np.zeros(n)
        if cfg.force_contact is not None and cfg.force_contact[0] == d:
            sent = known & ~(opted_out & P.IS_EMAIL[cfg.force_contact[1]])
            action = np.full(n, cfg.force_contact[1], dtype=np.int64)
            propensity = np.ones(n)
            targeted = np.zeros(n, dtype=bool)
        else:
            eligible = known & (since_contact > P.CONTACT_CAP_DAYS)
            rule = rule_action(d, n_purch, first_purch, last_purch, last_cart, last_adclick, last_session)
            rule = np.where(opted_out & (rule >= 0) & P.IS_EMAIL[rule], -1, rule)  # the rule has nothing to send
            p_rule = np.where(rule >= 0, q_rule, 0.0)
            targeted = eligible & (u_contact < p_rule)
            # a random email to someone who opted out is suppressed: every action keeps its propensity
            sent = targeted | (
                eligible & (u_contact >= p_rule) & (u_contact < p_rule + q_rand) & ~(opted_out & P.IS_EMAIL[u_action])
            )
            action = np.where(targeted, rule, u_action)
            propensity = np.round(q_rand / n_actions + p_rule * (action == rule), 6)
        if sent.any():
            who = idx_all[sent]
            stage = P.stage_code(n_purch[who], d - first_purch[who], d - last_purch[who])
            beta, rho = P.action_effect(
                lat["effect_type"][who], lat["g"][who], lat["rho"][who], affinity[who], action[who], stage
            )
            last_contact[who] = d
            exp_beta[who] = np.exp(beta)
            rho_today[who] = rho
            contacts.append((who, np.full(len(who), d), action[who], propensity[who], targeted[who], beta, rho, stage))

        # email opt-outs, after the day's emails: a contact (sleeping dogs resent it) or the newsletter
        emailed = idx_all[sent][P.IS_EMAIL[action[sent]]]
        p_opt_out = np.zeros(n)
        p_opt_out[emailed] = (
            P.OPT_OUT_CONTACT + P.OPT_OUT_SLEEPING_DOG * sleeping_dog[emailed] * P.ANNOYANCE[action[emailed]]
        )
        if dows[d] == P.NEWSLETTER_WEEKDAY:
            news = subscribed & known & ~opted_out
            p_opt_out = np.where(news, 1.0 - (1.0 - p_opt_out) * (1.0 - P.OPT_OUT_NEWSLETTER), p_opt_out)
        leaving = ~opted_out & (u_opt_out < p_opt_out)
        opt_out_day[leaving] = d

        # 3. purchases
        conv = (state == P.CONSIDERING) & known & (u_purchase < -np.expm1(-lat["kappa"] * s * m))
        buy = (state == P.CUSTOMER) & (u_purchase < -np.expm1(-lat["lam"] * s * m))
        bought = conv | buy
        if bought.any():
            who = idx_all[bought]
            purchases.append((who, np.full(len(who), d), conv[who]))
        state[conv] = P.CUSTOMER
        first_purch[conv] = d
        last_purch[bought] = d
        n_purch[bought] += 1

        # 4. visits: the arrival visit, the first visit of a considering customer, browsing
        consider_start = (state == P.CONSIDERING) & (consider_day == d)
        browse = known & ~consider_start & (u_browse < -np.expm1(-browse_rate[state, idx_all] * s))
        visit = arriving | consider_start | browse
        if visit.any():
            who = idx_all[visit]
            kind = np.where(arriving[who], ARRIVAL, np.where(consider_start[who], CONSIDER, BROWSE))
            in_app = app_user[who] & (u_app[who] < 0.6)
            src = np.where(in_app, P.SRC_APP, np.searchsorted(src_cum, u_src[who], side="right"))
            src = np.where(kind == ARRIVAL, ACQ_SOURCE[lat["acquisition"][who]], src)
            src = np.where((src == P.SRC_EMAIL) & opted_out[who], P.SRC_WEB, src)  # no emails to come from
            cart = u_cart[who] < BROWSE_CART_P[state[who]]
            sessions.append((who, np.full(len(who), d), kind, state[who].copy(), src, cart))
            last_session[who] = d
            abandoned = who[cart & ~bought[who]]
            last_cart[abandoned] = d
            last_adclick[who[src == P.SRC_ADS]] = d
        last_session[bought] = d

        # 5. end of day: deaths and progression
        alive = (state >= P.AWARE) & (state <= P.CUSTOMER)
        base = np.where(state == P.CUSTOMER, lat["mu"], lat["nu"])
        p_die = 1.0 - (1.0 - base) * (1.0 - rho_today)
        die = alive & (u_end < p_die)
        p_progress = -np.expm1(-lat["tau"] * m)
        progress = alive & (state == P.AWARE) & ~die & (u_end < p_die + (1.0 - p_die) * p_progress)
        if die.any():
            had_bought = die & (n_purch > 0)
            deaths.append((idx_all[had_bought], np.full(int(had_bought.sum()), d)))
        state[die] = P.DEAD
        death_day[die] = d
        state[progress] = P.CONSIDERING
        consider_day[progress] = d + 1
        opted_out |= leaving

    lat["consider_day"] = consider_day
    lat["death_day"] = death_day
    lat["first_purchase_day"] = np.where(first_purch == NEVER, -1, first_purch)
    lat["opt_out_day"] = opt_out_day
    return Trajectory(
        latent=lat,
        affinity=affinity,
        purchases=_stack(purchases, ("cust", "day", "first"), (np.int64, np.int64, bool)),
        sessions=_stack(
            sessions,
            ("cust", "day", "kind", "state", "src", "cart"),
            (np.int64, np.int64, np.int8, np.int8, np.int8, bool),
        ),
        contacts=_stack(
            contacts,
            ("cust", "day", "action", "propensity", "targeted", "beta", "rho", "stage"),
            (np.int64, np.int64, np.int64, float, bool, float, float, np.int8),
        ),
        deaths=_stack(deaths, ("cust", "day"), (np.int64, np.int64)),
    )


def _stack(
    chunks: list[tuple[np.ndarray, ...]], names: tuple[str, ...], dtypes: tuple[type, ...]
) -> dict[str, np.ndarray]:
    if not chunks:
        return {name: np.zeros(0, dtype=dt) for name, dt in zip(names, dtypes, strict=True)}
    return {
        name: np.concatenate([c[i] for c in chunks]).astype(dt)
        for i, (name, dt) in enumerate(zip(names, dtypes, strict=True))
    }
