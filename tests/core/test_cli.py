from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from core.cli import _register, app
from core.contract import EVENT_SCHEMA, EVENT_TYPE_STAGE, contract_markdown
from core.settings import get_settings

runner = CliRunner()


def test_settings_put_everything_under_home(workspace: Path) -> None:
    s = get_settings()
    assert s.root == workspace.resolve()
    for path in (s.events_dir, s.quarantine_dir, s.features_dir, s.feast_dir, s.scores_dir):
        assert workspace.resolve() in path.parents
    assert s.tracking_uri == f"sqlite:///{workspace.resolve() / 'mlflow.db'}"
    assert not workspace.exists(), "building settings must not create anything"


def test_importing_the_packages_has_no_side_effects(tmp_path: Path) -> None:
    code = "import core.cli, core.settings, features.events.ingest, features.cli"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


def test_ingest_json_summary_and_failure_without_traceback(workspace: Path, tmp_path: Path) -> None:
    _register()
    src = tmp_path / "e.csv"
    src.write_text("customer_id,event_time,event_type\nc1,2025-01-01T00:00:00Z,login\nc2,2025-01-01,flying\n")
    result = runner.invoke(app, ["ingest", str(src), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (2, 1, 1)
    assert summary["quarantine_reasons"] == {"unknown_event_type": 1}

    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--json"])
    assert missing.exit_code == 1
    body = json.loads(missing.stdout)
    assert body["ok"] is False and "no such file" in body["error"]
    assert "Traceback" not in missing.output

    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("kind: [unclosed")
    out = runner.invoke(app, ["ingest", str(src), "--mapping", str(bad_mapping), "--json"])
    assert out.exit_code == 1 and "YAML" in json.loads(out.stdout)["error"]


def test_contract_doc_lists_every_event_type() -> None:
    doc = contract_markdown()
    assert all(f"`{name}`" in doc for name in EVENT_TYPE_STAGE)
    assert str(EVENT_SCHEMA.field("event_time").type) == "timestamp[us, tz=UTC]"
