"""Property-based fuzz of the API from its own OpenAPI schema (schemathesis 4, in-process ASGI).

Valid and invalid requests (positive and negative generation) to every operation, with a valid
API key and without one: never a 5xx, never a traceback or an internal path in a response, and
no protected endpoint answers 2xx without the key. Examples are bounded so this stays ~1 minute.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contract import CHANNELS, EVENT_TYPE_LIST
from core.settings import Settings
from serving.app import create_app
from serving_support import API_KEY
from support import REPO

H = {"X-API-Key": API_KEY}
EXAMPLES = 15  # per operation and generation mode; ~10 operations x 2 modes x 2 key states
PUBLIC = {"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"}
LEAKS = [
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File "[^"]+", line \d+'),
    re.compile(r"site-packages"),
    re.compile(re.escape(str(REPO))),
    re.compile(r"/(tmp|home|root|usr)/[\w.-]+/"),
]


@pytest.fixture(scope="module")
def fuzz_home(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy: fuzzed POST /v1/events appends events, which must not leak into other tests."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(trained_home, home)
    return home


@pytest.fixture(scope="module")
def api_schema(fuzz_home: Path) -> schemathesis.BaseSchema:
    app = create_app(Settings(home=fuzz_home, api_keys=API_KEY, max_body_bytes=200_000, reload_interval_s=3600))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


def assert_safe(case: schemathesis.Case, response: schemathesis.Response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    for pattern in LEAKS:
        assert not pattern.search(response.text), f"{where} leaks {pattern.pattern!r}: {response.text[:500]}"
    if response.status_code >= 400 and response.headers.get("content-type", [""])[0].startswith("application/json"):
        error = response.json().get("error")
        assert isinstance(error, dict) and error.get("code") and error.get("message"), f"{where}: {response.text}"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_with_a_valid_key(case: schemathesis.Case) -> None:
    response = case.call(headers=H)
    assert_safe(case, response)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_without_a_key(case: schemathesis.Case) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
    case.headers = headers
    response = case.call()
    assert_safe(case, response)
    if case.operation.path not in PUBLIC:
        assert response.status_code >= 400, f"{case.method} {case.formatted_path} answered without a key"


# ---- deeper than the schema reaches: events in the contract's vocabulary -----------------------
# Schema-generated events almost never use a known event type, so they stop at validation (422).
# These reach appending, the online refresh and inline scoring.
def _events(customers: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict]]:
    utc = st.just(timezone.utc)
    stamp = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=utc)
    event = st.fixed_dictionaries(
        {
            "customer_id": customers,
            "event_time": stamp.map(lambda t: t.isoformat()),
            "event_type": st.sampled_from(EVENT_TYPE_LIST) | st.text(max_size=12),
        },
        optional={
            "event_id": st.text(min_size=1, max_size=24),
            "channel": st.sampled_from(CHANNELS) | st.text(max_size=8),
            "session_id": st.none() | st.text(max_size=16),
            "value": st.none() | st.floats(-1e12, 1e12, allow_nan=False),
            "properties": st.none()
            | st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6) | st.booleans(), max_size=3),
        },
    )
    return st.lists(event, min_size=1, max_size=20)


@pytest.fixture(scope="module")
def client(fuzz_home: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=fuzz_home, api_keys=API_KEY, max_body_bytes=200_000, reload_interval_s=3600))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


ID = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(events=_events(st.sampled_from(["fuzz-a", "fuzz-b", " fuzz-c "]) | ID), partial=st.booleans())
def test_fuzzed_events_are_applied_or_rejected_per_item(client: TestClient, events: list[dict], partial: bool) -> None:
    r = client.post("/v1/events", json={"events": events, "partial": partial}, headers=H)
    assert r.status_code in (200, 422), r.text[:500]
    body = r.json()
    for pattern in LEAKS:
        assert not pattern.search(r.text), r.text[:500]
    if r.status_code == 200:
        assert body["accepted"] + body["duplicates"] + body["rejected"] == len(events), body
        assert partial or body["rejected"] == 0
        assert [e["index"] for e in body["errors"]] == sorted(e["index"] for e in body["errors"])
    else:
        assert body["error"]["code"] in ("invalid_events", "invalid_request"), body


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(events=_events(st.just("inline-fuzz")), explain=st.booleans())
def test_fuzzed_inline_scoring_answers_or_rejects(client: TestClient, events: list[dict], explain: bool) -> None:
    body = {"customer_id": "inline-fuzz", "events": events, "explain": explain}
    r = client.post("/v1/score/inline", json=body, headers=H)
    assert r.status_code in (200, 422), r.text[:500]
    for pattern in LEAKS:
        assert not pattern.search(r.text), r.text[:500]
    if r.status_code == 200:
        (result,) = r.json()["results"]
        assert result["customer_id"] == "inline-fuzz"
        for task, score in result["scores"].items():
            if task in ("churn", "conversion") and score["score"] is not None:
                assert 0.0 <= score["score"] <= 1.0
