"""Screenshots of a demo run in the MLflow UI, taken with headless Chromium, for docs/mlflow.md.

    python scripts/mlflow_screenshots.py --home .journey --out docs/img

Starts `mlflow ui` on the workspace's database, drives Debian's Chromium through the DevTools
protocol (switches the UI to "Model training", closes the assistant panel) and saves PNGs of:
the chart comparison of the churn LightGBM run against its baselines, the run comparison page,
the registered model with its aliases, and the NBA runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


# The runs table nests the baselines under their LightGBM run; its expander is an unlabelled button.
EXPAND_CHILD_RUNS = """(() => {
  const rows = [...document.querySelectorAll('[role=row], .ag-row')];
  const buttons = rows.flatMap(r => [...r.querySelectorAll('button')])
      .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label'));
  buttons.forEach(b => b.click());
  return buttons.length;
})()"""

# Type into the chart search box the way React expects (native setter, then an input event).
FILTER_CHARTS = """(() => {
  const box = document.querySelector('input[placeholder*="Search metric charts"]');
  if (!box) return false;
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  setter.call(box, %s);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
})()"""


class Page:
    """The smallest DevTools client: send a command, wait for its answer."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=64 * 2**20).__enter__()
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def js(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return out.get("result", {}).get("value")

    def goto(self, url: str, settle: float = 6.0) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(settle)
        self.tidy()

    def tidy(self) -> None:
        # Model-training mode, no assistant side panel, no first-visit popovers.
        self.js(
            """(() => {
              const byText = (t) => [...document.querySelectorAll('button, [role=radio], label, span')]
                  .find(e => e.textContent.trim() === t);
              const mt = byText('Model training'); if (mt) mt.click();
              for (const t of ['Got it', 'Dismiss', 'Close']) { const b = byText(t); if (b) b.click(); }
              const x = [...document.querySelectorAll('button[aria-label]')]
                  .filter(b => /close/i.test(b.getAttribute('aria-label')));
              x.forEach(b => b.click());
              return true;
            })()"""
        )
        time.sleep(1.5)

    def shot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".journey"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    db = (args.home / "mlflow.db").resolve()
    if not db.exists():
        raise SystemExit(f"{db} does not exist: run scripts/demo.sh first")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)

    from mlflow import MlflowClient

    port, cdp = free_port(), free_port()
    uri = f"sqlite:///{db}"
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    profile = tempfile.mkdtemp(prefix="chromium-")
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--remote-debugging-port={cdp}", "--window-size=1500,950", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health")
        wait_http(f"http://127.0.0.1:{cdp}/json/version")
        client = MlflowClient(tracking_uri=uri)
        churn = client.get_experiment_by_name("journeyml-churn")
        nba = client.get_experiment_by_name("journeyml-nba")
        if churn is None:
            raise SystemExit("no journeyml-churn experiment: run `journey train` first")
        runs = client.search_runs([churn.experiment_id], order_by=["attributes.start_time DESC"], max_results=50)
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        latest = [parent, *(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{cdp}/json/list").read())
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1500, height=950, deviceScaleFactor=1, mobile=False)
        exp = churn.experiment_id
        page.goto(f"{base}/#/experiments/{exp}/runs")  # the first visit switches the UI's mode
        page.goto(f"{base}/#/experiments/{exp}/runs?compareRunsMode=CHART")
        page.js(EXPAND_CHILD_RUNS)
        page.js(FILTER_CHARTS % json.dumps("test_"))
        time.sleep(3)
        page.shot(args.out / "mlflow-chart-compare.png")
        ids = json.dumps([r.info.run_id for r in latest])
        page.call("Emulation.setDeviceMetricsOverride", width=1500, height=2600, deviceScaleFactor=1, mobile=False)
        page.goto(f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([exp])}", settle=8)
        page.shot(args.out / "mlflow-compare-runs.png")
        page.call("Emulation.setDeviceMetricsOverride", width=1500, height=950, deviceScaleFactor=1, mobile=False)
        page.goto(f"{base}/#/models/journeyml-churn")
        page.shot(args.out / "mlflow-model.png")
        if nba is not None:
            page.goto(f"{base}/#/experiments/{nba.experiment_id}/runs?compareRunsMode=CHART")
            page.shot(args.out / "mlflow-nba.png")
    finally:
        browser.terminate()
        ui.terminate()
        browser.wait(10)
        ui.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
