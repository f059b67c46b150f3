"""MLflow tracking and registry on PostgreSQL (a fresh database per test run)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.training.conftest import FAST, customers_of, label_events
from tests.training.synth import simple_features
from training import registry
from training.config import load_config
from training.train import train_task

ADMIN_URL = os.environ.get("JOURNEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _connect(url: str):
    import psycopg2

    return psycopg2.connect(url, connect_timeout=3)


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    import psycopg2

    try:
        admin = _connect(ADMIN_URL)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {ADMIN_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {ADMIN_URL} is unreachable ({str(exc).strip()}); set CI=true to make this fail")
    name = f"journeyml_{uuid.uuid4().hex[:12]}"
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        import sqlalchemy

        sqlalchemy.orm.close_all_sessions()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.integration
@pytest.mark.slow
def test_train_and_register_on_postgres(postgres_uri: str, world, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JOURNEY_HOME", str(tmp_path))  # artifacts go to the workspace, not ./mlruns
    events, _ = world
    cfg = load_config("conversion", overrides={**FAST, "gate.max_ece": None, "gate.min_improvement": 0.0})
    result = train_task(
        "conversion",
        label_events(events),
        simple_features(events),
        tracking_uri=postgres_uri,
        customers=customers_of(world),
        config=cfg,
        experiment_prefix=f"pg-{uuid.uuid4().hex[:6]}",
    )
    assert result.version == "1"
    rows = registry.list_models(["conversion"], postgres_uri)
    assert rows[0]["challenger"]["version"] == "1"
    model, info = registry.load_version("conversion", "challenger", postgres_uri)
    assert info["run_id"] == result.run_id and model.outputs == ["conversion_probability"]
