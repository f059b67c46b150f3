"""Malformed inputs to every command: a non-zero exit, one clear error line, never a traceback.

Two layers: the real entry point (`python -m core`, a subprocess) for one or two malformed inputs per
command and for broken settings, and a hypothesis fuzz of option values and file contents through the
same Typer app in-process (fast enough for many examples).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

# ---- the real entry point ----------------------------------------------------------------------
GARBAGE = b"\x00\x01PAR1 not really \xff\xfe{]"


def run_journey(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "JOURNEY_HOME": str(home), "JOURNEY_API_KEYS": "", **(env or {})}
    for name in ("MLFLOW_TRACKING_URI", "JOURNEY_REDIS_URL", "JOURNEY_DEBUG"):
        full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "core", *args], capture_output=True, text=True, env=full, cwd=home.parent, timeout=300
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    out = {
        "garbage.parquet": GARBAGE,
        "garbage.csv.gz": GARBAGE,
        "bad.yaml": b"columns: [event_id, customer_id\n  : ::\n",
        "wrong.yaml": b"columns: 5\n",
        "ids.csv": b"customer_id\nc1\n",
    }
    paths = {}
    for name, data in out.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    return paths


def cases(f: dict[str, Path]) -> list[tuple[str, list[str], dict[str, str]]]:
    """(why, argv, env): one or more malformed inputs for every command."""
    return [
        ("missing file", ["ingest", "/no/such/events.csv"], {}),
        ("not Parquet", ["ingest", str(f["garbage.parquet"])], {}),
        ("not gzip", ["ingest", str(f["garbage.csv.gz"])], {}),
        ("mapping not YAML", ["ingest", str(f["ids.csv"]), "--mapping", str(f["bad.yaml"])], {}),
        ("mapping of the wrong shape", ["ingest", str(f["ids.csv"]), "--mapping", str(f["wrong.yaml"])], {}),
        ("customers not Parquet", ["ingest", str(f["ids.csv"]), "--customers", str(f["garbage.parquet"])], {}),
        ("negative customers", ["simulate", "--out", "sim", "--customers", "-3"], {}),
        ("bad start date", ["simulate", "--out", "sim", "--customers", "5", "--start", "2024-02-30"], {}),
        ("fault rate above 1", ["simulate", "--out", "sim", "--customers", "5", "--faults", "3"], {}),
        ("bad cutoff", ["features", "build", "--as-of", "yesterday-ish"], {}),
        ("unknown engine", ["features", "build", "--as-of", "2024-05-01", "--engine", "pandas"], {}),
        ("nothing built yet", ["features", "materialize"], {}),
        ("unreachable Redis", ["features", "get", "--customer", "c1"], {"JOURNEY_REDIS_URL": "redis://127.0.0.1:1/0"}),
        ("unknown task", ["train", "--task", "astrology"], {}),
        ("bad test cutoff", ["evaluate", "--test-cutoff", "13/13/2024"], {}),
        ("bad cutoff", ["score", "--as-of", "2024-13-01"], {}),
        ("bad destination", ["score", "--as-of", "2024-05-01", "--out", "scores.xlsx"], {}),
        ("bad cutoff", ["backtest", "--as-of", "not a date"], {}),
        ("report from an empty store", ["report", "--out", "r.html"], {}),
        ("unknown learner", ["nba", "train", "--learner", "oracle"], {}),
        ("too few customers", ["nba", "evaluate", "--customers", "5"], {}),
        ("catalog not YAML", ["nba", "docs", "--catalog", str(f["bad.yaml"])], {}),
        ("no API keys", ["serve", "--port", "8999"], {}),
        ("port out of range", ["serve", "--port", "70000"], {}),
        ("registry URI nobody knows", ["models", "list"], {"JOURNEY_MLFLOW_TRACKING_URI": "nonsense://x"}),
        ("setting of the wrong type", ["ingest", str(f["ids.csv"])], {"JOURNEY_INGEST_CHUNK_ROWS": "lots"}),
        ("unwritable workspace", ["ingest", str(f["ids.csv"])], {"JOURNEY_HOME": "/proc/no-such-home"}),
        ("unknown option", ["ingest", "--frobnicate", str(f["ids.csv"])], {}),
    ]


def assert_clean_failure(result: subprocess.CompletedProcess, json_mode: bool) -> None:
    assert result.returncode != 0, result.stdout[-500:]
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr[-2000:]
    if result.returncode == 2:  # a usage error from the option parser: its boxed one-line message
        assert "Error" in result.stderr or "Usage" in result.stderr, result.stderr
        return
    if json_mode:  # the error is the summary on stdout
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["ok"] is False and summary["error"] and "\n" not in summary["error"], summary
        return
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and len(lines[0]) > len("error: ") + 5, result.stderr[-2000:]


def test_every_command_fails_cleanly_on_malformed_input(tmp_path: Path, files: dict[str, Path]) -> None:
    home = tmp_path / "home"
    commands = set()
    failures = []
    for i, (why, argv, env) in enumerate(cases(files)):
        json_mode = argv[0] != "nba" or argv[1] != "docs"  # `nba docs` prints Markdown, it has no --json
        result = run_journey(home, *argv, *(["--json"] if json_mode and i % 2 == 0 else []), env=env)
        commands.add(" ".join(a for a in argv[:2] if not a.startswith(("-", "/")) and "." not in a))
        try:
            assert_clean_failure(result, json_mode and i % 2 == 0)
        except (AssertionError, ValueError) as exc:
            failures.append(f"{why}: journey {' '.join(argv)} -> {result.returncode}: {exc}")
    assert not failures, "\n".join(failures)
    wanted = {"ingest", "simulate", "features build", "features materialize", "features get", "train", "evaluate"}
    wanted |= {"score", "backtest", "report", "nba train", "nba evaluate", "nba docs", "serve", "models list"}
    assert wanted <= commands, wanted - commands


# ---- hypothesis: fuzzed option values and file contents, in-process --------------------------
@pytest.fixture(scope="module")
def cli_app() -> object:
    from core import cli

    if not cli.app.registered_commands:
        cli._register()
    return cli.app


WORD = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)
DATE = st.one_of(
    WORD,
    st.dates().map(str),
    st.sampled_from(["2024-02-30", "9999-99-99", "2024-01-01T25:00", "NaT", "now", "-1", "1e309", "2024-1-1 +99:00"]),
)
NUMBER = st.one_of(st.integers(-(10**12), 10**12).map(str), WORD, st.sampled_from(["1e9", "nan", "-0", "0x10"]))
SUFFIX = st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ".parquet", ".csv.gz", ".jsonl.gz", ".txt", ""])
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.sampled_from([b"customer_id,event_time\nc1,2024-13-01\n", b'{"customer_id": 1}\n', b"PAR1\x00PAR1"]),
)


@st.composite
def command(draw: st.DrawFn, folder: Path) -> tuple[list[str], bool]:
    """(argv, may succeed): a command with fuzzed values; an empty workspace, so little can succeed."""

    def file(content: bytes | None = None, suffix: str | None = None) -> str:
        path = folder / f"in{draw(st.integers(0, 10**9))}{suffix if suffix is not None else draw(SUFFIX)}"
        path.write_bytes(content if content is not None else draw(CONTENT))
        return str(path)

    kind = draw(st.integers(0, 11))
    if kind == 0:
        return ["features", "build", "--as-of", draw(DATE)], False
    if kind == 1:
        return ["score", "--as-of", draw(DATE), "--out", str(folder / f"s{draw(SUFFIX)}")], False
    if kind == 2:
        return ["backtest", "--as-of", draw(DATE)], False
    if kind == 3:
        return ["report", "--as-of", draw(DATE), "--out", str(folder / "r.html")], False
    if kind == 4:
        return ["train", "--task", draw(WORD), "--test-cutoff", draw(DATE)], False
    if kind == 5:
        return ["features", "get", "--customer", draw(WORD), "--as-of", draw(DATE)], False
    if kind == 6:  # may really simulate: kept tiny
        customers = draw(st.one_of(st.integers(-5, 20).map(str), NUMBER))
        days = draw(st.one_of(st.integers(-5, 20).map(str), NUMBER))
        argv = ["simulate", "--out", str(folder / "sim"), "--customers", customers, "--days", days]
        return [*argv, "--start", draw(DATE), "--faults", draw(NUMBER)], True
    if kind == 7:  # an ingest quarantines what it cannot read: success is allowed, a crash is not
        return ["ingest", file()], True
    if kind == 8:
        return ["ingest", file(b"customer_id\nc1\n", ".csv"), "--mapping", file(suffix=".yaml")], False
    if kind == 9:
        return ["nba", "train", "--learner", draw(WORD), "--train-days", draw(NUMBER)], False
    if kind == 10:
        return ["evaluate", "--task", draw(WORD), "--alias", draw(WORD), "--test-cutoff", draw(DATE)], False
    return ["serve", "--port", draw(NUMBER), "--workers", draw(NUMBER)], False  # no API keys: never starts


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzzed_options_and_files_never_crash(cli_app: object, tmp_path_factory: pytest.TempPathFactory, data) -> None:
    folder = tmp_path_factory.mktemp("fuzzcli")
    argv, may_succeed = data.draw(command(folder))
    env = {"JOURNEY_HOME": str(folder / "home"), "JOURNEY_API_KEYS": "", "JOURNEY_REDIS_URL": None}
    result = CliRunner().invoke(cli_app, [*argv, "--json"], env=env)  # type: ignore[arg-type]
    where = f"journey {' '.join(argv)} -> {result.exit_code}"
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{where}: unhandled {type(exc).__name__}: {exc}"
    assert "Traceback" not in result.stderr + result.stdout, where
    if result.exit_code == 0:
        assert may_succeed, f"{where}: succeeded on malformed input"
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["ok"] is True
        if argv[0] == "ingest":  # whatever it read is accounted for
            assert summary["read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"], summary
    elif result.exit_code == 2:
        assert "Error" in result.stderr or "Usage" in result.stderr, where
    else:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["ok"] is False and summary["error"] and "\n" not in summary["error"], f"{where}: {summary}"
