"""A real uvicorn on 127.0.0.1: durability after kill -9, Redis outages, hot reload under load."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.events.store import EventStore
from serving_support import API_KEY
from support import REPO, need_service

H = {"X-API-Key": API_KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(home: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    full = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": API_KEY, **env}
    full.pop("MLFLOW_TRACKING_URI", None)
    # The log goes to a file: a pipe nobody reads fills up under load (a JSON line per request)
    # and then blocks the server.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--port", str(port)],
        env=full,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"server exited: {log.read().decode(errors='replace')[-3000:]}")
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("server not ready in 120 s")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.mark.slow
def test_acknowledged_events_survive_kill_9(trained_home: Path) -> None:
    now = pd.Timestamp.now(tz="UTC")
    events = [
        {
            "event_id": f"durable-{i}",
            "customer_id": f"durable-{i % 3}",
            "event_time": now.isoformat(),
            "event_type": "page_view",
            "value": 5.0,
        }
        for i in range(30)
    ]
    with server(trained_home) as (url, proc):
        r = httpx.post(url + "/v1/events", json={"events": events}, headers=H, timeout=60)
        assert r.status_code == 200 and r.json()["accepted"] == 30
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = EventStore(trained_home / "events")
    store.recover()
    ids = set(store.read(["event_id"]).column(0).to_pylist())
    assert {f"durable-{i}" for i in range(30)} <= ids


@pytest.mark.slow
@pytest.mark.integration
def test_real_redis_and_recovery_after_an_outage(trained_home: Path, tmp_path: Path) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server binary not found") if not os.environ.get("CI") else pytest.fail("no redis-server")
    port = free_port()
    cmd = [
        redis_server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    private = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    env = {"JOURNEY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "JOURNEY_FEAST_PROJECT": f"redis_{port}"}
    home = tmp_path / "home"
    shutil.copytree(trained_home, home, ignore=shutil.ignore_patterns("online.db"))
    (home / "feast" / "materialized.json").unlink(missing_ok=True)
    (home / "feast" / "applied.json").unlink(missing_ok=True)
    try:
        full = {**os.environ, "JOURNEY_HOME": str(home), **env}
        out = subprocess.run(
            [sys.executable, "-m", "core", "features", "materialize", "--json"],
            env=full,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        feats = sorted((home / "features" / "customer_journey").glob("*.parquet"))[-1]
        cid = str(pd.read_parquet(feats, columns=["customer_id"]).iloc[0, 0])
        with server(home, **env) as (url, _):
            ok = httpx.post(url + "/v1/score", json={"customer_ids": [cid]}, headers=H, timeout=30).json()
            assert ok["degraded"] is False and ok["results"][0]["cold_start"] is False
            private.kill()
            private.wait()
            down = httpx.post(url + "/v1/score", json={"customer_ids": [cid]}, headers=H, timeout=30)
            assert down.status_code == 200 and down.json()["degraded"] is True
            private = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            back = httpx.post(url + "/v1/score", json={"customer_ids": [cid]}, headers=H, timeout=30)
            assert back.status_code == 200 and back.json()["degraded"] is False
    finally:
        private.kill()


@pytest.mark.slow
def test_hot_reload_under_load_fails_no_request(trained_home: Path) -> None:
    from training.registry import client, registered_name, set_alias

    uri = f"sqlite:///{trained_home.resolve() / 'mlflow.db'}"
    cl = client(uri)
    name = registered_name("churn")
    current = cl.get_model_version_by_alias(name, "champion")
    clone = cl.create_model_version(name, current.source, run_id=current.run_id)
    feats = sorted((trained_home / "features" / "customer_journey").glob("*.parquet"))[-1]
    ids = pd.read_parquet(feats, columns=["customer_id"])["customer_id"].head(50).tolist()
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()
    with server(trained_home, JOURNEY_RELOAD_INTERVAL_S="0.5") as (url, _):

        def hammer() -> None:
            with httpx.Client(timeout=30) as http:
                i = 0
                while not stop.is_set():
                    r = http.post(url + "/v1/score", json={"customer_ids": [ids[i % len(ids)]]}, headers=H)
                    i += 1
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        versions.add(r.json()["model_versions"]["churn"])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        set_alias(cl, name, "champion", clone.version)
        deadline = time.monotonic() + 60
        while str(clone.version) not in versions and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        set_alias(cl, name, "champion", current.version)
    assert not failures, failures[:5]
    assert {str(current.version), str(clone.version)} <= versions
