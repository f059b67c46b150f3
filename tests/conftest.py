from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any test imports LightGBM

from pathlib import Path

import pytest


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh JOURNEY_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("JOURNEY_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("JOURNEY_REDIS_URL", raising=False)
    return home
