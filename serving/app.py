"""The FastAPI app: thin routers over one Runtime (models, features, policy) per worker process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.settings import Settings, get_settings
from serving.errors import ApiError, error_body
from serving.middleware import RequestGuard
from serving.observability import Metrics, configure_logging, log
from serving.schemas import (
    MAX_IDS,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    InlineScoreRequest,
    ScoreRequest,
    ScoreResponse,
)
from serving.security import check_api_key


async def _authorized(request: Request) -> None:
    """check_api_key on the event loop: a sync dependency would cost a threadpool hop per request."""
    check_api_key(request)


Authorized = Annotated[None, Depends(_authorized)]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 503)}


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _runtime(request: Request) -> Any:
    runtime = request.app.state.runtime
    if runtime is None or not runtime.ready:
        raise ApiError(503, "not_ready", "models and features are still loading")
    return runtime


# Requests for up to this many customers are scored on the event loop: a few milliseconds of CPU
# that a threadpool hop (and threads taking the GIL from one another under load) made slower.
# Larger ones (reasons cost ~1 ms per customer) go to the threadpool so the loop keeps answering.
INLINE_CUSTOMERS = 4


def _score_response(
    request_id: str, degraded: bool, versions: dict[str, str], results: list[dict[str, Any]]
) -> Response:
    """The ScoreResponse, validated and serialised by pydantic in one step and returned as bytes.

    Returning a Response skips FastAPI's response_model pass, which for a sync endpoint validates
    the response again in a second threadpool hop; the schema (and the OpenAPI document) is the same."""
    body = ScoreResponse.model_validate(
        {"request_id": request_id, "degraded": degraded, "model_versions": versions, "results": results}
    )
    return Response(body.model_dump_json(), media_type="application/json")


def create_app(settings: Settings | None = None, runtime_factory: Callable[[Settings], Any] | None = None) -> FastAPI:
    """Build the app. The runtime (models, feature store) is created in the lifespan: after any fork."""
    settings = settings or get_settings()
    logger = configure_logging()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime_factory is None:
            from serving.runtime import Runtime

            factory: Callable[[Settings], Any] = Runtime.start
        else:
            factory = runtime_factory
        app.state.runtime = await asyncio.to_thread(factory, settings)
        runtime = app.state.runtime
        runtime.attach_metrics(metrics)
        log(logger, "ready", **runtime.status())
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="journeyml",
        version="0.1.0",
        description="Scores, reasons and next best actions for customer journeys.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.runtime = None
    app.state.api_keys = settings.api_key_list
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, _request_id(request), exc.details), status_code=exc.status
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type"))}
            for err in exc.errors()[:100]
        ]
        return JSONResponse(
            error_body("invalid_request", "the request does not match the schema", _request_id(request), details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail), _request_id(request)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled", extra={"fields": {"request_id": _request_id(request), "error": type(exc).__name__}})
        return JSONResponse(error_body("internal_error", "internal error", _request_id(request)), status_code=500)

    # Health answers are async: no threadpool hop, so they measure the event loop itself and do not
    # queue for a thread behind scoring work.
    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> JSONResponse:
        runtime = request.app.state.runtime
        if runtime is None or not runtime.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", **runtime.status()})

    @app.get("/metrics", tags=["health"])
    def prometheus(request: Request, _: Authorized) -> Response:
        runtime = request.app.state.runtime
        if runtime is not None:
            runtime.refresh_gauges()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score", response_model=ScoreResponse, tags=["scores"])
    async def score(body: ScoreRequest, request: Request, _: Authorized) -> Response:
        runtime = _runtime(request)
        ids = list(dict.fromkeys(body.customer_ids))[:MAX_IDS]
        tasks: list[str] | None = list(body.tasks) if body.tasks is not None else None
        if len(ids) <= INLINE_CUSTOMERS and runtime.scores_inline_safely:
            results, degraded, versions = runtime.score(ids, tasks, body.explain, body.actions)
        elif len(ids) <= INLINE_CUSTOMERS and runtime.reads_async:
            results, degraded, versions = await runtime.score_async(ids, tasks, body.explain, body.actions)
        else:
            results, degraded, versions = await run_in_threadpool(runtime.score, ids, tasks, body.explain, body.actions)
        request.scope["state"]["log_fields"] = {"customers": len(ids), "model_versions": versions, "degraded": degraded}
        return _score_response(_request_id(request), degraded, versions, results)

    @app.get("/v1/customers/{customer_id}/score", response_model=ScoreResponse, tags=["scores"])
    async def score_one(customer_id: str, request: Request, _: Authorized, explain: bool = True) -> Response:
        if not customer_id.strip() or len(customer_id) > 256:
            raise ApiError(422, "invalid_request", "customer_id must be 1-256 characters")
        return await score(ScoreRequest(customer_ids=[customer_id], explain=explain), request, None)

    @app.post("/v1/score/inline", response_model=ScoreResponse, tags=["scores"])
    def score_inline(body: InlineScoreRequest, request: Request, _: Authorized) -> Response:
        runtime = _runtime(request)
        events = [e.model_dump() for e in body.events]
        accepted, errors = runtime.validate_events(events, customer_id=body.customer_id)
        if errors:
            raise ApiError(422, "invalid_events", "some events are invalid", [e.model_dump() for e in errors])
        as_of = (
            pd.Timestamp(body.as_of).tz_convert("UTC")
            if body.as_of and body.as_of.tzinfo
            else (pd.Timestamp(body.as_of, tz="UTC") if body.as_of else None)
        )
        results, degraded, versions = runtime.score_inline(body.customer_id, accepted, as_of, body.tasks, body.explain)
        return _score_response(_request_id(request), degraded, versions, results)

    @app.post("/v1/events", response_model=EventsResponse, tags=["events"])
    def post_events(body: EventsRequest, request: Request, _: Authorized) -> EventsResponse:
        runtime = _runtime(request)
        accepted, errors = runtime.validate_events([e.model_dump() for e in body.events])
        if errors and not body.partial:
            metrics.events.labels("rejected").inc(len(errors))
            raise ApiError(
                422,
                "invalid_events",
                f"{len(errors)} of {len(body.events)} events are invalid; nothing was applied",
                [e.model_dump() for e in errors],
            )
        written, duplicates, refreshed, degraded = runtime.append_events(accepted)
        metrics.events.labels("accepted").inc(written)
        metrics.events.labels("duplicate").inc(duplicates)
        metrics.events.labels("rejected").inc(len(errors))
        return EventsResponse(
            request_id=_request_id(request),
            accepted=written,
            duplicates=duplicates,
            rejected=len(errors),
            errors=errors,
            customers_refreshed=refreshed,
            degraded=degraded,
        )

    _open_inference(app)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, metrics=metrics, logger=logger)
    return app


def _open_inference(app: FastAPI) -> None:
    """Open Inference Protocol v2 paths for KServe / Seldon users."""

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"])
    async def v2_ready(request: Request) -> JSONResponse:
        runtime = request.app.state.runtime
        ok = runtime is not None and runtime.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.post("/v2/models/{task}/infer", tags=["v2"])
    def v2_infer(task: str, body: dict[str, Any], request: Request, _: Authorized) -> dict[str, Any]:
        runtime = _runtime(request)
        if task not in ("churn", "next_purchase", "conversion", "clv"):
            raise ApiError(404, "not_found", f"no model {task!r}")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
            raise ApiError(422, "invalid_request", "inputs: [{name: customer_id, datatype: BYTES, data: [...]}]")
        ids = inputs[0].get("data")
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_IDS or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, "invalid_request", f"data must be 1-{MAX_IDS} customer id strings")
        results, _, versions = runtime.score(ids, [task], False, False)
        data = [r["scores"][task]["score"] for r in results]
        return {
            "model_name": task,
            "model_version": versions.get(task, ""),
            "outputs": [{"name": "score", "shape": [len(data)], "datatype": "FP64", "data": data}],
        }
