"""`journey report`: one static HTML file with the journey analytics, rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.settings import Settings
from core.time import to_utc
from serving.report import build_report, gather
from support import IN_CI

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_exported_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: start each test without it, leave none behind."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def settings_for(home: Path, **kwargs: object) -> Settings:
    """The workspace's own registry, whatever MLFLOW_TRACKING_URI says."""
    kwargs.setdefault("mlflow_tracking_uri", f"sqlite:///{home.resolve() / 'mlflow.db'}")
    return Settings(home=home, **kwargs)  # type: ignore[arg-type]
PLOTS = ("funnel", "transitions", "time_to_first_purchase", "cohort_retention", "channel_contribution",
         "friction_dropoff", "cart_abandonment", "scores_by_segment", "actions_by_segment")  # fmt: skip


def table(home: Path) -> Path:
    return sorted((home / "features" / "customer_journey").glob("as_of=*.parquet"))[-1]


def table_cutoff(home: Path) -> pd.Timestamp:
    # Explicit: other tests post events "now" to the shared workspace, which moves the default cutoff.
    return to_utc(pd.read_parquet(table(home), columns=["event_timestamp"])["event_timestamp"].iloc[0])


def count(home: Path, cutoff: pd.Timestamp, where: str = "true") -> int:
    import duckdb

    glob = str(home / "events" / "event_date=*" / "*.parquet")
    sql = (f"SELECT count(DISTINCT customer_id) FROM read_parquet('{glob}', hive_partitioning=false) "
           f"WHERE event_time <= TIMESTAMPTZ '{cutoff.strftime('%Y-%m-%d %H:%M:%S')}+00' AND ({where})")  # fmt: skip
    return int(duckdb.connect().execute(sql).fetchall()[0][0])


@pytest.fixture(scope="module")
def report(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    return out, build_report(settings_for(trained_home), table_cutoff(trained_home), out)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    if IN_CI:
        pytest.fail("chromium is not installed (CI=true: scripts/test.sh installs it with apt-get)")
    pytest.skip("chromium is not installed: apt-get install -y chromium")


def headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_the_report_is_one_offline_file_with_every_plot(report: tuple[Path, dict], trained_home: Path) -> None:
    out, summary = report
    text = out.read_text()
    assert summary["plots"] == list(PLOTS) and summary["scores"] is True
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)", text, re.I), "nothing to fetch or run"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text, re.I)
    for plot in PLOTS:
        figure = re.search(rf'<figure class="plot" id="{plot}">(.*?)</figure>', text, re.S)
        assert figure and "<svg" in figure.group(1) and "</svg>" in figure.group(1), plot
    cutoff = table_cutoff(trained_home)
    assert summary["headline"]["customers"] == count(trained_home, cutoff) and summary["cutoff"] == cutoff.isoformat()
    assert [p.name for p in out.parent.iterdir()] == [out.name], "written atomically, no leftovers"


def test_report_numbers_come_from_the_events(trained_home: Path) -> None:
    cutoff = table_cutoff(trained_home)
    a = gather(settings_for(trained_home), cutoff)
    buyers = count(trained_home, cutoff, "event_type = 'purchase'")
    carts = count(trained_home, cutoff, "event_type = 'add_to_cart'")
    funnel = a.funnel.set_index("step")["customers"]
    assert funnel["purchased"] == buyers and funnel["added to cart"] == carts
    assert funnel.is_monotonic_decreasing, "each step is a subset of the one above"
    assert a.first_purchase_days.size == buyers and (a.first_purchase_days >= 0).all()
    assert (a.cohorts.loc[a.cohorts["month"] == 0, "share"] == 1.0).all()
    for view, part in a.channels.groupby("view"):
        assert part["share"].sum() == pytest.approx(1.0), view
    assert a.transitions["customers"].sum() == len(pd.read_parquet(table(trained_home), columns=["customer_id"]))
    assert a.carts["rate"].between(0, 1).all() and (a.carts["abandoned"] <= a.carts["started"]).all()


def test_without_champions_the_report_says_so(trained_home: Path, tmp_path: Path) -> None:
    empty_registry = f"sqlite:///{tmp_path / 'empty.db'}"
    import mlflow

    # Created, so it is an empty registry: a missing file would count as an unreachable one,
    # whose last-known-good champions come from the workspace's bundle cache.
    mlflow.MlflowClient(empty_registry).search_experiments()
    out = tmp_path / "r.html"
    settings = settings_for(trained_home, mlflow_tracking_uri=empty_registry)
    summary = build_report(settings, table_cutoff(trained_home), out)
    text = out.read_text()
    assert summary["scores"] is False and "scores_by_segment" not in summary["plots"]
    assert 'id="scores_missing"' in text and "no champion models yet" in text


def test_report_command(trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cli import _register, app

    _register()
    monkeypatch.setenv("JOURNEY_HOME", str(trained_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bad = runner.invoke(app, ["report", "--out", str(tmp_path / "r.pdf"), "--json"])
    assert bad.exit_code == 1 and ".html" in json.loads(bad.stdout.strip().splitlines()[-1])["error"]
    monkeypatch.setenv("JOURNEY_HOME", str(tmp_path / "nothing"))
    empty = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html"), "--json"])
    assert empty.exit_code == 1 and "event store is empty" in json.loads(empty.stdout.strip().splitlines()[-1])["error"]
    assert "Traceback" not in bad.output + empty.output


def test_chromium_renders_every_plot(report: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = report
    dom = headless(tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for plot in PLOTS:
        figure = re.search(rf'<figure class="plot" id="{plot}">(.*?)</figure>', dom.stdout, re.S)
        assert figure, f"{plot} missing from the rendered DOM"
        assert len(re.findall(r"<(path|rect|text|line|polyline|image)\b", figure.group(1))) > 10, plot
    png = tmp_path / "report.png"
    shot = headless(tmp_path, f"--screenshot={png}", "--window-size=1400,6000", out.as_uri())
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[0] == 6000 and pixels.shape[1] == 1400
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, "the screenshot shows plots, not a blank page"
