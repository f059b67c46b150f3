"""Command output: one JSON summary on stdout with --json, human text and progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

err = Console(stderr=True)


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for what the project writes: numpy values and arrays, timestamps."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def emit(summary: dict[str, Any], json_out: bool, human: str | None = None) -> None:
    """Print the command's summary: JSON on stdout, or a readable text."""
    if json_out:
        sys.stdout.write(json.dumps(summary, default=json_default, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        if human is not None:
            err.print(human)
        else:
            for key, value in summary.items():
                err.print(f"[bold]{key}[/bold]: {value}")


def fail(message: str, json_out: bool, code: int = 1, **extra: Any) -> NoReturn:
    """Stop the command with a clear one-line message and no traceback."""
    message = " ".join(str(message).split())
    if json_out:
        sys.stdout.write(json.dumps({**extra, "ok": False, "error": message}, default=json_default) + "\n")
    else:
        err.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def progress(message: str) -> None:
    err.print(message, style="dim")
