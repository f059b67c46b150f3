"""Reliability suite: crashes, outages and sustained load, each judged against an expected outcome.

    python benchmarks/reliability.py [--home TRAINED_HOME] [--requests 20000] [--concurrency 32]
                                     [--kills 3] [--work DIR] [--only NAME ...]

Scenarios (each prints one row: scenario, expected, observed, pass/fail):

- kill -9 during ingestion, during materialization and during batch scoring, at several points of
  each stage's write phase, then a rerun: the final state must equal an uninterrupted run (same row
  counts, same content hashes: nothing lost, nothing duplicated).
- Redis (a private redis-server on a free port) killed in the middle of a load test: no 5xx,
  degraded responses while it is down, full answers again once it is back.
- The same Redis frozen (SIGSTOP: it accepts connections and never answers): no 5xx, degraded
  answers within about the 1 s socket timeout, /health/live still answering fast (the event
  loop never waits on Redis), full answers once it is thawed.
- The registry unreachable at start (an unreachable PostgreSQL; a sqlite file in a missing folder):
  the last-known-good champions come from the bundle cache and /health/ready says so.
- N requests (default 20,000) at concurrency 32 against a real uvicorn: zero errors, p50/p99.

Without --home it builds a trained workspace first (simulate 3,000 customers, ingest, features,
materialize, train churn and next_purchase, force champions). The tests in tests/reliability/ call
the same functions with smaller sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API_KEY = "reliability-key"
HEADERS = {"X-API-Key": API_KEY}


@dataclass
class Outcome:
    scenario: str
    expected: str
    observed: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


# ---- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def journey_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": API_KEY, **extra}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def journey_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "core", *args]


def journey(home: Path, *args: str, **env: str) -> dict[str, Any]:
    """Run one command to completion; its --json summary."""
    out = subprocess.run(
        journey_cmd(*args, "--json"), env=journey_env(home, **env), cwd=REPO, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"journey {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@contextmanager
def server(
    home: Path, timeout: float = 180, log_path: Path | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`journey serve` on a free port of 127.0.0.1, ready (or raising) before the body runs; its log in log_path."""
    import httpx

    port = free_port()
    log = open(log_path, "w+b") if log_path is not None else tempfile.TemporaryFile()
    proc = subprocess.Popen(
        journey_cmd("serve", "--port", str(port)),
        env=journey_env(home, **env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited {proc.returncode}: {log.read().decode()[-3000:]}")
            try:
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout:.0f} s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextmanager
def private_redis(folder: Path) -> Iterator[Callable[[str], None]]:
    """A redis-server of our own on a free port (never the machine's).
    Yields control(action): kill | start | pause (SIGSTOP: a hung server) | resume."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(folder), "--dbfilename", "dump.rdb"]
    state: dict[str, Any] = {"proc": None, "port": port}

    def start() -> None:
        import redis

        state["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("private redis-server did not start")

    def control(action: str) -> None:
        proc: subprocess.Popen | None = state["proc"]
        if action == "kill" and proc is not None:
            import redis

            redis.Redis(port=port, socket_timeout=5).save()  # so the restart finds the features again
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            state["proc"] = None
        elif action == "start":
            start()
        elif action == "pause" and proc is not None:  # hangs: accepts connections, never answers
            proc.send_signal(signal.SIGSTOP)
        elif action == "resume" and proc is not None:
            proc.send_signal(signal.SIGCONT)

    start()
    control.port = port  # type: ignore[attr-defined]
    try:
        yield control
    finally:
        if state["proc"] is not None:
            state["proc"].kill()
            state["proc"].wait()


def server_errors(log_path: Path) -> Counter[str]:
    """Error names the server logged as unhandled (each one was a 500 to a client)."""
    seen: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"unhandled"' in line:
            try:
                seen[str(json.loads(line).get("error"))] += 1
            except ValueError:
                continue
    return seen


# ---- state digests -----------------------------------------------------------------------------
def _frame_digest(frame: Any) -> str:
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def events_digest(home: Path) -> tuple[int, str]:
    """(rows, content hash) of the committed event store, after recovery (what any reader sees)."""
    from features.events.store import EventStore

    store = EventStore(home / "events")
    if not store.root.exists() or store.is_empty():
        return 0, "empty"
    with store.writer_lock():  # recovers: rolls committed batches forward, drops staged leftovers
        table = store.read()
    frame = table.sort_by([("event_id", "ascending")]).to_pandas()
    return len(frame), _frame_digest(frame)


def online_digest(home: Path) -> tuple[int, str]:
    """(rows, content hash) of the SQLite online store: every feature value and its timestamp."""
    path = home / "feast" / "online.db"
    if not path.exists():
        return 0, "empty"
    import pandas as pd

    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        parts = []
        for name in sorted(t for t in tables if t.endswith("customer_journey_vector")):
            frame = pd.read_sql_query(f'select * from "{name}"', con)
            frame = frame.drop(columns=[c for c in ("created_ts",) if c in frame.columns])
            parts.append(frame.sort_values(["entity_key", "feature_name"]))
    if not parts:
        return 0, "empty"
    frame = pd.concat(parts)
    return int(frame["entity_key"].nunique()), _frame_digest(frame)


def scores_digest(path: Path) -> tuple[int, str]:
    if not path.exists():
        return 0, "absent"
    import pandas as pd

    frame = pd.read_parquet(path).sort_values("customer_id")
    return len(frame), _frame_digest(frame)


# ---- kill -9 during a stage, then rerun --------------------------------------------------------
@dataclass
class Stage:
    name: str
    args: Callable[[Path], list[str]]  # the command for one workspace
    prepare: Callable[[Path], None]  # make a fresh workspace ready for this stage
    started: Callable[[Path], bool]  # the stage has begun writing
    digest: Callable[[Path], tuple[int, str]]
    env: dict[str, str] = field(default_factory=dict)
    done: Callable[[Path], bool] | None = None  # the result is in place (ends the write phase)
    leftovers: Callable[[Path], list[Path]] = lambda home: []  # temp files a finished run must not leave


def _run_until(stage: Stage, home: Path, kill_after: float | None) -> dict[str, Any]:
    """Run the stage; kill -9 it `kill_after` s after it began writing (None: let it finish)."""
    proc = subprocess.Popen(
        journey_cmd(*stage.args(home), "--json"),
        env=journey_env(home, **stage.env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    began = finished = None
    while proc.poll() is None:
        now = time.monotonic()
        if began is None and stage.started(home):
            began = now
        if began is not None and finished is None and stage.done is not None and stage.done(home):
            finished = now
        if began is not None and kill_after is not None and time.monotonic() - began >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = proc.communicate()
    ended = finished or time.monotonic()
    return {
        "returncode": proc.returncode,
        "killed": proc.returncode == -signal.SIGKILL,
        "write_seconds": (ended - began) if began is not None else None,
        "stderr": err.decode(errors="replace")[-2000:],
    }


def kill_points(n: int) -> list[float]:
    """Fractions of the reference write phase, spread over its first 70% (a loaded machine may run faster)."""
    return [round(0.05 + 0.65 * i / max(n - 1, 1), 2) for i in range(n)]


def kill_and_rerun(stage: Stage, work: Path, fractions: list[float]) -> Outcome:
    """Reference run; then for each fraction of its write phase: kill -9 there, rerun, compare."""
    ref_home = work / f"{stage.name}-reference"
    stage.prepare(ref_home)
    before = stage.digest(ref_home)
    ref = _run_until(stage, ref_home, None)
    if ref["returncode"] != 0:
        raise RuntimeError(f"{stage.name}: reference run failed: {ref['stderr']}")
    want = stage.digest(ref_home)
    window = ref["write_seconds"] or 0.0
    trials = []
    for i, frac in enumerate(fractions):
        home = work / f"{stage.name}-kill{i}"
        stage.prepare(home)
        run = _run_until(stage, home, frac * window)
        after_kill = stage.digest(home)
        rerun = _run_until(stage, home, None)
        final = stage.digest(home)
        again = _run_until(stage, home, None)  # and once more: a rerun of a finished stage changes nothing
        left = stage.leftovers(home)
        trials.append(
            {
                "at": round(frac, 2),
                "killed": run["killed"],
                "after_kill": "before" if after_kill == before else ("after" if after_kill == want else "partial"),
                "rerun_rc": rerun["returncode"],
                "final": final,
                "leftovers": [str(p.relative_to(home)) for p in left],
                "same": final == want and stage.digest(home) == want and again["returncode"] == 0 and not left,
            }
        )
    killed = sum(t["killed"] for t in trials)
    same = sum(t["same"] for t in trials)
    seen = Counter(t["after_kill"] for t in trials)
    observed = (
        f"{killed}/{len(trials)} killed mid-write (state after kill: "
        + ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
        + f"); {same}/{len(trials)} reruns equal the reference ({want[0]} rows, {want[1]})"
    )
    return Outcome(
        scenario=f"kill -9 during {stage.name}",
        expected="rerun == uninterrupted run: same rows, same hash",
        observed=observed,
        passed=killed > 0 and same == len(trials) and all(t["rerun_rc"] == 0 for t in trials),
        details={"reference": want, "write_seconds": round(window, 3), "trials": trials},
    )


def _copy_home(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("bundles", "scores", "quarantine", *drop))


def ingest_stage(events_file: Path) -> Stage:
    """Ingest the simulated events into an empty workspace (in small chunks: a longer write phase)."""

    def prepare(home: Path) -> None:
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)

    return Stage(
        name="ingestion",
        args=lambda home: ["ingest", str(events_file)],
        prepare=prepare,
        started=lambda home: (home / "events").exists(),
        digest=events_digest,
        leftovers=lambda home: [
            *(home / "events").glob("event_date=*/.*"),
            *(home / "events").glob("_keys/.*"),
            *(home / "events").glob("_txn/*"),
            *(home / "events").glob("_staging"),
        ],
        env={"JOURNEY_INGEST_CHUNK_ROWS": "20000"},
    )


def materialize_stage(trained: Path) -> Stage:
    """Materialize the newest feature table into a fresh SQLite online store."""

    def prepare(home: Path) -> None:
        _copy_home(trained, home, drop=("online.db", "materialized.json", "applied.json", "registry.db"))

    return Stage(
        name="materialization",
        args=lambda home: ["features", "materialize"],
        prepare=prepare,
        started=lambda home: (home / "feast" / "online.db").exists(),
        digest=online_digest,
        done=lambda home: (home / "feast" / "materialized.json").exists(),
    )


def score_stage(trained: Path, as_of: str) -> Stage:
    """Batch-score everyone into one Parquet file (small chunks: many writes before the rename)."""
    options = ["--chunk-rows", "250", "--no-reasons"]

    def prepare(home: Path) -> None:
        _copy_home(trained, home)

    def started(home: Path) -> bool:
        out = home / "out"
        return out.exists() and any(out.glob(".scores.parquet.partial-*"))

    def digest(home: Path) -> tuple[int, str]:
        return scores_digest(home / "out" / "scores.parquet")

    def prepare_out(home: Path) -> None:
        prepare(home)
        (home / "out").mkdir()

    return Stage(
        name="batch scoring",
        args=lambda home: ["score", "--as-of", as_of, "--out", str(home / "out" / "scores.parquet"), *options],
        prepare=prepare_out,
        started=started,
        digest=digest,
        done=lambda home: (home / "out" / "scores.parquet").exists(),
        leftovers=lambda home: list((home / "out").glob(".*")),
    )


# ---- load --------------------------------------------------------------------------------------
def load(
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    path: str = "/v1/score",
    stop: threading.Event | None = None,
    record: Callable[[float, float, int, dict[str, Any] | None], None] | None = None,
) -> dict[str, Any]:
    """Send every body (or loop over them until `stop`) with `concurrency` threads; latency and statuses."""
    import httpx
    import numpy as np

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    index = iter(range(10**12))

    def worker() -> None:
        with httpx.Client(timeout=60, headers=HEADERS) as http:
            while True:
                with lock:
                    i = next(index)
                if stop is None and i >= len(bodies):
                    return
                if stop is not None and stop.is_set():
                    return
                body = bodies[i % len(bodies)]
                sent = time.monotonic()
                t = time.perf_counter()
                try:
                    r = http.post(url + path, json=body)
                    status, payload = str(r.status_code), (r.json() if r.status_code == 200 else None)
                except (httpx.HTTPError, ValueError) as exc:
                    status, payload = type(exc).__name__, None
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1
                if record is not None:
                    record(sent, time.monotonic(), int(status) if status.isdigit() else -1, payload)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "n": len(latencies),
        "statuses": dict(statuses),
        "errors": sum(v for k, v in statuses.items() if k != "200"),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "max_ms": round(float(lat.max()), 1),
    }


def customer_ids(home: Path, n: int = 500) -> list[str]:
    import pyarrow.parquet as pq

    newest = sorted((home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]
    return [str(c) for c in pq.read_table(newest, columns=["customer_id"]).column(0).to_pylist()[:n]]


def sustained_load(home: Path, requests: int, concurrency: int) -> Outcome:
    """One known customer per request, every task with actions and reasons, against `journey serve`."""
    ids = customer_ids(home)
    bodies = [{"customer_ids": [ids[i % len(ids)]], "explain": True} for i in range(requests)]
    import httpx

    with server(home) as (url, _):
        ready = httpx.get(url + "/health/ready", timeout=10).json()
        load(url, bodies[: min(200, requests)], min(8, concurrency))  # warm up
        result = load(url, bodies, concurrency)
    result["ready"] = ready
    return Outcome(
        scenario=f"{requests:,} requests at concurrency {concurrency}",
        expected="zero errors; p99 reported",
        observed=(
            f"{result['errors']} errors of {result['n']:,}; {result['rps']} req/s; "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
        ),
        passed=result["errors"] == 0 and result["n"] == requests,
        details=result,
    )


def redis_outage(trained: Path, work: Path, seconds: float = 4.0, concurrency: int = 8) -> Outcome:
    """Materialize into a private Redis, load the API, kill Redis mid-load, bring it back."""
    home = work / "redis-home"
    _copy_home(trained, home, drop=("online.db", "materialized.json", "applied.json", "registry.db"))
    ids = customer_ids(home, 200)
    with private_redis(work / "redis-data") as redis_ctl:
        port = redis_ctl.port  # type: ignore[attr-defined]
        env = {"JOURNEY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "JOURNEY_FEAST_PROJECT": f"rel{port}"}
        journey(home, "features", "materialize", **env)
        marks: dict[str, float] = {}
        phases = ("up", "down", "back", "overlapping")
        per_phase: dict[str, Counter[str]] = {p: Counter() for p in phases}
        down_latency: list[float] = []
        rows: list[tuple[float, float, int, dict[str, Any] | None]] = []
        lock = threading.Lock()

        def record(sent: float, done: float, status: int, payload: dict[str, Any] | None) -> None:
            with lock:
                rows.append((sent, done, status, payload))

        stop = threading.Event()
        bodies = [{"customer_ids": [c]} for c in ids]
        with server(home, log_path=work / "redis-server.log", **env) as (url, _):
            runner = threading.Thread(target=lambda: load(url, bodies, concurrency, stop=stop, record=record))
            runner.start()
            time.sleep(seconds)
            marks["kill"] = time.monotonic()
            redis_ctl("kill")
            marks["killed"] = time.monotonic()
            time.sleep(seconds)
            marks["restart"] = time.monotonic()
            redis_ctl("start")
            marks["back"] = time.monotonic()
            time.sleep(seconds)
            stop.set()
            runner.join()
    # Each request is judged by when it ran: wholly before the kill, wholly inside the outage, or
    # started after Redis was back; requests spanning a boundary may get either answer.
    for sent, done, status, payload in rows:
        if done < marks["kill"]:
            name = "up"
        elif sent >= marks["killed"] and done <= marks["restart"]:
            name = "down"
            down_latency.append(done - sent)
        elif sent >= marks["back"]:
            name = "back"
        else:
            name = "overlapping"
        c = per_phase[name]
        c[f"status_{status}"] += 1
        if payload is not None:
            c["degraded" if payload["degraded"] else "full"] += 1
            c["cold_start"] += sum(r["cold_start"] for r in payload["results"])
    five = sum(v for c in per_phase.values() for k, v in c.items() if k.startswith("status_5"))
    other = sum(v for c in per_phase.values() for k, v in c.items() if k.startswith("status_") and k != "status_200")
    up, down, back = per_phase["up"], per_phase["down"], per_phase["back"]
    passed = (
        five == 0
        and other == 0
        and up["full"] > 0
        and up["degraded"] == 0
        and down["degraded"] > 0
        and down["full"] == 0
        and back["full"] > 0
        and back["degraded"] == 0
        and back["cold_start"] == 0
    )
    slow = f", median {1000 * sorted(down_latency)[len(down_latency) // 2]:.0f} ms" if down_latency else ""
    observed = (
        f"5xx: {five}, other errors: {other}; before: {up['full']} full; during: {down['degraded']} degraded{slow}, "
        f"{down['full']} full; after: {back['full']} full, {back['degraded']} degraded, "
        f"{back['cold_start']} cold starts"
    )
    return Outcome(
        scenario="Redis killed mid load test",
        expected="no 5xx; degraded while down; full answers when back",
        observed=observed,
        passed=passed,
        details={
            **{k: dict(v) for k, v in per_phase.items()},
            "unhandled": server_errors(work / "redis-server.log"),
            "outage_seconds": round(marks["restart"] - marks["killed"], 2),
        },
    )


def redis_hang(trained: Path, work: Path, seconds: float = 3.0, concurrency: int = 8) -> Outcome:
    """Materialize into a private Redis, load the API, then freeze Redis (SIGSTOP: connections are
    accepted and never answered) and thaw it. While it hangs: no 5xx, scores come back degraded
    within about the socket timeout, and the event loop stays free (/health/live keeps answering
    fast); after: full answers again."""
    import httpx
    import numpy as np

    home = work / "hang-home"
    _copy_home(trained, home, drop=("online.db", "materialized.json", "applied.json", "registry.db"))
    ids = customer_ids(home, 200)
    marks: dict[str, float] = {}
    rows: list[tuple[float, float, int, dict[str, Any] | None]] = []
    health: list[tuple[float, float]] = []  # (sent, seconds)
    lock = threading.Lock()

    def record(sent: float, done: float, status: int, payload: dict[str, Any] | None) -> None:
        with lock:
            rows.append((sent, done, status, payload))

    with private_redis(work / "hang-data") as redis_ctl:
        port = redis_ctl.port  # type: ignore[attr-defined]
        env = {"JOURNEY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "JOURNEY_FEAST_PROJECT": f"hang{port}"}
        journey(home, "features", "materialize", **env)
        stop = threading.Event()
        bodies = [{"customer_ids": [c]} for c in ids]
        with server(home, log_path=work / "hang-server.log", **env) as (url, _):

            def probe() -> None:
                with httpx.Client(timeout=30) as http:
                    while not stop.is_set():
                        sent = time.monotonic()
                        http.get(url + "/health/live")
                        health.append((sent, time.monotonic() - sent))
                        time.sleep(0.05)

            runner = threading.Thread(target=lambda: load(url, bodies, concurrency, stop=stop, record=record))
            prober = threading.Thread(target=probe)
            runner.start()
            prober.start()
            time.sleep(seconds)
            marks["pause"] = time.monotonic()
            redis_ctl("pause")
            time.sleep(seconds)
            marks["resume"] = time.monotonic()
            redis_ctl("resume")
            time.sleep(seconds)
            stop.set()
            runner.join()
            prober.join()
    during = [(done - sent, status, payload) for sent, done, status, payload in rows
              if sent >= marks["pause"] and done <= marks["resume"]]  # fmt: skip
    after = [(status, payload) for sent, _, status, payload in rows if sent >= marks["resume"] + 2.0]
    health_during = [dt for sent, dt in health if marks["pause"] <= sent <= marks["resume"]]
    bad = sum(1 for _, _, status, _ in rows if status != 200)
    degraded = sum(1 for _, status, p in during if status == 200 and p is not None and p["degraded"])
    slowest = max((dt for dt, _, _ in during), default=0.0)
    after_full = sum(1 for status, p in after if status == 200 and p is not None and not p["degraded"])
    after_degraded = sum(1 for status, p in after if p is not None and p["degraded"])
    health_max = max(health_during, default=float("inf"))
    passed = bad == 0 and degraded > 0 and slowest < 3.0 and health_max < 0.5 and after_full > 0
    observed = (
        f"errors: {bad}; while hung: {len(during)} answers, {degraded} degraded, slowest {slowest * 1000:.0f} ms; "
        f"/health/live slowest {health_max * 1000:.0f} ms over {len(health_during)} checks; "
        f"after: {after_full} full, {after_degraded} degraded"
    )
    return Outcome(
        scenario="Redis hangs (SIGSTOP) mid load test",
        expected="no 5xx; degraded answers within ~1 s; the event loop free (/health/live < 0.5 s); full after",
        observed=observed,
        passed=passed,
        details={
            "errors": bad,
            "during": len(during),
            "degraded": degraded,
            "slowest_ms": round(slowest * 1000, 1),
            "health_checks": len(health_during),
            "health_max_ms": round(health_max * 1000, 1),
            "health_p50_ms": round(float(np.median(health_during)) * 1000, 1) if health_during else None,
            "after_full": after_full,
            "after_degraded": after_degraded,
            "unhandled": server_errors(work / "hang-server.log"),
        },
    )


def registry_unreachable(home: Path, normal: dict[str, Any] | None = None) -> Outcome:
    """Start with the registry out of reach: last-known-good champions from the bundle cache.

    `normal` is /health/ready of an earlier normal start on `home` (which refreshed the bundle
    cache); without it, one is made here.
    """
    import httpx

    if normal is None:
        with server(home) as (url, _):
            normal = httpx.get(url + "/health/ready", timeout=10).json()
    ids = customer_ids(home, 5)
    variants = {
        "unreachable PostgreSQL": f"postgresql://journey:secret@127.0.0.1:{free_port()}/mlflow",
        "sqlite file in a missing folder": f"sqlite:///{home / 'no-such-folder' / 'mlflow.db'}",
    }
    seen: dict[str, Any] = {}
    for label, uri in variants.items():
        with server(home, JOURNEY_MLFLOW_TRACKING_URI=uri) as (url, _):
            ready = httpx.get(url + "/health/ready", timeout=10)
            r = httpx.post(url + "/v1/score", json={"customer_ids": ids}, headers=HEADERS, timeout=60)
            body = ready.json()
            seen[label] = {
                "ready": ready.status_code,
                "model_source": body.get("model_source"),
                "last_known_good": body.get("last_known_good"),
                "models": body.get("models"),
                "score_status": r.status_code,
                "scored_versions": r.json().get("model_versions") if r.status_code == 200 else None,
            }
    passed = all(
        s["ready"] == 200
        and s["model_source"] == "bundle_cache"
        and s["last_known_good"] is True
        and s["models"] == normal["models"]
        and s["score_status"] == 200
        and s["scored_versions"] == normal["models"]
        for s in seen.values()
    )
    observed = "; ".join(
        f"{label}: ready {s['ready']}, source {s['model_source']}, versions {s['models']}, score {s['score_status']}"
        for label, s in seen.items()
    )
    return Outcome(
        scenario="registry unreachable at start",
        expected=f"ready from bundle_cache, last_known_good, versions {normal['models']}",
        observed=observed,
        passed=passed,
        details={"normal": normal, **seen},
    )


# ---- workspace and report ----------------------------------------------------------------------
def build_trained(home: Path, customers: int = 3000, days: int = 365) -> str:
    """A trained workspace; returns the cutoff of its feature table (YYYY-MM-DD)."""
    sim = journey(
        home, "simulate", "--customers", str(customers), "--days", str(days), "--seed", "3", "--out", str(home / "sim")
    )
    journey(
        home, "ingest", str(home / "sim" / "events.parquet"), "--customers", str(home / "sim" / "customers.parquet")
    )
    as_of = str(sim["end"])[:10]
    journey(home, "features", "build", "--as-of", as_of)
    journey(home, "features", "materialize")
    for task in ("churn", "next_purchase"):
        result = journey(home, "train", "--task", task)["tasks"][0]
        if not result["promoted"]:  # small data may miss the gate; the scenarios need a champion
            force_champion(home, task, str(result["version"]))
    return as_of


def force_champion(home: Path, task: str, version: str) -> None:
    code = (
        "import sys; from training.registry import client, registered_name, set_alias; "
        "set_alias(client(sys.argv[1]), registered_name(sys.argv[2]), 'champion', sys.argv[3])"
    )
    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", code, uri, task, version], cwd=REPO, check=True, env=journey_env(home))


def feature_cutoff(home: Path) -> str:
    newest = sorted((home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]
    stamp = newest.stem.split("=", 1)[1]
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}"


def table(outcomes: list[Outcome]) -> str:
    lines = ["| scenario | expected | observed | result |", "|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.scenario} | {o.expected} | {o.observed} | {'pass' if o.passed else 'FAIL'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="A trained workspace (default: build one)")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: a temporary one)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kills", type=int, default=3, help="kill points per stage")
    parser.add_argument(
        "--only", nargs="*", default=None, help="ingestion materialization scoring redis redis-hang registry load"
    )
    parser.add_argument("--json", action="store_true", help="Also print the outcomes as JSON lines")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    wanted = set(args.only or ["ingestion", "materialization", "scoring", "redis", "redis-hang", "registry", "load"])
    work = args.work or Path(tempfile.mkdtemp(prefix="journey-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    home = args.home
    if home is None:
        home = work / "trained"
        print(f"building a trained workspace in {home}", file=sys.stderr)
        build_trained(home)
    home = home.resolve()
    fractions = kill_points(args.kills)
    outcomes: list[Outcome] = []

    def run(name: str, fn: Callable[[], Outcome]) -> None:
        if name not in wanted:
            return
        started = time.perf_counter()
        try:
            outcome = fn()
        except Exception as exc:  # noqa: BLE001 - one broken scenario is a FAIL row, not a lost table
            outcome = Outcome(name, "runs", f"{type(exc).__name__}: {str(exc)[:300]}", False)
        outcome.details["seconds"] = round(time.perf_counter() - started, 1)
        outcomes.append(outcome)
        print(f"{'pass' if outcome.passed else 'FAIL'}  {outcome.scenario}: {outcome.observed}", file=sys.stderr)
        if args.json:
            print(json.dumps(outcome.__dict__, default=str))

    sim_dir = home / "sim"
    run("ingestion", lambda: kill_and_rerun(ingest_stage(sim_dir / "events.parquet"), work, fractions))
    run("materialization", lambda: kill_and_rerun(materialize_stage(home), work, fractions))
    run("scoring", lambda: kill_and_rerun(score_stage(home, feature_cutoff(home)), work, fractions))
    run("redis", lambda: redis_outage(home, work))
    run("redis-hang", lambda: redis_hang(home, work))
    served = work / "served"
    _copy_home(home, served)
    run("load", lambda: sustained_load(served, args.requests, args.concurrency))
    normal = next((o.details.get("ready") for o in outcomes if "ready" in o.details), None)
    run("registry", lambda: registry_unreachable(served, normal))
    load_avg = os.getloadavg()
    print(table(outcomes))
    print(f"\nload average at the end: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} ({os.cpu_count()} cores)")
    return 0 if outcomes and all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
