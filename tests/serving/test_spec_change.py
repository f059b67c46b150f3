"""A champion trained on another label spec never scores: the task is skipped and logged, the rest load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import serving.runtime
import training.labels
from core.settings import Settings
from serving.runtime import load_champions


def test_a_changed_label_spec_skips_that_task_only(trained_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=trained_home, mlflow_tracking_uri=f"sqlite:///{trained_home.resolve() / 'mlflow.db'}")
    models, _, source = load_champions(settings)
    assert source == "registry" and {"churn", "next_purchase"} <= set(models)

    real = training.labels.load_spec

    def edited(task: str, *args: object, **kwargs: object) -> object:
        spec = real(task, *args, **kwargs)  # type: ignore[arg-type]
        assert isinstance(spec, training.labels.LabelSpec)
        if task == "churn":  # as if conf/labels/churn.yaml had been edited since training
            return dataclasses.replace(spec, raw={**spec.raw, "horizon_days": spec.horizon_days + 30})
        return spec

    monkeypatch.setattr(training.labels, "load_spec", edited)
    events: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(serving.runtime, "log", lambda _logger, event, **fields: events.append((event, fields)))
    models, _, source = load_champions(settings)
    assert source == "registry", "a changed spec is not an unreachable registry"
    assert "churn" not in models and "next_purchase" in models
    assert [f["task"] for e, f in events if e == "champion_spec_mismatch"] == ["churn"]
