from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import training.dataset
from tests.training.conftest import write_store
from tests.training.synth import simple_features
from training.cli import register


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNEY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return tmp_path / "home"


def invoke(app, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, list(args))
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.output
    return result.exit_code, json.loads(lines[-1])


def test_clear_errors_without_tracebacks(app, home) -> None:
    code, out = invoke(app, "train", "--task", "churn", "--json")
    assert code == 1 and out["ok"] is False and "no events" in out["error"]
    code, out = invoke(app, "train", "--task", "lifetime", "--json")
    assert code == 1 and "--task must be one of" in out["error"]
    code, out = invoke(app, "models", "list", "--json")
    assert code == 0 and [m["champion"] for m in out["models"]] == [None] * 4


@pytest.mark.slow
def test_train_evaluate_and_list(app, home, world, monkeypatch) -> None:
    events, customers = world
    write_store(events, home / "events")
    customers.to_parquet(home / "customers.parquet")
    monkeypatch.setattr(
        training.dataset, "compute_features_source", lambda glob, customers=None: simple_features(events)
    )
    code, out = invoke(app, "train", "--task", "churn", "--max-train-rows", "2000", "--json")
    assert code == 0, out
    (task,) = out["tasks"]
    assert task["task"] == "churn" and task["version"] == "1" and task["metrics"]["auc"] > 0.7
    assert set(task["baselines"]) == {"logistic", "recency", "btyd"}

    code, out = invoke(app, "models", "list", "--json")
    churn = next(m for m in out["models"] if m["task"] == "churn")
    assert churn["challenger"]["version"] == "1" and "auc" in churn["challenger"]["metrics"]

    alias = "champion" if task["promoted"] else "challenger"
    code, out = invoke(app, "evaluate", "--task", "churn", "--alias", alias, "--json")
    assert code == 0, out
    assert out["tasks"][0]["version"] == "1" and out["tasks"][0]["metrics"]["auc"] > 0.7

    code, out = invoke(app, "evaluate", "--task", "clv", "--json")
    assert code == 1 and "no champion" in out["error"]

    # A hand promotion past the gate: the champion moves and the reason stays on the version.
    code, out = invoke(app, "models", "promote", "--task", "churn", "--reason", "  ", "--json")
    assert code == 1 and "--reason" in out["error"]
    code, out = invoke(app, "models", "promote", "--task", "churn", "--version", "7", "--reason", "x", "--json")
    assert code == 1 and "no version 7" in out["error"]
    code, out = invoke(app, "models", "promote", "--task", "clv", "--reason", "x", "--json")
    assert code == 1 and "no challenger" in out["error"]
    code, out = invoke(app, "models", "promote", "--task", "churn", "--reason", "seasonal test cutoff", "--json")
    assert code == 0 and out["champion"] == "1" and out["previous"] == ("1" if task["promoted"] else None)
    from mlflow import MlflowClient

    tag = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_model_version("journeyml-churn", "1").tags
    assert tag["gate_override"].startswith("seasonal test cutoff")
    code, out = invoke(app, "models", "list", "--json")
    assert next(m for m in out["models"] if m["task"] == "churn")["champion"]["version"] == "1"
