"""The simulator's email consent: opt-ins and opt-outs in the contract, contacts that respect them, a truth that
forbids emailing an opt-out, and the `email_opt_in` feature reading back the latent consent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.events.ingest import ingest_files
from features.events.store import EventStore
from features.journeys import compute_features
from features.simulator import ACTION_IDS, Simulation, email_consent, simulate, true_effects, write_simulation
from features.simulator.params import ACTION_CHANNEL
from features.simulator.simulation import make_config, simulate_config

EMAIL_ACTIONS = [a for a in ACTION_IDS if ACTION_CHANNEL[a] == "email"]


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(3000, 150, seed=21)


def _consents(s: Simulation) -> pd.DataFrame:
    ev = s.events
    return ev.loc[(ev["event_type"] == "consent_change").to_numpy()].reset_index(drop=True)


def _opt_out_time(s: Simulation) -> pd.Series:
    return s.latent.set_index(s.latent["customer_id"].astype(str))["email_opt_out_time"]


def test_subscribers_opt_in_on_arrival_and_some_opt_out_later(sim: Simulation) -> None:
    c = _consents(sim)
    assert (c["channel"] == "email").all() and c["session_id"].isna().all()
    assert set(c["value"]) == {0.0, 1.0}
    ins = c.loc[c["value"] == 1.0].set_index(c.loc[c["value"] == 1.0, "customer_id"].astype(str))
    lat = sim.latent.set_index(sim.latent["customer_id"].astype(str))
    assert ins.index.is_unique and set(ins.index) == set(lat.index[lat["subscribed"]])
    seen = sim.customers.set_index(sim.customers["customer_id"].astype(str))["first_seen"]
    delay = ins["event_time"] - seen.reindex(ins.index)
    assert (delay > pd.Timedelta(0)).all() and (delay <= pd.Timedelta(minutes=10)).all()  # during the first visit
    outs = c.loc[c["value"] == 0.0]
    assert outs["customer_id"].is_unique  # an opt-out is for good
    assert 0.03 < len(outs) / len(sim.customers) < 0.3
    # the latent log holds exactly these instants
    pd.testing.assert_series_equal(
        outs.set_index(outs["customer_id"].astype(str))["event_time"].sort_index(),
        lat["email_opt_out_time"].dropna().sort_index(),
        check_names=False,
    )


def test_consent_events_pass_ingest_validation(sim: Simulation, tmp_path: Path) -> None:
    paths = write_simulation(sim, tmp_path / "sim")
    store = EventStore(tmp_path / "events")
    result = ingest_files([Path(paths["events"])], store, tmp_path / "q", now=sim.end + pd.Timedelta(days=1))
    assert result.balanced and result.quarantined == 0 and result.duplicates == 0
    stored = store.read(["event_type", "channel", "value"]).to_pandas()
    stored = stored.loc[stored["event_type"] == "consent_change"]
    assert len(stored) == len(_consents(sim))
    assert (stored["channel"] == "email").all() and stored["value"].isin([0.0, 1.0]).all()


def test_no_email_after_an_opt_out(sim: Simulation) -> None:
    ev = sim.events
    out_at = _opt_out_time(sim)
    assert out_at.notna().sum() > 50
    after = (ev["event_time"] > out_at.reindex(ev["customer_id"].astype(str)).to_numpy()).to_numpy()
    email = (ev["channel"] == "email").to_numpy()
    for kind in ("marketing_contact", "email_sent"):  # email contacts and newsletters
        assert not (after & email & (ev["event_type"] == kind).to_numpy()).any(), kind
    # opens and clicks only on the opt-out day itself (of emails sent before it); no visit starts from an email later
    next_day = out_at.dt.floor("D") + pd.Timedelta(days=1)
    later_days = (ev["event_time"] >= next_day.reindex(ev["customer_id"].astype(str)).to_numpy()).to_numpy()
    assert not (later_days & ev["event_type"].isin(["email_open", "email_click"]).to_numpy()).any()
    # the logging policy still reaches opted-out customers, but not by email
    con = sim.contacts
    later = con["event_time"].to_numpy() > out_at.reindex(con["customer_id"].astype(str)).to_numpy()
    assert later.any() and not con.loc[later, "action"].isin(EMAIL_ACTIONS).any()
    assert (con["propensity"] > 0).all()


def test_sleeping_dogs_opt_out_far_more_often_per_email_contact(sim: Simulation) -> None:
    lat = sim.latent.set_index(sim.latent["customer_id"].astype(str))
    con = sim.contacts.loc[sim.contacts["action"].isin(EMAIL_ACTIONS)]
    emails = con.groupby(con["customer_id"].astype(str)).size().reindex(lat.index, fill_value=0)
    dog = (lat["effect_type"] == "sleeping_dog").to_numpy()
    out = lat["email_opt_out_time"].notna().to_numpy()
    rate_dog = out[dog].sum() / emails[dog].sum()
    rate_other = out[~dog].sum() / emails[~dog].sum()
    assert rate_dog > 4 * rate_other
    assert out[~dog].sum() > 20  # a base rate for everyone


def test_same_seed_same_consent_another_seed_not() -> None:
    a, b, c = simulate(500, 90, seed=3), simulate(500, 90, seed=3), simulate(500, 90, seed=4)
    pd.testing.assert_frame_equal(_consents(a), _consents(b))
    pd.testing.assert_frame_equal(a.latent, b.latent)
    assert not _consents(a)["customer_id"].equals(_consents(c)["customer_id"])


@pytest.mark.parametrize("offset", [pd.Timedelta(days=100), pd.Timedelta(days=120, hours=15, minutes=30)])
def test_email_opt_in_feature_reads_back_the_latent_consent(sim: Simulation, offset: pd.Timedelta) -> None:
    cutoff = sim.start + offset
    feats = compute_features(sim.events, [cutoff], customers=sim.customers)
    got = feats.set_index(feats["customer_id"].astype(str))["email_opt_in"]
    want = email_consent(sim, cutoff)
    want = want.set_index(want["customer_id"].astype(str))["email_opt_in"]
    assert set(got.index) == set(want.index)
    np.testing.assert_array_equal(got.reindex(want.index).to_numpy(), want.to_numpy())
    assert (want == 0.0).sum() > 20 and (want == 1.0).sum() > 200 and want.isna().sum() > 200


def test_true_effects_forbid_emailing_an_opt_out(sim: Simulation) -> None:
    cutoff = sim.start + pd.Timedelta(days=130, hours=13)
    effects = true_effects(sim, cutoff, 30).set_index("customer_id")
    consent = email_consent(sim, cutoff).set_index("customer_id")["email_opt_in"]
    out = (consent == 0.0).reindex(effects.index).to_numpy()
    assert out.sum() > 20
    for action in ACTION_IDS:
        nan = effects[action].isna().to_numpy()
        if action in EMAIL_ACTIONS:
            np.testing.assert_array_equal(nan, out, err_msg=action)
        else:
            assert not nan.any(), action


def test_a_forced_email_skips_customers_who_opted_out() -> None:
    cfg = make_config(2000, 100, 9, "2024-01-01", 0.0, 1.0)
    day = 80
    forced = simulate_config(replace(cfg, force_contact=(day, ACTION_IDS.index("cart_reminder"))))
    con = forced.contacts.loc[forced.contacts["day"] == day]
    out_day = forced.latent.set_index(forced.latent["customer_id"].astype(str))["opt_out_day"]
    gone = out_day[(out_day >= 0) & (out_day < day)].index
    assert len(gone) > 10
    assert not con["customer_id"].astype(str).isin(gone).any()
    arrived = forced.latent["arrival_day"] < day
    assert len(con) == int(arrived.sum()) - len(gone)
