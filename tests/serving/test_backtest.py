"""`journey backtest`: scores at a past cutoff against the labels that followed, on the trained workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.settings import Settings
from core.time import to_utc
from serving.backtest import deciles, run_backtest
from serving.batch import BatchError, default_destination, parse_destination, score_run

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_exported_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: start each test without it, leave none behind."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def settings_for(home: Path, **kwargs: object) -> Settings:
    """The workspace's own registry, whatever MLFLOW_TRACKING_URI says."""
    kwargs.setdefault("mlflow_tracking_uri", f"sqlite:///{home.resolve() / 'mlflow.db'}")
    return Settings(home=home, **kwargs)  # type: ignore[arg-type]


def table_cutoff(home: Path) -> pd.Timestamp:
    path = sorted((home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]
    return to_utc(pd.read_parquet(path, columns=["event_timestamp"])["event_timestamp"].iloc[0])


def test_deciles_by_hand() -> None:
    # 20 customers, score = rank; the top 2 scores are the only positives.
    score = np.arange(20, 0, -1) / 20.0
    y = np.array([1, 1] + [0] * 18, dtype=float)
    ids = np.array([f"c{i:02d}" for i in range(20)])
    d = deciles(y, score, ids, "binary")
    assert d["n"].tolist() == [2] * 10 and d["decile"].tolist() == list(range(1, 11))
    assert d.loc[0, "actual_rate"] == 1.0 and d.loc[0, "lift"] == pytest.approx(10.0)
    assert d.loc[0, "expected"] == pytest.approx(1.0 + 0.95) and d.loc[0, "actual"] == 2.0
    assert d["cumulative_capture"].iloc[0] == 1.0 and d["actual"].iloc[1:].sum() == 0
    # Ties are broken by customer id, so the same inputs always give the same buckets.
    flat = deciles(y, np.ones(20), ids[::-1], "binary")
    assert flat["actual"].tolist() == [0] * 9 + [2.0]


def test_backtest_judges_scores_against_the_labels(trained_home: Path, tmp_path: Path) -> None:
    from training.labels import labels, load_spec
    from training.store import load_label_events, store_glob

    settings = settings_for(trained_home)
    cutoff = table_cutoff(trained_home) - pd.Timedelta(days=100)
    recomputed = run_backtest(settings, cutoff)
    churn = recomputed["tasks"]["churn"]
    assert churn["status"] == "judged" and churn["scores"] == "recomputed"
    target = churn["targets"]["churn_probability"]
    # The actual counts are the labels of training/labels.py for the same cutoff.
    events = load_label_events(store_glob(settings.events_dir))
    lab = labels(events.events, load_spec("churn"), [cutoff], customers=events.first_seen,
                 observed_until=events.data_end)  # fmt: skip
    assert target["customers"] == len(lab) == churn["eligible"] and target["unscored"] == 0
    assert target["metrics"]["actual_total"] == pytest.approx(float(lab["label"].sum()))
    assert 0.6 < target["metrics"]["auc"] <= 1.0, "a trained churn model ranks churners first"
    d = pd.DataFrame(target["deciles"])
    assert len(d) == 10 and d["n"].sum() == len(lab) and d["actual"].sum() == pytest.approx(lab["label"].sum())
    assert d["mean_score"].is_monotonic_decreasing and d["lift"].iloc[0] > 1.0
    assert set(recomputed["tasks"]["next_purchase"]["targets"]) == {
        f"next_purchase_probability_{h}d" for h in (7, 30, 90)
    }

    # Scores written by `journey score` for the cutoff are what gets judged, with the same numbers.
    dest = parse_destination(default_destination(settings, cutoff))
    score_run(settings, cutoff, dest, reasons=False, show_progress=False)
    from_file = run_backtest(settings, cutoff)
    assert from_file["tasks"]["churn"]["scores"] == str(dest.path)
    assert from_file["tasks"]["churn"]["version"] == churn["version"]
    again = from_file["tasks"]["churn"]["targets"]["churn_probability"]
    assert again["metrics"]["auc"] == pytest.approx(target["metrics"]["auc"], abs=1e-9)
    assert again["deciles"] == target["deciles"]

    import mlflow

    run = mlflow.MlflowClient(settings.tracking_uri).get_run(from_file["mlflow_run_id"])
    assert run.data.metrics["churn_probability_auc"] == pytest.approx(target["metrics"]["auc"])
    exp = mlflow.MlflowClient(settings.tracking_uri).get_experiment(run.info.experiment_id)
    assert exp.name == "journeyml-backtests"


def test_backtest_waits_for_the_horizon(trained_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cli import _register, app
    from training.store import load_label_events, store_glob

    settings = settings_for(trained_home)
    # The last event, whatever other tests posted to the shared workspace since it was built.
    end = load_label_events(store_glob(settings.events_dir)).data_end
    recent = run_backtest(settings, end - pd.Timedelta(days=20))
    assert recent["tasks"]["churn"]["status"] == "pending"
    assert list(recent["tasks"]["next_purchase"]["targets"]) == ["next_purchase_probability_7d"]
    with pytest.raises(BatchError, match="no events after"):
        run_backtest(settings, end + pd.Timedelta(days=1))

    _register()
    monkeypatch.setenv("JOURNEY_HOME", str(trained_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    day = (end - pd.Timedelta(days=3)).isoformat()
    result = runner.invoke(app, ["backtest", "--as-of", day, "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no task can be judged" in json.loads(result.stdout.strip().splitlines()[-1])["error"]
