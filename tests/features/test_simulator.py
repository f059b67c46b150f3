"""The journey simulator: contract, determinism, stage logic, exact ground truth, true effects, faults, CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from core.contract import CHANNELS, CUSTOMER_SCHEMA, EVENT_SCHEMA, EVENT_TYPE_LIST
from features.simulator import (
    ACTION_IDS,
    Simulation,
    ground_truth,
    load_simulation,
    realised_outcomes,
    simulate,
    true_effects,
    write_simulation,
)
from features.simulator.cli import register
from features.simulator.faults import FAULT_SHARES
from features.simulator.simulation import make_config, simulate_config

N, DAYS = 2000, 120


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(N, DAYS, seed=11)


@pytest.fixture(scope="module")
def quiet_sim() -> Simulation:
    """No marketing contacts at all: the ground truth is then exact for the realised future too."""
    return simulate(6000, DAYS, seed=5, marketing=0.0)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _se(p: float, n: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 1e-4) / n))


# ---------------------------------------------------------------- determinism and contract


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    write_simulation(simulate(400, 45, seed=3), tmp_path / "a")
    write_simulation(simulate(400, 45, seed=3), tmp_path / "b")
    write_simulation(simulate(400, 45, seed=4), tmp_path / "c")
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a["events.parquet"] != c["events.parquet"]


def test_events_file_is_exactly_the_contract(sim: Simulation, tmp_path: Path) -> None:
    paths = write_simulation(sim, tmp_path)
    assert pq.read_schema(paths["events"]).equals(EVENT_SCHEMA)
    assert pq.read_schema(paths["customers"]).equals(CUSTOMER_SCHEMA)
    ev = sim.events
    assert str(ev["event_time"].dtype) == "datetime64[us, UTC]"
    assert ev["event_id"].is_unique
    assert ev["event_time"].is_monotonic_increasing
    assert ev["event_time"].min() >= sim.start and ev["event_time"].max() < sim.end
    for column in ("event_id", "customer_id", "event_time", "event_type", "channel"):
        assert ev[column].notna().all(), column
    # the whole vocabulary (consent records included), nothing else
    assert set(ev["event_type"].unique()) == set(EVENT_TYPE_LIST)
    assert set(ev["channel"].unique()) <= set(CHANNELS)
    assert ev["customer_id"].str.fullmatch(r"c\d{6}").all()
    assert len(sim.customers) == N and sim.customers["customer_id"].is_unique


def test_values_and_properties_carry_their_units(sim: Simulation) -> None:
    ev = sim.events
    value = ev.set_index("event_type")["value"]
    assert (value.loc["purchase"] >= 0).all() and value.loc["purchase"].notna().all()
    assert (value.loc["refund"] >= 0).all()
    nps = value.loc["nps_response"]
    assert nps.between(0, 10).all() and (nps == nps.round()).all()
    for seconds in ("page_view", "product_view", "video_view"):
        assert (value.loc[seconds] > 0).all(), seconds
    contacts = ev.loc[ev["event_type"] == "marketing_contact", "properties"].map(json.loads)
    assert contacts.map(lambda p: p["action"] in ACTION_IDS).all()
    assert contacts.map(lambda p: 0 < p["propensity"] <= 1).all()
    assert len(contacts) == len(sim.contacts)
    # both arms of the logging policy: rule-targeted and uniformly random
    assert sim.contacts["targeted"].any() and (~sim.contacts["targeted"]).any()
    orders = ev.loc[ev["event_type"] == "purchase", "properties"].map(json.loads)
    assert orders.map(lambda p: p["items"] >= 1).all()


def test_weekly_seasonality_and_a_long_tail_of_heavy_buyers() -> None:
    s = simulate(3000, 200, seed=2)
    purchases = s.purchases
    per_buyer = purchases.groupby("customer_id").size()
    assert per_buyer.quantile(0.99) >= 4 * per_buyer.median()
    by_day = purchases["event_time"].dt.dayofweek.value_counts(normalize=True)
    assert by_day[5] > by_day[0]  # Saturdays beat Mondays


# ---------------------------------------------------------------- stages


def test_journeys_progress_through_the_stages(sim: Simulation) -> None:
    ev = sim.events
    first = ev.groupby("customer_id")["event_time"].min()
    seen = sim.customers.set_index("customer_id")["first_seen"]
    assert (first.reindex(seen.index) == seen).all()  # nothing before a customer is first seen

    def first_of(event_type: str) -> pd.Series:
        return ev.loc[ev["event_type"] == event_type].groupby("customer_id")["event_time"].min()

    buyers = first_of("purchase")
    assert (first_of("session_start").reindex(buyers.index) < buyers).all()
    assert (first_of("product_view").reindex(buyers.index) < buyers).all()

    # every online order ends its visit, after an add to cart and a checkout start
    in_visit = ev.loc[ev["session_id"].notna()]
    visits = in_visit.groupby("session_id")
    last_type = visits["event_type"].last()
    online = ev.loc[(ev["event_type"] == "purchase") & ev["session_id"].notna(), "session_id"]
    assert (last_type.loc[online] == "purchase").all()
    for step in ("session_start", "add_to_cart", "checkout_start"):
        assert set(online) <= set(ev.loc[ev["event_type"] == step, "session_id"]), step

    # refunds follow the order they refund
    orders = ev.loc[ev["event_type"] == "purchase"]
    order_time = pd.Series(
        orders["event_time"].to_numpy(), index=orders["properties"].map(lambda p: json.loads(p)["order_id"])
    )
    refunds = ev.loc[ev["event_type"] == "refund"]
    refunded = refunds["properties"].map(lambda p: json.loads(p)["order_id"])
    assert (refunds["event_time"].to_numpy() > order_time.loc[refunded].to_numpy()).all()

    # latent: aware -> considering (from the day after arrival) -> first purchase; no purchase after churn
    lat = sim.latent.set_index("customer_id")
    bought = lat.loc[lat["first_purchase_day"] >= 0]
    assert (bought["consider_day"] > bought["arrival_day"]).all()
    assert (bought["first_purchase_day"] >= bought["consider_day"]).all()
    death = lat["death_day"].reindex(sim.purchases["customer_id"]).to_numpy()
    assert ((death < 0) | (sim.purchases["day"].to_numpy() <= death)).all()


# ---------------------------------------------------------------- ground truth


def _joined(s: Simulation, cutoff: pd.Timestamp, horizon: int) -> pd.DataFrame:
    truth = ground_truth(s, cutoff, horizon)
    realised = realised_outcomes(s, cutoff, horizon)
    joined = truth.merge(realised, on="customer_id", suffixes=("", "_realised"))
    assert len(joined) == len(truth) == len(realised)
    assert (joined["is_prospect"] == joined["is_prospect_realised"]).all()
    return joined


@pytest.mark.parametrize("offset", [pd.Timedelta(days=90), pd.Timedelta(days=75, hours=14, minutes=30)])
def test_ground_truth_is_calibrated_against_realised_outcomes(quiet_sim: Simulation, offset: pd.Timedelta) -> None:
    """Without contacts the truth is exact, so realised rates match it within sampling error (3 SE + 0.01)."""
    cutoff = quiet_sim.start + offset
    j = _joined(quiet_sim, cutoff, 30)
    realised, predicted = j["purchased"].mean(), j["p_purchase"].mean()
    assert abs(realised - predicted) <= 3 * _se(predicted, len(j)) + 0.005
    for lo, hi in [(0.0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.0)]:
        band = j.loc[(j["p_purchase"] > lo) & (j["p_purchase"] <= hi)]
        assert len(band) >= 30, (lo, hi)
        p = band["p_purchase"].mean()
        assert abs(band["purchased"].mean() - p) <= 3 * _se(p, len(band)) + 0.01, (lo, hi)
    assert roc_auc_score(j["purchased"], j["p_purchase"]) > 0.85
    prospects = j.loc[j["is_prospect"]]
    p_first = prospects["p_first_purchase"].mean()
    assert abs(prospects["first_purchase"].mean() - p_first) <= 3 * _se(p_first, len(prospects)) + 0.005
    revenue_se = j["revenue"].std() / np.sqrt(len(j))
    assert abs(j["revenue"].mean() - j["expected_revenue"].mean()) <= 3 * revenue_se


def test_with_marketing_the_truth_ignores_later_contacts_but_stays_close(sim: Simulation) -> None:
    j = _joined(sim, sim.start + pd.Timedelta(days=90), 30)
    predicted = j["p_purchase"].mean()
    assert abs(j["purchased"].mean() - predicted) <= 3 * _se(predicted, len(j)) + 0.02
    assert roc_auc_score(j["purchased"], j["p_purchase"]) > 0.85


def test_ground_truth_columns_and_invariants(sim: Simulation) -> None:
    cutoff = sim.start + pd.Timedelta(days=60)
    short, long = ground_truth(sim, cutoff, 10), ground_truth(sim, cutoff, 40)
    assert list(short.columns) == [
        "customer_id",
        "p_churn",
        "p_purchase",
        "p_first_purchase",
        "expected_revenue",
        "is_prospect",
        "alive",
    ]
    assert (short["customer_id"] == long["customer_id"]).all()
    assert (long["p_purchase"] >= short["p_purchase"] - 1e-12).all()
    assert np.allclose(short["p_churn"] + short["p_purchase"], 1.0)
    assert short["p_first_purchase"].isna().eq(~short["is_prospect"]).all()
    dead = short.loc[~short["alive"]]
    assert len(dead) and (dead["p_purchase"] == 0).all() and (dead["expected_revenue"] == 0).all()
    # only customers first seen by the cutoff
    seen = sim.customers.loc[sim.customers["first_seen"] <= cutoff, "customer_id"]
    assert set(short["customer_id"]) == set(seen)


def test_bad_cutoffs_and_horizons_are_refused(sim: Simulation) -> None:
    with pytest.raises(ValueError, match="outside"):
        ground_truth(sim, sim.start - pd.Timedelta(days=1), 30)
    with pytest.raises(ValueError, match="horizon"):
        ground_truth(sim, sim.start + pd.Timedelta(days=10), 0)
    with pytest.raises(ValueError, match="after the end"):
        realised_outcomes(sim, sim.end - pd.Timedelta(days=5), 30)
    with pytest.raises(ValueError, match="customers"):
        simulate(-5, 10)
    with pytest.raises(ValueError, match="faults"):
        simulate(10, 10, faults=1.5)


# ---------------------------------------------------------------- true effects


def test_true_effects_are_heterogeneous(sim: Simulation) -> None:
    effects = true_effects(sim, sim.start + pd.Timedelta(days=90), 30)
    assert list(effects.columns) == ["customer_id", *ACTION_IDS]
    values = effects[list(ACTION_IDS)].to_numpy()
    assert (values > 0.01).mean() > 0.02  # helps some
    assert (np.abs(values) < 1e-9).mean() > 0.3  # does nothing for many
    assert (values < -0.005).mean() > 0.01  # annoys a few
    best = values.max(axis=1)
    assert (values.argmax(axis=1)[best > 0.01] != values.argmax(axis=1)[best > 0.01][0]).any()  # no single best action


def test_true_effects_match_forcing_the_action_on_everyone() -> None:
    """Common random numbers: the same world with and without the action at the cutoff for every customer."""
    cfg = make_config(5000, 100, 9, "2024-01-01", 0.0, 0.0)
    day, horizon = 70, 20
    base = simulate_config(cfg)
    cutoff = base.start + pd.Timedelta(days=day)
    effects = true_effects(base, cutoff, horizon)
    before = realised_outcomes(base, cutoff, horizon)["purchased"].to_numpy(dtype=float)
    for action in ("cart_reminder", "win_back_offer"):
        forced = simulate_config(replace(cfg, force_contact=(day, ACTION_IDS.index(action))))
        after = realised_outcomes(forced, cutoff, horizon)["purchased"].to_numpy(dtype=float)
        diff = after - before
        allowed = effects[action].notna().to_numpy()  # an email action skips who opted out: the same world
        assert (~allowed).sum() > 0 and (diff[~allowed] == 0).all(), action
        diff = diff[allowed]
        se = diff.std() / np.sqrt(len(diff))
        assert abs(diff.mean() - effects[action][allowed].mean()) <= 3.5 * se + 1e-4, action


# ---------------------------------------------------------------- faults


def test_faults_inject_every_kind_and_stay_recoverable(tmp_path: Path) -> None:
    clean = simulate(600, 60, seed=8)
    faulty = simulate(600, 60, seed=8, faults=0.05)
    assert set(faulty.faults["kind"]) == set(FAULT_SHARES)
    ev = faulty.events
    assert ev["customer_id"].isna().any()
    assert (~ev["event_type"].isin(EVENT_TYPE_LIST)).any()
    assert ((ev["event_type"] == "purchase") & (ev["value"] < 0)).any()
    assert (ev["event_time"].dt.year == 1970).any() and (ev["event_time"].dt.year > 2090).any()
    assert ev.duplicated(keep="first").sum() >= (faulty.faults["kind"] == "duplicate").sum()
    assert not ev["event_time"].is_monotonic_increasing
    # the log points at the right rows
    logged = ev.iloc[faulty.faults["row"].to_numpy()]
    assert (logged["event_id"].to_numpy() == faulty.faults["event_id"].to_numpy()).all()
    # dropping the extra rows gives back the clean events
    recovered = faulty.clean_events().sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(recovered, clean.events.sort_values("event_id").reset_index(drop=True))
    # still a Parquet file with the contract's columns and types (fields nullable)
    paths = write_simulation(faulty, tmp_path)
    schema = pq.read_schema(paths["events"])
    assert schema.names == EVENT_SCHEMA.names and schema.types == EVENT_SCHEMA.types
    loaded = load_simulation(tmp_path)
    cutoff = clean.start + pd.Timedelta(days=40)
    pd.testing.assert_frame_equal(realised_outcomes(loaded, cutoff, 20), realised_outcomes(clean, cutoff, 20))


# ---------------------------------------------------------------- files and CLI


def test_round_trip_gives_the_same_truth(sim: Simulation, tmp_path: Path) -> None:
    write_simulation(sim, tmp_path)
    loaded = load_simulation(tmp_path)
    assert loaded.start == sim.start and loaded.end == sim.end
    pd.testing.assert_frame_equal(loaded.events, sim.events)
    for cutoff in (sim.start + pd.Timedelta(days=80), sim.start + pd.Timedelta(days=50, hours=9)):
        pd.testing.assert_frame_equal(ground_truth(loaded, cutoff, 30), ground_truth(sim, cutoff, 30))
        pd.testing.assert_frame_equal(true_effects(loaded, cutoff, 30), true_effects(sim, cutoff, 30))
        pd.testing.assert_frame_equal(realised_outcomes(loaded, cutoff, 30), realised_outcomes(sim, cutoff, 30))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["seed"] == 11 and meta["counts"]["events"] == len(sim.events)


def test_load_refuses_a_folder_that_is_not_a_simulation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a simulation"):
        load_simulation(tmp_path)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_writes_the_folder_and_one_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--customers", "300", "--days", "30", "--seed", "2", "--out", str(out), "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["customers"] == 300
    assert summary["prospects"] + summary["buyers"] == 300
    assert summary["events"] == pq.read_metadata(out / "events.parquet").num_rows
    assert {Path(p).name for p in summary["files"].values()} == {p.name for p in out.iterdir()}
    assert summary["seconds"] >= 0


def test_cli_bad_arguments_fail_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["simulate", "--customers", "-3", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": "the number of customers must be a positive integer, got -3",
    }
    assert isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(_app(), ["simulate", "--faults", "2", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1 and "faults" in json.loads(result.stdout)["error"]
