"""`journey serve` (the API) and `journey score` (batch scoring)."""

from __future__ import annotations

import typer

from core.output import fail


def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes (each loads its own models)."),
    json_out: bool = typer.Option(False, "--json", help="Accepted for symmetry; logs are JSON lines on stderr."),
) -> None:
    """Start the scoring API under uvicorn. Models load in each worker after the fork."""
    import uvicorn

    from core.settings import get_settings

    settings = get_settings()
    if not settings.api_key_list:
        fail(
            "set JOURNEY_API_KEYS (comma-separated) before starting the API: every endpoint but health needs a key",
            json_out,
        )
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    # Batch scoring, backtests and the report live in their own modules (one stage, one module).
    for module, command in (("serving.batch", "score"), ("serving.backtest", "backtest"), ("serving.report", "report")):
        try:
            mod = __import__(module, fromlist=["command"])
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        app.command(command)(mod.command)
