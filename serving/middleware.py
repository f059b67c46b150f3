"""ASGI middleware: request ids, body size limits (also for chunked bodies), access logs."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import error_body
from serving.observability import Metrics, log

Scope = dict[str, Any]


class BodyTooLarge(StarletteHTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body parsing passes it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class RequestGuard:
    """Counts body bytes as they arrive, so a chunked body without Content-Length is limited too."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics, logger: Any) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        if len(request_id) > 64 or not request_id.replace("-", "").isalnum():
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500}
        limit = self.max_body_bytes

        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, 413, "payload_too_large", f"request body over {limit} bytes", request_id)
            self._done(scope, 413, started, request_id)
            return

        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        response_started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _reject(send, 413, "payload_too_large", f"request body over {limit} bytes", request_id)
            status_holder["status"] = 413
        except Exception as exc:  # last line of defence: never a traceback to the client
            self.logger.error("unhandled", extra={"fields": {"request_id": request_id, "error": type(exc).__name__}})
            if not response_started:
                await _reject(send, 500, "internal_error", "internal error", request_id)
            status_holder["status"] = 500
        self._done(scope, status_holder["status"], started, request_id)

    def _done(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(scope.get("method", ""), path, str(status)).inc()
        self.metrics.latency.labels(path).observe(elapsed)
        extra = scope.get("state", {}).get("log_fields", {})
        log(
            self.logger,
            "request",
            request_id=request_id,
            method=scope.get("method"),
            path=path,
            status=status,
            latency_ms=round(elapsed * 1000, 3),
            **extra,
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _reject(send: Any, status: int, code: str, message: str, request_id: str) -> None:
    body = json.dumps(error_body(code, message, request_id)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
