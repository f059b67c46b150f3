"""Scoring API load test against two references measured in the same run.

    python benchmarks/bench_api.py --home /path/to/trained/workspace [--requests 20000] [--redis redis://127.0.0.1:6379/0]

Without --home it builds one (simulate 5,000 customers, ingest, features, materialize, train
churn and next_purchase, force champions). Targets, each at concurrency 8 and 32, one customer
per request with all tasks, actions and reasons:

- journeyml (`journey serve`, SQLite online store; and Redis with --redis),
- reference A: `mlflow models serve` of the churn model alone,
- reference B: a minimal FastAPI app calling `Booster.predict` on one model.

Plus 100-customer requests at concurrency 1, with and without reasons (aim: p99 under 30 ms).
Prints median and p99 latency and throughput, and the ratios against both references.
The load generator (asyncio + httpx) runs on the same 2 cores, so every target pays it alike.
All targets run at once and are measured in interleaved rounds (`--rounds`: each round gives
every target its slice of the requests), so other jobs' load on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def journey(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    full = {**os.environ, "JOURNEY_HOME": str(home), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-m", "core", *args, "--json"], env=full, cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_home(home: Path) -> None:
    sim = journey(home, "simulate", "--customers", "5000", "--days", "365", "--seed", "3", "--out", str(home / "sim"))
    journey(
        home, "ingest", str(home / "sim" / "events.parquet"), "--customers", str(home / "sim" / "customers.parquet")
    )
    journey(home, "features", "build", "--as-of", sim["end"][:10])
    journey(home, "features", "materialize")
    from training.registry import client, registered_name, set_alias

    for task in ("churn", "next_purchase"):
        result = journey(home, "train", "--task", task)["tasks"][0]
        if not result["promoted"]:
            set_alias(
                client(f"sqlite:///{home.resolve() / 'mlflow.db'}"),
                registered_name(task),
                "champion",
                result["version"],
            )


def start(cmd: list[str], env: dict[str, str], ready_url: str, timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[:4]} not ready")


async def load(url: str, bodies: list[bytes], concurrency: int, headers: dict[str, str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for body in queue:
            t = time.perf_counter()
            r = await client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return summarise([latencies], [wall], errors)


def summarise(latencies: list[list[float]], walls: list[float], errors: int) -> dict[str, Any]:
    lat = np.concatenate([np.asarray(x, dtype=float) for x in latencies]) * 1000
    return {
        "rps": len(lat) / sum(walls),
        "median_ms": float(np.median(lat)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "n": len(lat),
        "_lat": latencies,
        "_wall": walls,
    }


def public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items() if not k.startswith("_")}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the rounds of one target: all latencies, total wall time."""
    return summarise(
        [x for p in parts for x in p["_lat"]], [w for p in parts for w in p["_wall"]], sum(p["errors"] for p in parts)
    )


MINIMAL_APP = textwrap.dedent("""
    import json, sys
    import lightgbm as lgb, numpy as np
    from fastapi import FastAPI, Request
    booster = lgb.Booster(model_file=sys.argv[1])
    width = booster.num_feature()
    app = FastAPI()
    @app.get("/health")
    def health(): return {"ok": True}
    @app.post("/predict")
    async def predict(request: Request):
        body = await request.json()
        row = np.asarray(body["features"], dtype=np.float64).reshape(1, width)
        return {"score": float(booster.predict(row, num_threads=1)[0])}
    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--redis", default=None, help="also run journeyml against this Redis")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per concurrency level")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="journey-bench-api-")
    home = args.home or Path(tmp.name) / "home"
    if args.home is None:
        print("building a trained workspace ...", file=sys.stderr)
        build_home(home)
    from training.registry import client, registered_name

    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    feats = sorted((home / "features" / "customer_journey").glob("*.parquet"))[-1]
    ids = pd.read_parquet(feats, columns=["customer_id"])["customer_id"].tolist()
    rng = np.random.default_rng(0)
    one = [
        json.dumps({"customer_ids": [ids[i]], "explain": True}).encode()
        for i in rng.integers(0, len(ids), args.requests)
    ]
    hundred_ids = [list(rng.choice(ids, 100, replace=False)) for _ in range(300)]
    hundred = [json.dumps({"customer_ids": h, "explain": True}).encode() for h in hundred_ids]
    hundred_plain = [json.dumps({"customer_ids": h, "explain": False}).encode() for h in hundred_ids]
    results: list[tuple[str, int, dict[str, Any]]] = []
    env = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": KEY, "JOURNEY_RELOAD_INTERVAL_S": "3600"}
    hdr = {"X-API-Key": KEY, "content-type": "application/json"}
    # Every target is started first, then measured in interleaved rounds (each round gives every
    # target a slice of the requests), so load from other jobs on the machine hits all alike.
    targets: list[tuple[str, str, list[bytes]]] = []  # (label, url, bodies)
    procs: list[subprocess.Popen] = []

    def start_journey(label: str, extra: dict[str, str]) -> str:
        port = free_port()
        procs.append(
            start(
                [sys.executable, "-m", "core", "serve", "--port", str(port)],
                {**env, **extra},
                f"http://127.0.0.1:{port}/health/ready",
            )
        )
        url = f"http://127.0.0.1:{port}/v1/score"
        targets.append((label, url, one))
        return url

    try:
        journey_urls = {"journeyml (sqlite)": start_journey("journeyml (sqlite)", {})}
        if args.redis:
            project = f"bench{os.getpid()}"
            redis_env = {"JOURNEY_REDIS_URL": args.redis, "JOURNEY_FEAST_PROJECT": project}
            (home / "feast" / "materialized.json").unlink(missing_ok=True)
            (home / "feast" / "applied.json").unlink(missing_ok=True)
            journey(home, "features", "materialize", env=redis_env)
            journey_urls["journeyml (redis)"] = start_journey("journeyml (redis)", redis_env)
            (home / "feast" / "applied.json").unlink(missing_ok=True)

        cl = client(uri)
        mv = cl.get_model_version_by_alias(registered_name("churn"), "champion")
        import mlflow.artifacts

        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, tracking_uri=uri, dst_path=str(Path(tmp.name) / "model")
            )
        )
        model_file = next(local.rglob("model.lgb"), None) or next(local.rglob("*.txt"))
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(model_file))
        names = booster.feature_name()
        row = [0.0] * booster.num_feature()

        port = free_port()
        app_file = Path(tmp.name) / "minimal_app.py"
        app_file.write_text(MINIMAL_APP)
        procs.append(
            start([sys.executable, str(app_file), str(model_file), str(port)], env, f"http://127.0.0.1:{port}/health")
        )
        minimal_body = [json.dumps({"features": row}).encode()] * args.requests
        targets.append(("minimal FastAPI + Booster.predict", f"http://127.0.0.1:{port}/predict", minimal_body))
        if not args.skip_mlflow:
            port = free_port()
            menv = {**env, "MLFLOW_TRACKING_URI": uri}
            cmd = ["mlflow", "models", "serve", "-m", f"models:/{registered_name('churn')}@champion", "-p", str(port),
                   "--env-manager", "local"]  # fmt: skip
            procs.append(start(cmd, menv, f"http://127.0.0.1:{port}/ping"))
            split = json.dumps({"dataframe_split": {"columns": names, "data": [row]}}).encode()
            n = min(args.requests, 3000)  # ~50-100 requests/s: keep the reference's run to a few minutes
            targets.append(("mlflow models serve (churn only)", f"http://127.0.0.1:{port}/invocations", [split] * n))

        for _, url, bodies in targets:
            asyncio.run(load(url, bodies[:100], 8, hdr))  # warm up
        rounds = max(1, args.rounds)
        for c in args.concurrency:
            parts: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in targets}
            for r in range(rounds):
                for label, url, bodies in targets:
                    size = -(-len(bodies) // rounds)
                    chunk = bodies[r * size : (r + 1) * size]
                    if chunk:
                        parts[label].append(asyncio.run(load(url, chunk, c, hdr)))
            for label, _, _ in targets:
                results.append((label, c, merge(parts[label])))
                print(label, c, public(results[-1][2]), file=sys.stderr, flush=True)
        for suffix, bodies in ((" x100 customers", hundred), (" x100, no reasons", hundred_plain)):
            parts = {label: [] for label in journey_urls}
            for r in range(rounds):
                size = -(-len(bodies) // rounds)
                for label, url in journey_urls.items():
                    parts[label].append(asyncio.run(load(url, bodies[r * size : (r + 1) * size], 1, hdr)))
            for label in journey_urls:
                results.append((label + suffix, 1, merge(parts[label])))
                print(label + suffix, public(results[-1][2]), file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()

    print(f"\n{'target':<40}{'conc':>5}{'n':>7}{'req/s':>9}{'median ms':>11}{'p99 ms':>9}{'errors':>8}")
    for label, c, r in results:
        print(f"{label:<40}{c:>5}{r['n']:>7}{r['rps']:>9.0f}{r['median_ms']:>11.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}")
    by = {(label, c): r for label, c, r in results}
    for store in ("sqlite", "redis"):
        for c in args.concurrency:
            ours = by.get((f"journeyml ({store})", c))
            minimal = by.get(("minimal FastAPI + Booster.predict", c))
            mlf = by.get(("mlflow models serve (churn only)", c))
            if ours is None:
                continue
            line = f"{store} c={c}:"
            if minimal:
                line += f" journeyml p99 / minimal p99 = {ours['p99_ms'] / minimal['p99_ms']:.1f}x (aim <= 2.5x)"
            if mlf:
                line += f"; journeyml req/s / mlflow serve req/s = {ours['rps'] / mlf['rps']:.1f}x (aim >= 10x)"
            print(line)
    tmp.cleanup()


if __name__ == "__main__":
    main()
