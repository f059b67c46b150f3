"""Structured JSON logs and Prometheus metrics for the API."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOGGER_NAME = "journeyml.api"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exception"] = record.exc_info[0].__name__  # the type only; traces stay out of responses
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def log(logger: logging.Logger, message: str, **fields: Any) -> None:
    logger.info(message, extra={"fields": fields})


class Metrics:
    """One registry per app instance (per worker process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "journeyml_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "journeyml_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.model_version = Gauge(
            "journeyml_model_version", "Loaded model version per task", ["task"], registry=self.registry
        )
        self.scores = Histogram(
            "journeyml_score",
            "Distribution of served scores",
            ["task"],
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=self.registry,
        )
        self.feature_age = Histogram(
            "journeyml_feature_age_seconds",
            "Age of the online features used to score",
            buckets=(60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400),
            registry=self.registry,
        )
        self.degraded = Counter(
            "journeyml_degraded_total", "Responses served with fallback features", registry=self.registry
        )
        self.events = Counter("journeyml_events_total", "Events posted", ["outcome"], registry=self.registry)
