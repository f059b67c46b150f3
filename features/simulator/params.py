"""Constants of the generative model: actions, their true effects, seasonality and time-of-day profiles.

Everything the ground truth needs besides the per-customer latent table lives here,
so a change to a number here changes `MODEL_VERSION` (written to meta.json).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MODEL_VERSION = "2"  # 2: email consent (opt-ins, opt-outs) and the contacts that respect it

# Latent customer states (the simulator's, not the business's, view).
NOT_ARRIVED, AWARE, CONSIDERING, CUSTOMER, DEAD = 0, 1, 2, 3, 4

ACTION_IDS: tuple[str, ...] = (
    "cart_reminder",
    "win_back_offer",
    "onboarding_series",
    "loyalty_reward",
    "review_request",
    "referral_invite",
    "comparison_guide",
    "retargeting_content",
)
ACTION_CHANNEL: dict[str, str] = {
    "cart_reminder": "email",
    "win_back_offer": "email",
    "onboarding_series": "email",
    "loyalty_reward": "app",
    "review_request": "email",
    "referral_invite": "email",
    "comparison_guide": "email",
    "retargeting_content": "ads",
}

# Observable lifecycle stage used by the targeting rule and by the true effects.
STAGE_NAMES: tuple[str, ...] = ("prospect", "new", "active", "lapsed")
NEW_DAYS = 30  # "new": exactly one purchase, made at most this many days ago
LAPSED_DAYS = 60  # "lapsed": the last purchase is more than this many days ago

IS_EMAIL = np.array([ACTION_CHANNEL[a] == "email" for a in ACTION_IDS])  # per action: needs email consent

# Email consent. Subscribers opt in when they arrive; anyone may opt out after a marketing email
# (the same day, after that day's emails). An opt-out is for good and stops every email after it.
OPT_OUT_CONTACT = 0.01  # per email marketing contact, every customer
OPT_OUT_SLEEPING_DOG = 0.15  # a sleeping dog's extra chance per email contact, times the action's ANNOYANCE
OPT_OUT_NEWSLETTER = 0.002  # per newsletter received
NEWSLETTER_WEEKDAY = 3  # Thursday
OPT_OUT_HOURS = (12.5, 23.0)  # opt-outs happen in this window of the day (UTC): after the day's marketing emails

# How relevant each action is at each observable stage (rows follow ACTION_IDS,
# columns STAGE_NAMES). A persuadable customer's log-hazard lift is g * affinity * relevance.
RELEVANCE = np.array(
    [
        [1.0, 0.3, 0.6, 0.2],  # cart_reminder
        [0.0, 0.1, 0.2, 1.0],  # win_back_offer
        [0.5, 1.0, 0.2, 0.0],  # onboarding_series
        [0.0, 0.3, 1.0, 0.4],  # loyalty_reward
        [0.0, 0.6, 0.5, 0.1],  # review_request
        [0.0, 0.2, 0.6, 0.1],  # referral_invite
        [0.9, 0.2, 0.3, 0.3],  # comparison_guide
        [0.7, 0.2, 0.3, 0.5],  # retargeting_content
    ]
)
# How much each action annoys a "sleeping dog" (scales both the hazard cut and the churn risk).
ANNOYANCE = np.array([0.6, 1.0, 0.5, 0.4, 0.6, 0.7, 0.5, 1.0])

EFFECT_TYPES: tuple[str, ...] = ("persuadable", "indifferent", "sleeping_dog")
SLEEPING_DOG = EFFECT_TYPES.index("sleeping_dog")
EFFECT_TYPE_P = (0.40, 0.45, 0.15)
EFFECT_DAYS = 14  # a contact on day t multiplies hazards on days t+1 .. t+EFFECT_DAYS (the latest contact wins)

# Logging policy: per known customer and day, before the frequency cap.
Q_RANDOM = 0.01  # a uniformly random action
Q_RULE = 0.25  # the action the targeting rule picks, when it picks one
CONTACT_CAP_DAYS = 10  # no contact within this many days of the previous one

SEGMENTS: tuple[str, ...] = ("budget", "mainstream", "premium")
SEGMENT_P = (0.35, 0.50, 0.15)
SEGMENT_SPEND = np.array([25.0, 55.0, 140.0])
SEGMENT_RATE = np.array([1.1, 1.0, 0.8])

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "SE")
COUNTRY_P = (0.35, 0.15, 0.15, 0.10, 0.07, 0.07, 0.06, 0.05)

# Acquisition channels differ in the quality of the customers they bring.
ACQUISITION: tuple[str, ...] = ("web", "ads", "social", "email", "app", "store")
ACQUISITION_P = (0.30, 0.25, 0.15, 0.10, 0.10, 0.10)
ACQUISITION_QUALITY = np.array([1.0, 0.6, 0.5, 1.3, 1.5, 1.2])  # multiplies progression and purchase rates
ACQUISITION_CHURN = np.array([1.0, 1.3, 1.4, 1.0, 0.7, 0.9])  # multiplies the death hazard

# Session sources: how a visit started. Index into SOURCE_CHANNEL.
SRC_WEB, SRC_APP, SRC_EMAIL, SRC_SOCIAL, SRC_ADS = 0, 1, 2, 3, 4
SOURCE_CHANNEL: tuple[str, ...] = ("web", "app", "email", "social", "ads")
SOURCE_P_WEB = np.array([0.45, 0.0, 0.20, 0.15, 0.20])  # for visits not made in the app
# Purchases come more often from the app and email than browsing does (channels differ in effect).
SOURCE_P_PURCHASE = np.array([0.50, 0.0, 0.30, 0.05, 0.15])

# Hour-of-day weights (UTC). Purchases happen from 02:00, visits start from 01:00 and end
# before midnight, so nothing a visit logs ever falls on another day than its purchase.
HOUR_WEIGHTS = np.array([0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 8, 8, 7, 7, 7, 8, 9, 10, 10, 9, 7, 4], dtype=float)
VISIT_HOURS = np.where((np.arange(24) >= 1) & (np.arange(24) <= 22), np.maximum(HOUR_WEIGHTS, 1.0), 0.0)
MAX_VISIT_SECONDS = 3300.0  # a visit, including the ad or email that led to it, lasts under 55 minutes

WEEKLY = np.array([0.92, 0.95, 0.97, 1.00, 1.06, 1.12, 0.98])  # Monday .. Sunday
WEEKLY = WEEKLY / WEEKLY.mean()

N_PRODUCTS = 2000
SUPPORT_TOPICS: tuple[str, ...] = ("delivery", "returns", "product", "account", "billing")


def purchase_time_cdf(fraction: np.ndarray) -> np.ndarray:
    """P(a purchase made on a day happens at or before this fraction of the day), fraction in [0, 1]."""
    cum = np.concatenate([[0.0], np.cumsum(HOUR_WEIGHTS)]) / HOUR_WEIGHTS.sum()
    return np.interp(np.asarray(fraction, dtype=float) * 24.0, np.arange(25), cum)


def seasonality(start: pd.Timestamp, days: np.ndarray) -> np.ndarray:
    """Multiplier of purchase hazards for day indices counted from `start` (weekly x yearly, mean about 1).

    Defined for any integer day, also past the simulated period, so the truth extends beyond it.
    """
    dates = pd.DatetimeIndex(start.tz_convert("UTC").normalize() + pd.to_timedelta(np.asarray(days), unit="D"))
    dow = dates.dayofweek.to_numpy()
    doy = dates.dayofyear.to_numpy().astype(float)
    yearly = 1.0 + 0.10 * np.cos(2 * np.pi * (doy - 350.0) / 365.25) + 0.35 * np.exp(-0.5 * ((doy - 333.0) / 4.0) ** 2)
    return np.asarray(WEEKLY[dow] * yearly, dtype=float)


def stage_code(n_purchases: np.ndarray, days_since_first: np.ndarray, days_since_last: np.ndarray) -> np.ndarray:
    """Observable lifecycle stage (index into STAGE_NAMES) from purchase counts and recencies in days."""
    return np.select(
        [n_purchases == 0, (n_purchases == 1) & (days_since_first <= NEW_DAYS), days_since_last <= LAPSED_DAYS],
        [0, 1, 2],
        3,
    ).astype(np.int8)


def action_effect(
    effect_type: np.ndarray, g: np.ndarray, rho: np.ndarray, affinity: np.ndarray, action: np.ndarray, stage: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True effect of sending `action` to customers at `stage`: (log-multiplier of hazards, extra death probability).

    `affinity` has one row per customer and one column per action; all other arguments are per customer.
    """
    rows = np.arange(len(action))
    persuadable = g * affinity[rows, action] * RELEVANCE[action, stage]
    beta = np.where(effect_type == 0, persuadable, np.where(effect_type == 2, -g * ANNOYANCE[action], 0.0))
    death = np.where(effect_type == 2, rho * ANNOYANCE[action], 0.0)
    return beta, death
