"""The champion poller asks MLflow only when a SQLite registry's files changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.settings import Settings
from serving.runtime import Loaded, Runtime
from serving.scoring import Reference


def _runtime(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, list[int]]:
    runtime = Runtime(Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}"))
    runtime.loaded = Loaded(scorer=None, versions={"churn": "3"}, reference=Reference(), source="registry")
    asked: list[int] = []

    def current_versions() -> dict[str, str]:
        asked.append(1)
        return {"churn": "3"}

    monkeypatch.setattr(runtime, "current_versions", current_versions)
    return runtime, asked


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_an_unchanged_sqlite_registry_is_not_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"x" * 100)
    _age(db, 60)
    runtime, asked = _runtime(tmp_path, monkeypatch)
    assert runtime.reload_if_moved() is False and len(asked) == 1
    assert runtime.reload_if_moved() is False and len(asked) == 1  # same stamp: MLflow not asked

    db.write_bytes(b"x" * 101)  # an alias moved: the file changed
    _age(db, 30)
    assert runtime.reload_if_moved() is False and len(asked) == 2

    (tmp_path / "mlflow.db-wal").write_bytes(b"w")  # a WAL write counts too
    _age(tmp_path / "mlflow.db-wal", 30)
    assert runtime.reload_if_moved() is False and len(asked) == 3

    db.write_bytes(b"x" * 101)  # changed just now: a stamp this fresh is not trusted
    runtime.reload_if_moved()
    runtime.reload_if_moved()
    assert len(asked) == 5


def test_other_registries_are_always_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, asked = _runtime(tmp_path, monkeypatch)
    runtime.settings = Settings(home=tmp_path, mlflow_tracking_uri="postgresql://127.0.0.1:5432/test")
    runtime.reload_if_moved()
    runtime.reload_if_moved()
    assert len(asked) == 2
