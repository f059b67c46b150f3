"""Ground truth: exact purchase, churn, conversion and revenue probabilities, true action effects, realised outcomes.

Given the latent state at the cutoff T (stage, alive or not, the contact effect in force), the
future is a Markov chain with per-day probabilities that are known in closed form, so the truth
is a forward recursion over the H+1 calendar days the window (T, T+H] touches, vectorised over
customers. It is exact under the simulator's process *with no contacts after T* (contacts the
logging policy would make later are not averaged over). For a cutoff inside a day, the first
day's purchase probability is conditioned on no purchase earlier that day, and the last day only
counts purchases made by T+H's time of day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.time import to_utc
from features.simulator import params as P
from features.simulator.simulation import Simulation

DAY = pd.Timedelta(days=1)
FAR = 10**6


@dataclass
class _StateAt:
    """Everything about each known customer at the cutoff that the recursion needs (arrays per customer)."""

    index: np.ndarray  # positions in sim.latent / sim.customers
    d0: int
    f0: float
    state: np.ndarray
    is_prospect: np.ndarray
    purchased_today: np.ndarray
    n_purchases: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray
    m_today: np.ndarray  # multiplier in force on the cutoff's day
    last_contact_day: np.ndarray
    last_beta: np.ndarray
    rho_today: np.ndarray  # churn risk of a contact made earlier on the cutoff's day


def _check(sim: Simulation, cutoff: str | pd.Timestamp, horizon_days: int) -> pd.Timestamp:
    t = to_utc(cutoff)
    if int(horizon_days) != horizon_days or horizon_days < 1:
        raise ValueError(f"horizon_days must be a positive integer, got {horizon_days!r}")
    if not sim.start <= t <= sim.end:
        raise ValueError(f"cutoff {t} is outside the simulated period [{sim.start}, {sim.end}]")
    return t


def _positions(sim: Simulation, ids: pd.Series) -> np.ndarray:
    pos = pd.Index(sim.latent["customer_id"].astype(str)).get_indexer(ids.astype(str))
    return np.asarray(pos, dtype=np.int64)


def _state_at(sim: Simulation, t: pd.Timestamp) -> _StateAt:
    n = len(sim.latent)
    lat = sim.latent
    elapsed = (t - sim.start) / DAY
    d0 = int(np.floor(elapsed))
    f0 = float(elapsed - d0)
    known = np.flatnonzero((sim.customers["first_seen"] <= t).to_numpy())

    pur = sim.purchases
    before = (pur["event_time"] <= t).to_numpy()
    who = _positions(sim, pur["customer_id"])[before]
    day = pur["day"].to_numpy()[before].astype(np.int64)
    n_purch = np.bincount(who, minlength=n)
    first_day = np.full(n, FAR, dtype=np.int64)
    np.minimum.at(first_day, who, day)
    last_day = np.full(n, -FAR, dtype=np.int64)
    np.maximum.at(last_day, who, day)
    purchased_today = last_day == d0

    con = sim.contacts
    c_who = _positions(sim, con["customer_id"])
    c_day = con["day"].to_numpy().astype(np.int64)
    c_time_ok = (con["event_time"] <= t).to_numpy()
    beta = con["beta"].to_numpy()
    rho = con["rho"].to_numpy()
    last_contact_day, last_beta = _latest(n, c_who[c_time_ok], c_day[c_time_ok], beta[c_time_ok])
    prev = c_day < d0
    prev_day, prev_beta = _latest(n, c_who[prev], c_day[prev], beta[prev])
    since_prev = d0 - prev_day
    m_today = np.where((since_prev >= 1) & (since_prev <= P.EFFECT_DAYS), np.exp(prev_beta), 1.0)
    rho_today = np.zeros(n)
    today = c_time_ok & (c_day == d0)
    rho_today[c_who[today]] = rho[today]

    death = lat["death_day"].to_numpy().astype(np.int64)
    consider = lat["consider_day"].to_numpy().astype(np.int64)
    dead = (death >= 0) & (death < d0)
    is_prospect = n_purch == 0
    considering = (consider >= 0) & (consider <= d0)
    state = np.where(
        dead, P.DEAD, np.where(~is_prospect, P.CUSTOMER, np.where(considering, P.CONSIDERING, P.AWARE))
    ).astype(np.int8)
    k = known
    return _StateAt(
        index=k,
        d0=d0,
        f0=f0,
        state=state[k],
        is_prospect=is_prospect[k],
        purchased_today=purchased_today[k],
        n_purchases=n_purch[k],
        first_day=first_day[k],
        last_day=last_day[k],
        m_today=m_today[k],
        last_contact_day=last_contact_day[k],
        last_beta=last_beta[k],
        rho_today=rho_today[k],
    )


def _latest(n: int, who: np.ndarray, day: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer, the day and beta of the latest contact among those given (-FAR, 0 when none)."""
    out_day = np.full(n, -FAR, dtype=np.int64)
    out_beta = np.zeros(n)
    if len(who):
        order = np.lexsort((day, who))  # the last row per customer is the latest contact
        w, d, b = who[order], day[order], beta[order]
        last = np.r_[w[1:] != w[:-1], True]
        out_day[w[last]] = d[last]
        out_beta[w[last]] = b[last]
    return out_day, out_beta


def _forward(
    sim: Simulation,
    st: _StateAt,
    horizon: int,
    contact_day: np.ndarray,
    contact_beta: np.ndarray,
    rho_today: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """P(no purchase in (T, T+H]) and E[revenue in (T, T+H]] per known customer."""
    lat = sim.latent
    i = st.index
    kappa, lam, tau = (lat[c].to_numpy()[i] for c in ("kappa", "lam", "tau"))
    nu, mu, amount = (lat[c].to_numpy()[i] for c in ("nu", "mu", "amount_mean"))
    season = P.seasonality(sim.start, st.d0 + np.arange(horizon + 1))
    f_start = float(P.purchase_time_cdf(np.array(st.f0)))
    p_a = (st.state == P.AWARE).astype(float)
    p_k = (st.state == P.CONSIDERING).astype(float)
    p_c = (st.state == P.CUSTOMER).astype(float)
    n_a, n_k, n_c, n_d = p_a.copy(), p_k.copy(), p_c.copy(), (st.state == P.DEAD).astype(float)
    revenue = np.zeros(len(i))
    for k in range(horizon + 1):
        if k == 0:
            m = st.m_today
        else:
            since = st.d0 + k - contact_day
            m = np.where((since >= 1) & (since <= P.EFFECT_DAYS), np.exp(contact_beta), 1.0)
        conv = -np.expm1(-kappa * season[k] * m)
        buy = -np.expm1(-lam * season[k] * m)
        if k == 0 and f_start > 0:  # no purchase so far today: the rest of the day's chance
            conv = np.where(st.purchased_today, 0.0, conv * (1 - f_start) / (1 - conv * f_start))
            buy = np.where(st.purchased_today, 0.0, buy * (1 - f_start) / (1 - buy * f_start))
        if k == horizon:  # the window ends at T+H's time of day
            x, y = conv * f_start, buy * f_start
            revenue += amount * (p_k * x + p_c * y)
            p_none = n_a + n_k * (1 - x) + n_c * (1 - y) + n_d
            return p_none, revenue
        revenue += amount * (p_k * conv + p_c * buy)
        extra = rho_today if k == 0 else 0.0
        die_p = 1 - (1 - nu) * (1 - extra)
        die_c = 1 - (1 - mu) * (1 - extra)
        progress = -np.expm1(-tau * m)
        p_a, p_k, p_c = (
            p_a * (1 - die_p) * (1 - progress),
            p_a * (1 - die_p) * progress + p_k * (1 - conv) * (1 - die_p),
            (p_c + p_k * conv) * (1 - die_c),
        )
        n_d = n_d + n_a * die_p + n_k * (1 - conv) * die_p + n_c * (1 - buy) * die_c
        n_a, n_k, n_c = (
            n_a * (1 - die_p) * (1 - progress),
            n_a * (1 - die_p) * progress + n_k * (1 - conv) * (1 - die_p),
            n_c * (1 - buy) * (1 - die_c),
        )
    raise AssertionError("unreachable")


def ground_truth(sim: Simulation, cutoff: str | pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """True probabilities for the window (cutoff, cutoff + horizon_days], for customers first seen by the cutoff.

    Columns: customer_id, p_churn (no purchase in the window), p_purchase (= 1 - p_churn),
    p_first_purchase (prospects only, NaN for customers who bought before), expected_revenue
    (gross order value), is_prospect (no purchase up to the cutoff), alive (latent: not churned
    or, for prospects, not lost). Exact given the latent state at the cutoff and no contacts after it.
    """
    t = _check(sim, cutoff, horizon_days)
    st = _state_at(sim, t)
    p_none, revenue = _forward(sim, st, int(horizon_days), st.last_contact_day, st.last_beta, st.rho_today)
    p_none = np.clip(p_none, 0.0, 1.0)
    p_purchase = 1.0 - p_none
    return pd.DataFrame(
        {
            "customer_id": sim.latent["customer_id"].to_numpy()[st.index],
            "p_churn": p_none,
            "p_purchase": p_purchase,
            "p_first_purchase": np.where(st.is_prospect, p_purchase, np.nan),
            "expected_revenue": revenue,
            "is_prospect": st.is_prospect,
            "alive": st.state != P.DEAD,
        }
    ).astype({"customer_id": "string"})


def true_effects(
    sim: Simulation, cutoff: str | pd.Timestamp, horizon_days: int, outcome: str = "p_purchase"
) -> pd.DataFrame:
    """True change in P(purchase in the window) (or in expected revenue) if each action were sent at the cutoff.

    One row per customer first seen by the cutoff, one column per action in ACTION_IDS, relative
    to sending nothing; no other contact after the cutoff in either case. A contact replaces the
    effect of an earlier one still in force, so a new action can be worth less than none.
    NaN where the action may not be sent: an email to a customer opted out of email by the cutoff.
    """
    if outcome not in ("p_purchase", "expected_revenue"):
        raise ValueError(f"outcome must be 'p_purchase' or 'expected_revenue', got {outcome!r}")
    t = _check(sim, cutoff, horizon_days)
    st = _state_at(sim, t)
    h = int(horizon_days)
    base_none, base_rev = _forward(sim, st, h, st.last_contact_day, st.last_beta, st.rho_today)
    lat = sim.latent
    i = st.index
    affinity = lat[[f"affinity_{a}" for a in P.ACTION_IDS]].to_numpy()[i]
    effect_type = pd.Index(P.EFFECT_TYPES).get_indexer(lat["effect_type"].astype(str).to_numpy()[i])
    stage = P.stage_code(st.n_purchases, st.d0 - st.first_day, st.d0 - st.last_day)
    out = pd.DataFrame({"customer_id": lat["customer_id"].to_numpy()[i]}).astype({"customer_id": "string"})
    opted_out = _opted_out(sim, t, i)
    for j, action in enumerate(P.ACTION_IDS):
        beta, rho = P.action_effect(
            effect_type, lat["g"].to_numpy()[i], lat["rho"].to_numpy()[i], affinity, np.full(len(i), j), stage
        )
        rho_total = 1 - (1 - st.rho_today) * (1 - rho)
        p_none, rev = _forward(sim, st, h, np.full(len(i), st.d0), beta, rho_total)
        effect = (base_none - p_none) if outcome == "p_purchase" else (rev - base_rev)
        out[action] = np.where(opted_out, np.nan, effect) if P.IS_EMAIL[j] else effect
    return out


def _opted_out(sim: Simulation, t: pd.Timestamp, index: np.ndarray) -> np.ndarray:
    """Whether each customer (positions in sim.latent) had opted out of email at or before t."""
    return (sim.latent["email_opt_out_time"].iloc[index] <= t).to_numpy()


def email_consent(sim: Simulation, cutoff: str | pd.Timestamp) -> pd.DataFrame:
    """The latent email consent at the cutoff, for customers first seen by it: customer_id, email_opt_in
    (1.0 opted in, 0.0 opted out, NaN never asked), both events counted when at or before the cutoff.

    What the `email_opt_in` feature should read from the simulated events at the same cutoff.
    """
    t = to_utc(cutoff)
    known = np.flatnonzero((sim.customers["first_seen"] <= t).to_numpy())
    opted_in = (sim.latent["email_opt_in_time"].iloc[known] <= t).to_numpy()
    value = np.where(_opted_out(sim, t, known), 0.0, np.where(opted_in, 1.0, np.nan))
    return pd.DataFrame({"customer_id": sim.latent["customer_id"].to_numpy()[known], "email_opt_in": value}).astype(
        {"customer_id": "string"}
    )


def realised_outcomes(sim: Simulation, cutoff: str | pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """What happened in (cutoff, cutoff + horizon_days], read from the events (fault rows dropped).

    One row per customer first seen by the cutoff: customer_id, is_prospect (no purchase event up
    to the cutoff), purchased, first_purchase (a prospect who purchased), revenue (sum of purchase
    values). The window must end by the end of the simulation.
    """
    t = _check(sim, cutoff, horizon_days)
    end = t + pd.Timedelta(days=int(horizon_days))
    if end > sim.end:
        raise ValueError(f"the window ends at {end}, after the end of the simulation ({sim.end})")
    ev = sim.clean_events()
    pur = ev.loc[(ev["event_type"] == "purchase").to_numpy(), ["customer_id", "event_time", "value"]]
    pur = pur.loc[pur["customer_id"].notna().to_numpy()]
    known = sim.customers.loc[(sim.customers["first_seen"] <= t).to_numpy(), "customer_id"].astype(str)
    times = pur["event_time"]
    before_ids = pur.loc[(times <= t).to_numpy(), "customer_id"].astype(str).unique()
    inside = pur.loc[((times > t) & (times <= end)).to_numpy()]
    revenue = inside.groupby(inside["customer_id"].astype(str))["value"].sum()
    is_prospect = ~known.isin(before_ids).to_numpy()
    purchased = known.isin(revenue.index).to_numpy()
    return pd.DataFrame(
        {
            "customer_id": known.to_numpy(),
            "is_prospect": is_prospect,
            "purchased": purchased,
            "first_purchase": purchased & is_prospect,
            "revenue": revenue.reindex(known.to_numpy()).fillna(0.0).to_numpy(),
        }
    ).astype({"customer_id": "string"})
