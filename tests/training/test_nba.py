"""NBA training: contact logs, decision rows, training, the registry gate, load_policy, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.cli import _register, app
from core.settings import get_settings
from models.nba import NO_ACTION, decide_arrays
from training.nba import (
    CHALLENGER,
    CHAMPION,
    REGISTERED_MODEL,
    TrainConfig,
    UpliftParams,
    _to_us,
    build_uplift_data,
    contact_log,
    count_in_windows,
    decision_rows,
    fit_uplift_models,
    gate,
    load_catalog,
    load_policy,
    register_policy,
    train_policy,
    uplift_metrics,
)

runner = CliRunner()
T0 = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
DAY_US = 86_400_000_000


def ev(customer: str, day: float, event_type: str, properties: str | None = None, value: float | None = None) -> dict:
    return {"customer_id": customer, "event_time": T0 + day * DAY, "event_type": event_type,
            "properties": properties, "value": value}  # fmt: skip


def contact(customer: str, day: float, action: str, propensity: float | None = 0.25) -> dict:
    props = {"action": action} if propensity is None else {"action": action, "propensity": propensity}
    return ev(customer, day, "marketing_contact", json.dumps(props))


def test_contact_log_reads_the_properties() -> None:
    events = pd.DataFrame(
        [
            contact("a", 1.5, "cart_reminder", 0.25),
            contact("b", 2.0, "win_back_offer", None),
            ev("c", 3.0, "marketing_contact", '{"campaign": "spring"}'),
            ev("a", 1.0, "purchase", '{"action": "not a contact"}', 10.0),
        ]
    )
    log = contact_log(events)
    assert log["customer_id"].tolist() == ["a", "b"]
    assert log["action"].tolist() == ["cart_reminder", "win_back_offer"]
    assert log["propensity"].iloc[0] == 0.25 and np.isnan(log["propensity"].iloc[1])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), max_size=40),
    st.lists(st.tuples(st.integers(-1, 4), st.integers(-5, 45), st.integers(0, 20)), min_size=1, max_size=20),
    st.booleans(),
    st.booleans(),
)
def test_count_in_windows_matches_brute_force(events, queries, lo_closed: bool, hi_closed: bool) -> None:
    codes = np.array([c for c, _ in events], dtype=np.int64)
    times = np.array([t for _, t in events], dtype=np.int64)
    q_codes = np.array([c for c, _, _ in queries], dtype=np.int64)
    q_lo = np.array([t for _, t, _ in queries], dtype=np.int64)
    q_hi = q_lo + np.array([w for _, _, w in queries], dtype=np.int64)
    got = count_in_windows(codes, times, q_codes, q_lo, q_hi, lo_closed, hi_closed)
    for i, (c, lo, hi) in enumerate(zip(q_codes, q_lo, q_hi, strict=True)):
        inside = [(t >= lo if lo_closed else t > lo) and (t <= hi if hi_closed else t < hi) for t in times[codes == c]]
        assert got[i] == (sum(inside) if c >= 0 else 0)


def test_decision_rows_by_hand() -> None:
    events = pd.DataFrame(
        [
            ev("A", 0.0, "session_start"),
            ev("B", 0.0, "session_start"),
            ev("C", 0.0, "session_start"),
            contact("C", 3.4, "comparison_guide"),
            contact("A", 5.4, "cart_reminder", 0.25),
            ev("A", 10.0, "purchase", value=20.0),
            ev("B", 35.5, "purchase", value=20.0),
            ev("D", 5.0, "session_start"),  # first seen during the window
        ]
    )
    rows = decision_rows(events, T0 + 4 * DAY, T0 + 7 * DAY, 30, min_gap_days=7, control_ratio=100.0)
    got = {(r.customer_id, int((r.cutoff - T0) / DAY), r.treatment): (r.y_purchase, r.propensity)
           for r in rows.itertuples()}  # fmt: skip
    # A: control on day 4 (contacted the next day), treated on day 5, not a control on day 6 (contacted
    # the day before); B: control every day, buys on day 35.5 (inside (6, 36] only); C: contacted on
    # day 3, within 7 days; D: first seen on day 5, a control from day 6.
    assert set(got) == {
        ("A", 4, NO_ACTION), ("A", 5, "cart_reminder"), ("B", 4, NO_ACTION), ("B", 5, NO_ACTION),
        ("B", 6, NO_ACTION), ("D", 6, NO_ACTION),
    }  # fmt: skip
    assert got[("A", 5, "cart_reminder")] == (1, 0.25)
    assert got[("A", 4, NO_ACTION)][0] == 1
    assert [got[("B", d, NO_ACTION)][0] for d in (4, 5, 6)] == [0, 0, 1]
    assert (rows["weight"] == 1.0).all()
    assert rows["cutoff"].dt.hour.eq(0).all()


# ---------------------------------------------------------------- a small logged world


def small_features(events: pd.DataFrame):
    """A fast point-in-time feature function with the columns the catalog reads (not the feature engine)."""
    log = contact_log(events)
    cats = pd.Categorical(events["customer_id"].astype(str))
    c_codes = pd.Categorical(log["customer_id"], categories=cats.categories).codes
    c_us = _to_us(log["event_time"])
    pur = events[events["event_type"] == "purchase"]
    p_codes = pd.Categorical(pur["customer_id"].astype(str), categories=cats.categories).codes
    p_us = _to_us(pur["event_time"])
    first = pd.Series(_to_us(events["event_time"])).groupby(cats.codes).min()

    def fn(entity: pd.DataFrame) -> pd.DataFrame:
        q = pd.Categorical(entity["customer_id"].astype(str), categories=cats.categories).codes.astype(np.int64)
        t = _to_us(entity["cutoff"])
        out = entity[["customer_id", "cutoff"]].reset_index(drop=True).copy()
        out["orders_lifetime"] = count_in_windows(p_codes, p_us, q, t - 10_000 * DAY_US, t)
        out["orders_30d"] = count_in_windows(p_codes, p_us, q, t - 30 * DAY_US, t)
        for w in (7, 30, 90):
            out[f"contacts_{w}d"] = count_in_windows(c_codes, c_us, q, t - w * DAY_US, t)
        last = np.full(len(q), np.nan)
        last_action = np.full(len(q), None, dtype=object)
        for i, (code, cut) in enumerate(zip(q, t, strict=True)):
            mine = (c_codes == code) & (c_us <= cut)
            if mine.any():
                k = np.flatnonzero(mine)[np.argmax(c_us[mine])]
                last[i] = (cut - c_us[k]) / DAY_US
                last_action[i] = log["action"].iloc[k]
        out["days_since_last_contact"] = last
        out["last_contact_action"] = last_action
        seen = first.reindex(q).to_numpy(float)
        out["tenure_days"] = (t - np.where(np.isnan(seen), t, seen)) / DAY_US
        out["aov_lifetime"] = 50.0
        n = out["orders_lifetime"].to_numpy()
        out["journey_stage"] = np.select([n == 0, n == 1], ["consideration", "first_purchase"], "repeat")
        return out

    return fn


@pytest.fixture(scope="module")
def logged_world() -> pd.DataFrame:
    """300 customers over 160 days: contacts with logged propensities; "cart_reminder" helps repeat buyers."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        cid = f"c{i:03d}"
        rate = rng.uniform(0.005, 0.05)
        rows.append(ev(cid, rng.uniform(0, 5), "session_start"))
        boost_until = -1.0
        last_contact = -100.0
        for day in range(160):
            if day - last_contact > 7 and rng.random() < 0.15:
                action = "cart_reminder" if rng.random() < 0.5 else "win_back_offer"
                rows.append(contact(cid, day + 0.4, action, 0.075))
                last_contact = day
                if action == "cart_reminder":
                    boost_until = day + 14
            if rng.random() < rate * (3.0 if day <= boost_until else 1.0):
                rows.append(ev(cid, day + 0.6, "purchase", value=50.0))
    return pd.DataFrame(rows)


TINY = UpliftParams(n_estimators=20, num_leaves=7, min_child_samples=20, min_arm_rows=20)
SMALL = TrainConfig(train_days=100, control_ratio=1.0, uplift=TINY)


def test_uplift_models_learn_from_the_logged_world(logged_world: pd.DataFrame) -> None:
    catalog = load_catalog()
    data = build_uplift_data(logged_world, catalog, small_features(logged_world), SMALL)
    assert set(data.train_rows["treatment"]) == {NO_ACTION, "cart_reminder", "win_back_offer"}
    assert data.train_rows["cutoff"].max() < data.eval_rows["cutoff"].min()
    models = fit_uplift_models(data.train_rows, data.train_features, catalog, SMALL.uplift)
    assert set(models) == {"purchase"}  # review / referral outcomes never happen in this world
    up = models["purchase"].predict_uplift(data.eval_features)
    arms = models["purchase"].arms_
    assert up[:, arms.index("cart_reminder")].mean() > up[:, arms.index("win_back_offer")].mean() + 0.02
    metrics, deciles, curve = uplift_metrics(models, data.eval_rows, data.eval_features)
    assert {"qini", "auuc", "uplift_at_10", "qini_cart_reminder"} <= set(metrics)
    assert len(deciles) == 10 and len(curve) == 101


def test_gate() -> None:
    assert gate(0.01, None)[0]
    assert not gate(-0.01, None)[0]
    assert not gate(float("nan"), None)[0]
    assert gate(0.02, 0.01)[0]
    assert not gate(0.01, 0.02)[0]
    assert gate(0.01, float("nan"))[0]


def test_load_policy_without_a_model_uses_priors(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEY_HOLDOUT_SHARE", "0.1")
    policy = load_policy(get_settings())
    assert policy.priors_only and not policy.models and policy.holdout_share == 0.1
    assert not workspace.exists(), "loading a policy must not create a tracking store"
    assert policy.catalog.action_ids == load_catalog().action_ids


@pytest.mark.slow
def test_register_gate_and_load_the_champion(workspace: Path, logged_world: pd.DataFrame) -> None:
    import mlflow

    s = get_settings()
    catalog = load_catalog()
    data = build_uplift_data(logged_world, catalog, small_features(logged_world), SMALL)
    models = fit_uplift_models(data.train_rows, data.train_features, catalog, SMALL.uplift)
    metrics, deciles, curve = uplift_metrics(models, data.eval_rows, data.eval_features)

    def register(qini: float) -> dict:
        return register_policy(models, catalog, {**metrics, "qini": qini}, deciles, curve, data.eval_rows,
                               data.eval_features, {"learner": "lift"}, s)  # fmt: skip

    first = register(0.01)
    assert first["promoted"] and first["version"] == "1"
    policy = load_policy(s)
    assert not policy.priors_only and policy.version == f"{REGISTERED_MODEL}/1"
    X = data.eval_features.head(50)
    assert np.allclose(policy.models["purchase"].predict_outcomes(X), models["purchase"].predict_outcomes(X))
    assert (decide_arrays(X, None, policy).top == decide_arrays(X, None, policy).top).all()

    worse = register(-0.5)  # not positive: challenger only
    assert not worse["promoted"] and "not positive" in worse["gate"]
    better = register(1e9)  # beats the champion re-evaluated on the same rows
    assert better["promoted"] and better["champion_qini_same_rows"] is not None

    cl = mlflow.MlflowClient(tracking_uri=s.tracking_uri)
    assert str(cl.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION).version) == "3"
    assert str(cl.get_model_version_by_alias(REGISTERED_MODEL, CHALLENGER).version) == "3"
    artifacts = [a.path for a in cl.list_artifacts(first["run_id"], "evaluation")]
    assert "evaluation/uplift_by_decile.png" in artifacts and "evaluation/uplift_by_decile.csv" in artifacts
    assert "qini" in cl.get_run(first["run_id"]).data.metrics
    assert str(workspace.resolve()) in cl.get_run(first["run_id"]).info.artifact_uri  # never ./mlruns


@pytest.mark.slow
def test_train_policy_from_events(workspace: Path, logged_world: pd.DataFrame) -> None:
    summary = train_policy(get_settings(), SMALL, events=logged_world, feature_fn=small_features(logged_world))
    assert summary["ok"] and summary["version"] == "1" and summary["groups"] == ["purchase"]
    assert summary["promoted"] == (summary["metrics"]["qini"] > 0)


# ---------------------------------------------------------------- the command line


def test_cli_fails_cleanly_without_events(workspace: Path) -> None:
    _register()
    result = runner.invoke(app, ["nba", "train", "--json"])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False and "event store is empty" in body["error"]
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["nba", "train", "--learner", "magic", "--json"])
    assert bad.exit_code == 1 and "--learner" in json.loads(bad.stdout)["error"]


def test_cli_docs_prints_the_actions_doc(tmp_path: Path) -> None:
    from training.nba import NOTES_MARKER

    _register()
    doc = (Path(__file__).resolve().parents[2] / "docs" / "actions.md").read_text()
    result = runner.invoke(app, ["nba", "docs"])
    assert result.exit_code == 0
    assert result.stdout == doc.split(NOTES_MARKER, 1)[0]
    # --out rewrites the generated part and keeps what was written by hand below the marker
    out = tmp_path / "actions.md"
    out.write_text("stale catalog text\n" + NOTES_MARKER + "\nhand-written notes\n")
    assert runner.invoke(app, ["nba", "docs", "--out", str(out)]).exit_code == 0
    assert out.read_text() == result.stdout + NOTES_MARKER + "\nhand-written notes\n"


@pytest.mark.slow
def test_cli_train_from_the_store_and_evaluate(workspace: Path, tmp_path: Path) -> None:
    from features.simulator.simulation import simulate

    _register()
    sim = simulate(2000, 150, seed=5)
    src = tmp_path / "events.parquet"
    sim.events.to_parquet(src)
    assert runner.invoke(app, ["ingest", str(src), "--json"]).exit_code == 0
    result = runner.invoke(app, ["nba", "train", "--train-days", "90", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["version"] == "1" and summary["metrics"]["qini"] is not None
    assert summary["promoted"] == (summary["metrics"]["qini"] > 0)
    policy = load_policy(get_settings())
    assert policy.priors_only == (not summary["promoted"])

    result = runner.invoke(app, ["nba", "evaluate", "--customers", "1500", "--days", "150", "--train-days", "60",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    values = {k: v["value_per_1000"] for k, v in table["policies"].items()}
    assert set(values) >= {
        "random",
        "stage_rule",
        "propensity_churn",
        "propensity_next_purchase",
        "journeyml",
        "oracle",
    }
    assert values["oracle"] >= max(values.values()) - 1e-9
    assert all(v["contacts"] <= table["budget_contacts"] for v in table["policies"].values())
    assert {"ips_per_1000", "dr_per_1000", "true_per_1000"} <= set(table["off_policy"])


@pytest.mark.slow
def test_trained_policy_on_a_simulated_population_beats_untargeted_contacts_and_respects_consent() -> None:
    """10,000 simulated customers over a year, judged with the simulator's true effects (about 30 s).

    Value per 1,000 customers, journeyml vs cart reminder to the highest purchase propensities, seeds 0-5:
    with the simulator's email consent (model version 2) 0.87/8.31, 13.03/9.98, 11.55/8.54, 8.20/7.30,
    26.27/16.02, 12.09/6.30 (0.1-1.9x; means 12.0 vs 9.4); before it 10.97/5.88, 12.86/6.36, 7.06/5.75,
    6.89/2.72, 10.25/6.74, 5.60/6.73 (0.8-2.5x). Beating propensity targeting by a margin is a seed
    lottery at this size (it failed on 2 of 6 seeds before consent, 1 of 6 after), so it is judged on
    the 20k-customer evaluation in docs/actions.md instead. What holds on every seed is asserted here.
    """
    from training.nba import SimEvalConfig, evaluate_on_simulator

    cfg = SimEvalConfig(customers=10_000, days=365, seed=0, references=False)
    result = evaluate_on_simulator(cfg)
    values = {k: v["value_per_1000"] for k, v in result["policies"].items()}
    assert values["journeyml"] > 0
    assert values["journeyml"] > max(values["random"], values["stage_rule"], values["propensity_churn"])
    assert values["oracle"] >= max(values.values()) - 1e-9
    contacts = result["policies"]["journeyml"]["contacts"]
    assert 0 < contacts <= result["budget_contacts"]
    # the simulator's opt-outs reach the features: no policy emails a customer the truth says opted out
    assert all(v["not_allowed"] == 0 for v in result["policies"].values())
