"""A small trained workspace shared by the serving tests: simulate, ingest, build, materialize, train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

API_KEY = "test-key-123"


def journey(home: Path, *args: str) -> dict:
    env = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": API_KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [sys.executable, "-m", "core", *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, f"journey {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("served") / "home"
    sim = journey(home, "simulate", "--customers", "3000", "--days", "365", "--seed", "3", "--out", str(home / "sim"))
    journey(
        home, "ingest", str(home / "sim" / "events.parquet"), "--customers", str(home / "sim" / "customers.parquet")
    )
    end = sim["end"][:10]
    journey(home, "features", "build", "--as-of", end)
    journey(home, "features", "materialize")
    for task in ("churn", "next_purchase"):
        result = journey(home, "train", "--task", task)
        version = result["tasks"][0]["version"]
        if not result["tasks"][0]["promoted"]:  # small data may miss the gate; the API tests need a champion
            from training.registry import client, registered_name, set_alias

            set_alias(client(f"sqlite:///{home.resolve() / 'mlflow.db'}"), registered_name(task), "champion", version)
    return home
