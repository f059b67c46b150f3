"""The scoring API end to end with TestClient: real models, real feature store, real event store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from serving.app import create_app
from serving_support import API_KEY

H = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def client(trained_home: Path) -> Iterator[TestClient]:
    settings = Settings(home=trained_home, api_keys=API_KEY, max_body_bytes=200_000, reload_interval_s=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def known_customer(home: Path) -> str:
    f = sorted((home / "features" / "customer_journey").glob("*.parquet"))[-1]
    frame = pd.read_parquet(f, columns=["customer_id", "orders_lifetime"])
    return str(frame.sort_values("orders_lifetime").iloc[-1]["customer_id"])


def test_health_and_auth(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"]["churn"]
    assert client.post("/v1/score", json={"customer_ids": ["x"]}).status_code == 401
    bad = client.post("/v1/score", json={"customer_ids": ["x"]}, headers={"X-API-Key": "wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"


def test_score_known_and_unknown_customers(client: TestClient, trained_home: Path) -> None:
    cid = known_customer(trained_home)
    r = client.post("/v1/score", json={"customer_ids": [cid, "nobody-at-all"], "explain": True}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    known, unknown = body["results"]
    churn = known["scores"]["churn"]
    assert 0.0 <= churn["score"] <= 1.0 and 0.0 <= churn["percentile"] <= 100.0
    assert churn["model_version"] == body["model_versions"]["churn"]
    assert known["scores"]["churn"]["reasons"], "explain=true gives reasons"
    assert all(isinstance(x["text"], str) and x["text"] for x in churn["reasons"])
    nxt = known["scores"]["next_purchase"]
    assert set(nxt["horizons"]) >= {"7d", "30d", "90d"}
    assert nxt["horizons"]["7d"] <= nxt["horizons"]["30d"] + 1e-9 <= nxt["horizons"]["90d"] + 2e-9
    assert known["cold_start"] is False and known["feature_time"] is not None
    assert known["actions"] and known["actions"][0]["reason"]
    assert unknown["cold_start"] is True and unknown["feature_time"] is None
    one = client.get(f"/v1/customers/{cid}/score", headers=H)
    assert one.status_code == 200 and one.json()["results"][0]["customer_id"] == cid


def test_invalid_requests_get_a_stable_json_error(client: TestClient) -> None:
    for body in (
        {},
        {"customer_ids": []},
        {"customer_ids": ["a"] * 1001},
        {"customer_ids": ["a"], "extra": 1},
        {"customer_ids": ["a"], "tasks": ["astrology"]},
    ):
        r = client.post("/v1/score", json=body, headers=H)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/score", content=b"{not json", headers={**H, "content-type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_body_limits_with_and_without_content_length(client: TestClient) -> None:
    big = {"customer_ids": ["c" * 200] * 1000}
    r = client.post("/v1/score", json=big, headers=H)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"customer_ids": ['
        for _ in range(3000):
            yield b'"' + b"x" * 100 + b'",'
        yield b'"y"]}'

    r = client.post("/v1/score", content=chunks(), headers={**H, "content-type": "application/json"})
    assert r.status_code == 413


def test_posted_events_are_stored_and_reflected_in_the_next_score(client: TestClient, trained_home: Path) -> None:
    cid = "brand-new-customer-1"
    now = pd.Timestamp.now(tz="UTC")
    events = [
        {
            "event_id": f"api-{i}",
            "customer_id": cid,
            "event_time": (now - pd.Timedelta(minutes=10 - i)).isoformat(),
            "event_type": t,
            "channel": "web",
            "value": v,
        }
        for i, (t, v) in enumerate(
            [("session_start", None), ("product_view", 30.0), ("add_to_cart", None), ("purchase", 42.5)]
        )
    ]
    before = client.post("/v1/score", json={"customer_ids": [cid]}, headers=H).json()["results"][0]
    assert before["cold_start"] is True
    r = client.post("/v1/events", json={"events": events}, headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 4 and r.json()["customers_refreshed"] == 1
    after = client.post("/v1/score", json={"customer_ids": [cid], "explain": True}, headers=H).json()["results"][0]
    assert after["feature_time"] is not None and after["cold_start"] is False
    assert after["stage"] is not None
    again = client.post("/v1/events", json={"events": events}, headers=H).json()
    assert again["accepted"] == 0 and again["duplicates"] == 4
    stored = pd.read_parquet(next((trained_home / "events").glob("event_date=*")).parent, columns=["event_id"])
    assert (stored["event_id"].str.startswith("api-")).sum() == 4


def test_invalid_events_apply_nothing_unless_partial(client: TestClient) -> None:
    now = pd.Timestamp.now(tz="UTC").isoformat()
    events = [
        {"event_id": "p-ok", "customer_id": "partial-1", "event_time": now, "event_type": "login"},
        {"event_id": "p-bad", "customer_id": "partial-1", "event_time": now, "event_type": "teleport"},
        {"event_id": "p-neg", "customer_id": "partial-1", "event_time": now, "event_type": "purchase", "value": -1},
    ]
    r = client.post("/v1/events", json={"events": events}, headers=H)
    assert r.status_code == 422
    assert [d["index"] for d in r.json()["error"]["details"]] == [1, 2]
    assert {d["reason"] for d in r.json()["error"]["details"]} == {"unknown_event_type", "negative_amount"}
    ok = client.post("/v1/events", json={"events": events, "partial": True}, headers=H)
    assert ok.status_code == 200 and ok.json()["accepted"] == 1 and ok.json()["rejected"] == 2


def test_inline_scoring_uses_the_same_definitions(client: TestClient) -> None:
    t0 = pd.Timestamp("2024-06-01T10:00:00Z")
    events = [
        {
            "customer_id": "inline-1",
            "event_time": (t0 + pd.Timedelta(minutes=i)).isoformat(),
            "event_type": t,
            "value": v,
        }
        for i, (t, v) in enumerate([("session_start", None), ("add_to_cart", None), ("purchase", 80.0)])
    ]
    r = client.post("/v1/score/inline", json={"customer_id": "inline-1", "events": events}, headers=H)
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["customer_id"] == "inline-1" and 0 <= res["scores"]["churn"]["score"] <= 1
    other = dict(events[0], customer_id="someone-else")
    bad = client.post("/v1/score/inline", json={"customer_id": "inline-1", "events": [other]}, headers=H)
    assert bad.status_code == 422


def test_metrics_and_open_inference(client: TestClient, trained_home: Path) -> None:
    m = client.get("/metrics", headers=H)
    assert m.status_code == 200 and "journeyml_requests_total" in m.text and "journeyml_model_version" in m.text
    cid = known_customer(trained_home)
    r = client.post(
        "/v2/models/churn/infer",
        json={"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": [cid]}]},
        headers=H,
    )
    assert r.status_code == 200 and 0 <= r.json()["outputs"][0]["data"][0] <= 1
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/score" in spec["paths"] and "/v1/events" in spec["paths"]
