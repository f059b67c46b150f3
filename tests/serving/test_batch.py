"""Batch scoring (`journey score`): real models on the shared trained workspace, every destination."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from core.settings import Settings
from core.time import to_utc
from serving.batch import BatchError, parse_destination, score_run
from serving.drift import ALERT, WARN, DriftMonitor, psi, status
from support import IN_CI, REPO, need_service

runner = CliRunner()


def feature_table(home: Path) -> Path:
    return sorted((home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]


def table_cutoff(home: Path) -> pd.Timestamp:
    return to_utc(pd.read_parquet(feature_table(home), columns=["event_timestamp"])["event_timestamp"].iloc[0])


@pytest.fixture(autouse=True)
def _no_exported_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: start each test without it, leave none behind."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def settings_for(home: Path, **kwargs: object) -> Settings:
    """The workspace's own registry, whatever MLFLOW_TRACKING_URI says."""
    kwargs.setdefault("mlflow_tracking_uri", f"sqlite:///{home.resolve() / 'mlflow.db'}")
    return Settings(home=home, **kwargs)  # type: ignore[arg-type]


def run(home: Path, out: Path | str, **kwargs: object) -> dict:
    cutoff = kwargs.pop("cutoff", None) or table_cutoff(home)
    return score_run(settings_for(home), cutoff, parse_destination(str(out)), show_progress=False, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ drift (pure)
def test_psi_is_zero_for_the_same_population_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 5000)
    monitor = DriftMonitor.fit(pd.DataFrame({"x": base, "c": rng.choice(["a", "b"], 5000)}), {"s": base})
    monitor.update(pd.DataFrame({"x": base, "c": rng.choice(["a", "b"], 5000)}), {"s": base})
    same = monitor.report()
    assert same["features"]["x"] == pytest.approx(0.0, abs=1e-9) and same["scores"]["s"] == pytest.approx(0.0, abs=1e-9)
    assert same["features"]["c"] < WARN and not same["warn"] and not same["alert"]

    shifted = DriftMonitor.fit(pd.DataFrame({"x": base}), {"s": base})
    gone = np.where(rng.random(5000) < 0.3, np.nan, base)  # 30% of the values go missing
    shifted.update(pd.DataFrame({"x": base + 1.0}), {"s": gone})
    report = shifted.report()
    assert report["features"]["x"] > ALERT and report["alert"] == ["feature:x", "score:s"]
    expected = (0.6 - 0.5) * np.log(1.2) + (0.4 - 0.5) * np.log(0.8)
    assert psi(np.array([50, 50]), np.array([60, 40])) == pytest.approx(expected)
    assert status(0.05) == "ok" and status(0.1) == "warn" and status(0.3) == "alert"


def test_categorical_drift_counts_other_and_missing() -> None:
    base = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    monitor = DriftMonitor.fit(base, {})
    monitor.update(pd.DataFrame({"c": ["a"] * 20 + ["z"] * 40 + [None] * 40}), {})
    col = monitor.features["c"]
    assert col.expected.tolist() == [50, 50, 0, 0] and col.actual.tolist() == [20, 0, 40, 40]
    small = monitor.report()
    assert small["features"]["c"] > ALERT and not small["judged"] and small["alert"] == [], "100 rows: not judged"
    for _ in range(5):
        monitor.update(pd.DataFrame({"c": ["a"] * 20 + ["z"] * 40 + [None] * 40}), {})
    assert monitor.report()["judged"] and monitor.report()["alert"] == ["feature:c"]


# ------------------------------------------------------------------------------ destinations (pure)
def test_destinations_are_parsed_and_bad_ones_refused(tmp_path: Path) -> None:
    assert parse_destination(str(tmp_path / "s.parquet")).kind == "parquet"
    assert parse_destination(str(tmp_path / "s.CSV")).kind == "csv"
    pg = parse_destination("postgresql://postgres:secret@127.0.0.1:5432/test?table=public.scores&sslmode=disable")
    assert (pg.kind, pg.table) == ("postgres", "public.scores")
    assert "secret" not in pg.label and pg.dsn is not None and "sslmode=disable" in pg.dsn and "table=" not in pg.dsn
    bad_ones = ("s.json", "s3://bucket/s.parquet", "postgresql://h/db", "postgresql://h/db?table=a;drop", str(tmp_path))
    for bad in bad_ones:
        with pytest.raises(BatchError):
            parse_destination(bad)


# ------------------------------------------------------------------------------ scoring runs
def test_every_eligible_customer_scored_idempotently(
    trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pd.read_parquet(feature_table(trained_home))
    monkeypatch.setenv("JOURNEY_BATCH_WORKERS", "3")  # chunks in parallel threads
    first = run(trained_home, tmp_path / "a" / "scores.parquet", reasons=False, chunk_rows=700)
    monkeypatch.setenv("JOURNEY_BATCH_WORKERS", "1")  # in sequence
    again = run(trained_home, tmp_path / "b" / "scores.parquet", reasons=False, chunk_rows=700)
    assert len(table) > 3 * 700, "enough chunks for the parallel run to have several in flight"
    assert first["rows"] == again["rows"] == len(table) == table["customer_id"].nunique()
    assert first["run_id"] == again["run_id"]
    a, b = (tmp_path / "a" / "scores.parquet").read_bytes(), (tmp_path / "b" / "scores.parquet").read_bytes()
    assert a == b, "the same inputs must give byte-identical Parquet, in parallel or in sequence"

    rows = pd.read_parquet(tmp_path / "a" / "scores.parquet")
    assert rows["customer_id"].tolist() == table["customer_id"].tolist()
    assert (rows["run_id"] == first["run_id"]).all() and (rows["cutoff"] == table_cutoff(trained_home)).all()
    for col in ("churn_probability", "next_purchase_probability_7d", "next_purchase_probability_90d"):
        assert rows[col].between(0, 1).all(), col
    assert (rows["next_purchase_probability_7d"] <= rows["next_purchase_probability_90d"] + 1e-9).all()
    assert rows["churn_percentile"].between(0, 100).all() and rows["stage"].notna().all()
    assert rows["churn_model_version"].unique().tolist() == [first["versions"]["churn"]]
    actions = rows["actions"].map(json.loads)
    assert actions.map(len).between(1, 3).all() and (actions.map(lambda a: a[0]["action"]) == rows["top_action"]).all()
    assert rows["reasons"].isna().all()
    assert sum(first["top_actions"].values()) == len(table)
    # Drift is judged against the population the champion was tested on, built from the events.
    baseline = first["drift"]["baseline"]
    assert baseline["table"] != str(feature_table(trained_home)) and "test cutoff" in baseline["why"]
    assert Path(baseline["table"]).exists() and pd.Timestamp(baseline["cutoff"]) < table_cutoff(trained_home)
    assert set(first["drift"]["scores"]) == {"churn", "next_purchase"}

    import mlflow

    client = mlflow.MlflowClient(settings_for(trained_home).tracking_uri)
    exp = client.get_experiment_by_name("journeyml-scoring")
    logged = client.get_run(first["mlflow_run_id"])
    assert logged.info.experiment_id == exp.experiment_id
    assert logged.data.metrics["rows"] == len(table) and "churn_probability_p50" in logged.data.metrics
    assert logged.data.tags["scoring_run_id"] == first["run_id"]


def test_listed_customers_csv_with_reasons_match_the_api_function(trained_home: Path, tmp_path: Path) -> None:
    from models.scorer import Scorer
    from serving.batch import load_context
    from serving.scoring import score_table

    table = pd.read_parquet(feature_table(trained_home)).rename(columns={"event_timestamp": "cutoff"})
    known = table["customer_id"].iloc[[5, 50, 500]].tolist()
    ids = tmp_path / "ids.csv"
    ids.write_text("customer_id\n" + "\n".join([known[2], known[0], "nobody-at-all", known[1], known[0]]) + "\n")
    summary = run(trained_home, tmp_path / "s.csv", customers_file=ids)
    assert summary["rows"] == 4 and summary["customers_listed"] == 4 and summary["cold_start"] >= 1
    rows = pd.read_csv(tmp_path / "s.csv", dtype={"customer_id": str}).set_index("customer_id")
    assert sorted(rows.index) == sorted([*known, "nobody-at-all"])
    assert bool(rows.loc["nobody-at-all", "cold_start"]) and pd.isna(rows.loc["nobody-at-all", "stage"])
    reasons = json.loads(rows.loc[known[0], "reasons"])
    assert set(reasons) == {"churn", "next_purchase"} and all(r["text"] for r in reasons["churn"])

    # The same customer through score_table directly (the API's function): the same numbers.
    ctx, _ = load_context(settings_for(trained_home), table_cutoff(trained_home))
    direct = score_table(table[table["customer_id"].isin(known)], Scorer(ctx.models), ctx.policy, ctx.reference)
    direct = direct.set_index("customer_id")
    for cid in known:
        assert rows.loc[cid, "churn_probability"] == pytest.approx(direct.loc[cid, "churn_probability"], abs=1e-12)
        assert rows.loc[cid, "churn_percentile"] == pytest.approx(direct.loc[cid, "churn_percentile"])
        assert rows.loc[cid, "top_action"] == direct.loc[cid, "actions"][0]["action"]
        texts = [r["text"] for r in json.loads(rows.loc[cid, "reasons"])["churn"]]
        assert texts == [r["text"] for r in direct.loc[cid, "churn_reasons"]]


def test_batch_actions_from_the_long_decision_equal_the_api_dicts(trained_home: Path) -> None:
    """Batch formats `decide_columnar`'s long frame directly; the API gets `decide`'s dicts. Same text."""
    from serving.batch import format_rows, load_context
    from serving.scoring import score_columns

    table = pd.read_parquet(feature_table(trained_home)).rename(columns={"event_timestamp": "cutoff"})
    frame = pd.concat([table.head(300), table.head(20).assign(customer_id=[f"new-{i}" for i in range(20)])])
    frame.loc[frame.index[-20:], [c for c in table.columns if table[c].dtype.kind == "f"]] = np.nan
    ctx, _ = load_context(settings_for(trained_home), table_cutoff(trained_home))
    ctx.run_id, ctx.reasons = "test", True
    assert ctx.policy is not None
    kwargs = {"explain": True, "actions": True}
    long = format_rows(score_columns(frame, ctx.scorer, ctx.policy, ctx.reference, **kwargs, action_rows=True), ctx)
    dicts = format_rows(score_columns(frame, ctx.scorer, ctx.policy, ctx.reference, **kwargs), ctx)
    pd.testing.assert_frame_equal(long, dicts)
    assert long["actions"].str.startswith('[{"action":').all() and long["top_action"].notna().all()


def test_features_computed_when_no_table_and_drift_names_the_features(trained_home: Path, tmp_path: Path) -> None:
    import duckdb

    cutoff = table_cutoff(trained_home) - pd.Timedelta(days=120)
    summary = run(trained_home, tmp_path / "early.parquet", cutoff=cutoff, reasons=False, chunk_rows=700)
    glob = str(trained_home / "events" / "event_date=*" / "*.parquet")
    eligible = (
        duckdb.connect()
        .execute(
            f"SELECT count(DISTINCT customer_id) FROM read_parquet('{glob}', hive_partitioning=false) "
            f"WHERE event_time <= TIMESTAMPTZ '{cutoff.strftime('%Y-%m-%d %H:%M:%S')}+00'"
        )
        .fetchall()[0][0]
    )
    assert summary["features"] == "computed from the event store" and summary["rows"] == eligible
    rows = pq.read_table(tmp_path / "early.parquet").to_pandas()
    assert rows["customer_id"].is_unique and len(rows) == eligible
    tables = sorted((trained_home / "features" / "customer_journey").glob("as_of=*.parquet"))
    assert tables == [feature_table(trained_home)], "scoring does not write feature tables"
    # Scored 120 days before the baseline table: customers are younger, which drift must name.
    drifting = summary["drift"]["alert"] + summary["drift"]["warn"]
    assert "feature:tenure_days" in drifting


def test_command_errors_are_clear(trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cli import _register, app

    _register()
    monkeypatch.setenv("JOURNEY_HOME", str(trained_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cases = [
        (["--as-of", "not-a-date", "--out", str(tmp_path / "x.parquet")], "not a timestamp"),
        (["--as-of", "2024-12-31", "--out", str(tmp_path / "x.json")], ".parquet or .csv"),
        (["--as-of", "2024-12-31", "--out", "postgresql://postgres@127.0.0.1:1/test?table=s"], "cannot connect"),
        (["--as-of", "2024-12-31", "--out", str(tmp_path / "x.parquet"), "--engine", "dask"], "--engine"),
        (["--as-of", "2024-12-31", "--out", str(tmp_path / "x.parquet"), "--customers", str(tmp_path / "no.csv")],
         "no file"),
    ]  # fmt: skip
    for args, words in cases:
        result = runner.invoke(app, ["score", *args, "--json"])
        assert result.exit_code == 1, result.output
        body = json.loads(result.stdout.strip().splitlines()[-1])
        assert body["ok"] is False and words in body["error"], body
        assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*x*")), "a refused run writes nothing"

    empty = tmp_path / "empty"
    monkeypatch.setenv("JOURNEY_HOME", str(empty))
    result = runner.invoke(app, ["score", "--as-of", "2024-12-31", "--out", str(tmp_path / "y.parquet"), "--json"])
    assert result.exit_code == 1 and "no champion" in json.loads(result.stdout.strip().splitlines()[-1])["error"]


@pytest.mark.slow
def test_a_killed_run_leaves_no_partial_file(trained_home: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "scores.parquet"
    env = {**os.environ, "JOURNEY_HOME": str(trained_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cutoff = table_cutoff(trained_home).isoformat()
    args = [sys.executable, "-m", "core", "score", "--as-of", cutoff, "--out", str(dest), "--chunk-rows", "100"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = dest.parent / f".{dest.name}.partial-{proc.pid}"
    deadline = time.monotonic() + 120
    try:
        # Killed once some row groups are in the partial file: mid-run, nothing committed.
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and partial.stat().st_size > 20_000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert partial.exists(), "the partial file stays beside the destination, hidden"
    assert not dest.exists(), "a killed run must not leave a destination file"

    summary = run(trained_home, dest, reasons=False)
    eligible = len(pd.read_parquet(feature_table(trained_home), columns=["customer_id"]))
    assert summary["rows"] == pq.ParquetFile(dest).metadata.num_rows == eligible
    assert not partial.exists(), "the next run removes the dead run's partial file"
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


@pytest.mark.integration
def test_postgres_destination_one_transaction(trained_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg2

    import serving.batch as batch

    name = f"journey_scores_{os.getpid()}"
    url = f"postgresql://postgres@127.0.0.1:5432/test?table={name}"
    conn = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/test")
    conn.autocommit = True
    try:
        first = run(trained_home, url, reasons=False)
        again = run(trained_home, url, reasons=False)
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT customer_id), count(DISTINCT run_id), min(run_id) "
                        f"FROM {name}")  # fmt: skip
            assert cur.fetchone() == (first["rows"], first["rows"], 1, first["run_id"]), "a re-run replaces its rows"
            assert again["run_id"] == first["run_id"]
            cur.execute(f"SELECT churn_probability, actions, cutoff FROM {name} ORDER BY customer_id LIMIT 1")
            prob, actions, cutoff = cur.fetchone()
            assert 0 <= prob <= 1 and json.loads(actions) and cutoff == table_cutoff(trained_home)

        calls = {"n": 0}
        original = batch.score_chunk

        def failing(features: pd.DataFrame, ctx: batch.ScoringContext) -> pd.DataFrame:
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("the machine caught fire")
            return original(features, ctx)

        monkeypatch.setattr(batch, "score_chunk", failing)
        table = pd.read_parquet(feature_table(trained_home))
        subset = Path(os.environ.get("TMPDIR", "/tmp")) / f"ids-{os.getpid()}.txt"
        subset.write_text("\n".join(table["customer_id"].iloc[:1500]))
        with pytest.raises(RuntimeError, match="caught fire"):
            run(trained_home, url, reasons=False, chunk_rows=500, customers_file=subset)
        subset.unlink()
        assert calls["n"] == 3
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT run_id) FROM {name}")
            assert cur.fetchone() == (first["rows"], 1), "a failed run leaves none of its rows"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


@pytest.fixture(scope="module")
def spark() -> object:
    try:
        from features.journeys.spark_engine import local_spark

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        session = local_spark("journeyml-score-tests")
        session.range(1).count()
    except Exception as exc:  # noqa: BLE001 - no Java, no pyspark
        if IN_CI:
            pytest.fail(f"pyspark cannot start in CI: {exc}")
        pytest.skip(f"pyspark cannot start here: {type(exc).__name__}: {str(exc)[:200]}")
    return session


@pytest.mark.slow
@pytest.mark.integration
def test_spark_engine_equals_the_local_engine(trained_home: Path, tmp_path: Path, spark: object) -> None:
    local = run(trained_home, tmp_path / "local.parquet", reasons=False)
    remote = run(trained_home, tmp_path / "spark.parquet", reasons=False, engine="spark", spark=spark)
    assert remote["engine"] == "spark" and remote["rows"] == local["rows"] and remote["run_id"] == local["run_id"]
    a = pd.read_parquet(tmp_path / "local.parquet")
    b = pd.read_parquet(tmp_path / "spark.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "local.parquet").read_bytes() == (tmp_path / "spark.parquet").read_bytes()
    assert not list((trained_home / "scores" / ".staging").glob("run-*")), "the staging folder is cleaned"
