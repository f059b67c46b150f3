"""The `journey` command: one sub-command per stage of the data flow."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="journey",
    help="journeyml: customer journey features, predictive scores and next best actions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """journeyml command line. Every command takes --json for one machine-readable summary on stdout."""


def _register() -> None:
    # Imported lazily so `journey --help` stays fast and nothing heavy loads at import time.
    from features.cli import register as register_features

    register_features(app)
    for module in ("features.simulator.cli", "training.cli", "training.nba_cli", "serving.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue
            raise
        mod.register(app)


def main() -> None:
    import os

    # Must be set before LightGBM loads: spinning OpenMP threads made fits ~10x slower on 2 busy cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # MLflow draws a progress bar for every local artifact it reads back: noise on stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _register()
    try:
        app()
    except Exception as exc:  # an unexpected failure: one clear line, no traceback (JOURNEY_DEBUG=1 shows it)
        if os.environ.get("JOURNEY_DEBUG"):
            raise
        _fail_unexpected(exc)


def _fail_unexpected(exc: Exception) -> None:
    import json
    import sys

    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        parts = [f"JOURNEY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        message = "invalid setting " + "; ".join(parts)
    else:
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
    if "--json" in sys.argv:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    sys.stderr.write(f"error: {message} (JOURNEY_DEBUG=1 shows the traceback)\n")
    sys.exit(1)
