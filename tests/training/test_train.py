"""Training end to end against a real SQLite MLflow backend in tmp_path."""

from __future__ import annotations

import mlflow
import pytest

from core.settings import get_settings
from models.task_model import SpecMismatchError
from tests.training.conftest import FAST, customers_of, label_events
from tests.training.synth import simple_features
from training import registry
from training.config import load_config
from training.gate import decide
from training.labels import load_spec
from training.train import train_task


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNEY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("JOURNEY_MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def run(task: str, world, uri: str, **overrides):
    events, _ = world
    cfg = load_config(task, overrides={**FAST, **overrides})
    return train_task(
        task, label_events(events), simple_features(events), tracking_uri=uri, customers=customers_of(world), config=cfg
    )


@pytest.mark.slow
def test_train_registers_logs_and_gates(home, world, tmp_path, monkeypatch) -> None:
    uri = get_settings().tracking_uri
    assert uri.startswith("sqlite:///") and str(home) in uri
    first = run("churn", world, uri, **{"gate.max_ece": None, "gate.min_improvement": 0.0})
    assert first.version == "1" and first.promoted
    assert first.metrics["auc"] > 0.75

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(first.run_id)
    spec = load_spec("churn")
    tags = parent.data.tags
    assert tags["label_spec_hash"] == spec.hash
    assert tags["feature_service"] == "churn_v1"
    assert tags["dataset_source"] == "synthetic"
    assert tags["gate_decision"] == "promoted" and "data_window" in tags
    for metric in ("test_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "test_lift_top_decile",
                   "test_lift_quality", "backtest_auc"):  # fmt: skip
        assert metric in parent.data.metrics
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"churn-train", "churn-validation", "churn-test"}
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"label_spec.yaml", "features.json", "gate.json", "plots", "per_cutoff_metrics.json"} <= artifacts
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(first.run_id, "plots")}
    assert {"roc.png", "pr.png", "calibration.png", "cumulative_gains.png", "shap_summary.png",
            "feature_importance.png"} <= plots  # fmt: skip
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert {c.data.tags["baseline"] for c in children} == {"logistic", "recency", "btyd"}
    assert all("test_auc" in c.data.metrics for c in children)

    model, info = registry.load_champion("churn", uri)
    assert info["version"] == "1" and model.spec_hash == spec.hash and model.feature_service == "churn_v1"
    events, _ = world
    scores = model.predict(simple_features(events)(label_events(events).first_seen.head(5).assign(
        cutoff=events["event_time"].max()).rename(columns={"first_seen": "x"})[["customer_id", "cutoff"]]),
        spec_hash=spec.hash)  # fmt: skip
    assert scores["churn_probability"].between(0, 1).all()

    # someone edits the label spec: the champion refuses to load against it
    edited = tmp_path / "labels"
    edited.mkdir()
    (edited / "churn.yaml").write_text(spec.to_yaml().replace("horizon_days: 90", "horizon_days: 60"))
    with monkeypatch.context() as m:
        m.setattr("training.labels.LABELS_DIR", edited)
        with pytest.raises(SpecMismatchError, match="trained on label spec"):
            registry.load_champion("churn", uri)

    # the same data again: not better than the champion by the margin -> challenger only
    second = run("churn", world, uri, **{"gate.max_ece": None, "gate.min_improvement": 0.01})
    assert second.version == "2" and not second.promoted
    assert any("does not beat champion" in r for r in second.gate["reasons"])
    c = mlflow.MlflowClient(uri)
    assert str(c.get_model_version_by_alias("journeyml-churn", "champion").version) == "1"
    assert str(c.get_model_version_by_alias("journeyml-churn", "challenger").version) == "2"
    assert c.get_run(second.run_id).data.tags["gate_decision"] == "rejected"
    listed = {row["task"]: row for row in registry.list_models(["churn", "clv"], uri)}
    assert listed["churn"]["champion"]["version"] == "1" and listed["churn"]["challenger"]["version"] == "2"
    assert listed["clv"]["champion"] is None


@pytest.mark.slow
def test_timing_and_value_tasks_train(home, world) -> None:
    uri = get_settings().tracking_uri
    timing = run("next_purchase", world, uri, **{"gate.max_ece": None})
    assert "concordance" in timing.metrics and timing.metrics["concordance"] > 0.6
    assert {"auc", "auc_7d", "auc_30d"} <= set(timing.metrics)
    value = run("clv", world, uri)
    assert value.metrics["spearman"] > 0.3
    assert any("365d skipped" in n for n in value.notes)  # 540 days cannot hold a 365-day horizon honestly
    model, _ = registry.load_version("clv", "challenger", uri)
    assert model.outputs == ["clv_90d"]


def test_gate_rules() -> None:
    gate = load_config("churn").gate
    base = {"logistic": {"auc": 0.80}, "recency": {"auc": 0.70}}
    ok = decide({"auc": 0.85, "ece": 0.01}, base, None, gate)
    assert ok.promote and "no current champion" in ok.reasons
    assert not decide({"auc": 0.85, "ece": 0.05}, base, None, gate).promote  # calibration out of bounds
    assert not decide({"auc": 0.79, "ece": 0.01}, base, None, gate).promote  # loses to a baseline
    assert not decide({"auc": 0.851, "ece": 0.01}, base, {"auc": 0.85}, gate).promote  # within the margin
    assert decide({"auc": 0.86, "ece": 0.01}, base, {"auc": 0.85}, gate).promote
    small = decide({"auc": 0.85, "ece": 0.035, "ece_noise": 0.02}, base, None, gate)  # within the noise of a small test
    assert small.promote and any("sampling noise" in r for r in small.reasons)
    assert not decide({"auc": 0.85, "ece": 0.05, "ece_noise": 0.02}, base, None, gate).promote
    note = decide({"auc": 0.86, "ece": 0.01}, base, None, gate, champion_note="trained on another spec")
    assert note.promote and "trained on another spec" in note.reasons
