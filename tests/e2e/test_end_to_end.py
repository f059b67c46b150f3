"""The whole story in one fresh workspace, as a user runs it: events, features, training, a real
uvicorn on 127.0.0.1, live events, a score that reflects them, batch scoring and the report."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving_support import API_KEY, journey
from support import REPO

H = {"X-API-Key": API_KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_events_to_features_to_models_to_api_to_batch_to_report(tmp_path: Path) -> None:
    home = tmp_path / "home"

    # 1. Events: a simulated business, ingested with every row accounted for.
    # The simulated year ends today, like a live business: the server ages features to the present.
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=365)).strftime("%Y-%m-%d")
    args = ("--customers", "3000", "--days", "365", "--seed", "11", "--start", start)
    sim = journey(home, "simulate", *args, "--out", str(home / "sim"))
    assert sim["customers"] == 3000 and sim["events"] > 50_000
    ing = journey(
        home, "ingest", str(home / "sim" / "events.parquet"), "--customers", str(home / "sim" / "customers.parquet")
    )
    assert ing["balanced"] is True and ing["accepted"] + ing["duplicates"] + ing["quarantined"] == sim["events"]
    end = sim["end"][:10]

    # 2. Features, offline and online.
    built = journey(home, "features", "build", "--as-of", end)
    assert built["features"] >= 100 and sum(built["customers"].values()) == 3000
    mat = journey(home, "features", "materialize")
    assert mat["rows"] == 3000

    # 3. Training: a model that beats chance, registered, champion alias set.
    trained = journey(home, "train", "--task", "churn")
    task = trained["tasks"][0]
    assert task["task"] == "churn" and task["metrics"]["auc"] > 0.7, task
    if not task["promoted"]:  # a small population may miss the calibration gate; the API needs a champion
        from training.registry import client, registered_name, set_alias

        set_alias(
            client(f"sqlite:///{home.resolve() / 'mlflow.db'}"), registered_name("churn"), "champion", task["version"]
        )
    listed = journey(home, "models", "list")
    assert any(
        m["task"] == "churn" and (m["champion"] or {}).get("version") == task["version"] for m in listed["models"]
    ), listed

    # 4. A real server: score, post live events, score again.
    features = pd.read_parquet(next((home / "features" / "customer_journey").glob("*.parquet")))
    lapsed = features.loc[features["orders_lifetime"] > 0].sort_values("days_since_last_purchase").iloc[-1]
    cid = str(lapsed["customer_id"])
    port = _free_port()
    env = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": API_KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()[-3000:]
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("the server was not ready within 120 s")
        assert httpx.post(url + "/v1/score", json={"customer_ids": [cid]}, timeout=30).status_code == 401

        before = httpx.post(url + "/v1/score", json={"customer_ids": [cid], "explain": True}, headers=H, timeout=30)
        assert before.status_code == 200, before.text
        b = before.json()["results"][0]
        assert b["cold_start"] is False and b["scores"]["churn"]["reasons"]
        assert b["scores"]["churn"]["model_version"] == task["version"]

        now = pd.Timestamp.now(tz="UTC").floor("s")
        steps = [("session_start", None), ("product_view", 40.0), ("add_to_cart", None), ("purchase", 120.0)]
        events = [
            {
                "event_id": f"e2e-{i}",
                "customer_id": cid,
                "event_time": (now - pd.Timedelta(minutes=5 - i)).isoformat(),
                "event_type": kind,
                "channel": "web",
                "value": value,
            }
            for i, (kind, value) in enumerate(steps)
        ]
        posted = httpx.post(url + "/v1/events", json={"events": events}, headers=H, timeout=60)
        assert posted.status_code == 200 and posted.json()["accepted"] == 4, posted.text
        after = httpx.post(url + "/v1/score", json={"customer_ids": [cid], "explain": True}, headers=H, timeout=30)
        a = after.json()["results"][0]
        assert pd.Timestamp(a["feature_time"]) >= now - pd.Timedelta(minutes=5), (b["feature_time"], a["feature_time"])
        assert a["scores"]["churn"]["score"] < b["scores"]["churn"]["score"], "a purchase just now lowers churn risk"
        again = httpx.post(url + "/v1/events", json={"events": events}, headers=H, timeout=60).json()
        assert again["accepted"] == 0 and again["duplicates"] == 4
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()

    # 5. Batch scoring: everyone, through the same scoring function, with actions and reasons.
    out = home / "scores.parquet"
    scored = journey(home, "score", "--as-of", end, "--out", str(out))
    rows = pd.read_parquet(out)
    assert scored["rows"] == len(rows) == rows["customer_id"].nunique() == 3000
    assert rows["churn_probability"].between(0, 1).all() and rows["churn_probability"].std() > 0.01
    assert rows["stage"].notna().all() and rows["churn_model_version"].eq(task["version"]).all()
    assert cid in set(rows["customer_id"])

    # 6. The journey report: one offline HTML file with plots and findings from these events.
    report = journey(home, "report", "--as-of", end, "--out", str(home / "report.html"))
    html = (home / "report.html").read_text()
    assert len(report["plots"]) >= 6 and html.count("<svg") >= len(report["plots"])
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the report loads nothing from the network"
    assert report["findings"]["cart_abandonment"]
