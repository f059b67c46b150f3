"""The API reference (docs/api.md), generated from the app's own OpenAPI schema.

    python -m serving.apidoc --out docs/api.md
    python -m serving.apidoc --check docs/api.md   # exit 1 when stale (a test runs this)

Every path, method, parameter, request and response field, with its type and bounds, comes
from `create_app().openapi()`; only the prose and the examples below are written by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Prose and an example per endpoint; the schema gives everything else.
NOTES: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("get", "/health/live"): ("The process is up. No key needed.", None),
    ("get", "/health/ready"): (
        "200 once models and features are loaded, with the model version per task, where they came from "
        "(`registry` or the last-known-good `bundle_cache`) and whether the online store answers; 503 before.",
        None,
    ),
    ("get", "/metrics"): (
        "Prometheus text: requests and latency histograms by endpoint, model versions, score distributions, "
        "online-feature freshness, degraded answers.",
        None,
    ),
    ("post", "/v1/score"): (
        "Scores, percentiles, stage, next-best actions and (with `explain`) reasons for up to 1,000 customers. "
        "Unknown customers get cold-start scores with `cold_start: true`, not an error. `degraded: true` means "
        "the online store was unreachable and fallback features were used.",
        {"customer_ids": ["c000001", "c000002"], "explain": True},
    ),
    ("get", "/v1/customers/{customer_id}/score"): ("One customer: the same answer as `POST /v1/score`.", None),
    ("post", "/v1/score/inline"): (
        "Score a customer from events in the body (a journey the store has not seen), through the same "
        "feature definitions. Every event must belong to `customer_id`.",
        {
            "customer_id": "visitor-42",
            "events": [
                {"customer_id": "visitor-42", "event_time": "2026-11-24T10:00:00Z", "event_type": "session_start"},
                {"customer_id": "visitor-42", "event_time": "2026-11-24T10:03:00Z", "event_type": "add_to_cart"},
            ],
        },
    ),
    ("post", "/v1/events"): (
        "Up to 10,000 events in the event contract. All or nothing: any invalid item gives 422 with one error "
        "per item and nothing is applied, unless `partial: true`, which applies the valid ones. Accepted events "
        "are durably appended to the event store before the answer and pushed to the online features, so the "
        "next score reflects them. Re-sending the same `event_id`s changes nothing (they count as duplicates).",
        {
            "events": [
                {
                    "event_id": "app-000123",
                    "customer_id": "c000001",
                    "event_time": "2026-11-24T10:05:00Z",
                    "event_type": "purchase",
                    "channel": "app",
                    "value": 42.5,
                }
            ]
        },
    ),
    ("get", "/v2/health/live"): ("Open Inference Protocol v2 liveness (KServe, Seldon).", None),
    ("get", "/v2/health/ready"): ("Open Inference Protocol v2 readiness.", None),
    ("post", "/v2/models/{task}/infer"): (
        "Open Inference Protocol v2 inference for one task: the first input holds customer ids (BYTES), "
        "the output `score` holds the task's score per customer.",
        {"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": ["c000001"]}]},
    ),
}


def _ref(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def type_of(schema: dict[str, Any]) -> str:
    """A short type: `string (1-256 chars)`, `array[EventIn] (1-10000)`, `Reason | null`."""
    name = _ref(schema)
    if name:
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " \\| ".join(type_of(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        out = f"array[{type_of(schema.get('items', {}))}]"
        lo, hi = schema.get("minItems"), schema.get("maxItems")
    elif kind == "string":
        out = "string"
        if "enum" in schema:
            out += " (" + ", ".join(f"`{v}`" for v in schema["enum"]) + ")"
        if "format" in schema:
            out += f" ({schema['format']})"
        lo, hi = schema.get("minLength"), schema.get("maxLength")
    elif kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        out, lo, hi = f"object of {type_of(schema['additionalProperties'])}", None, None
    else:
        out, lo, hi = str(kind), schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    if lo is not None or hi is not None:
        out += f" [{'' if lo is None else lo}..{'' if hi is None else hi}]"
    return out


def schema_table(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {type_of(schema)}", ""]
    required = set(schema.get("required", []))
    extra = "forbidden" if schema.get("additionalProperties") is False else "allowed"
    lines += [f"Unknown fields: {extra}.", ""]
    lines += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
    for field, sub in props.items():
        default = json.dumps(sub["default"]) if "default" in sub else ""
        desc = (sub.get("description") or "").replace("\n", " ")
        lines.append(f"| `{field}` | {type_of(sub)} | {'yes' if field in required else ''} | {default} | {desc} |")
    return [*lines, ""]


def render(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    lines = [
        "# API reference",
        "",
        "<!-- Generated by `python -m serving.apidoc --out docs/api.md` from the app's OpenAPI schema;"
        " do not edit by hand (a test checks it is current). -->",
        "",
        f"{info.get('title', 'journeyml')} {info.get('version', '')}. Start the server with `journey serve`; "
        "the live schema is at `/openapi.json` and an interactive page at `/docs`.",
        "",
        "Every endpoint except the health checks needs the header `X-API-Key` with one of the keys in "
        "`JOURNEY_API_KEYS` (401 otherwise). Bodies over `JOURNEY_MAX_BODY_BYTES` get 413, with or without a "
        "Content-Length. Errors are JSON with one stable shape, "
        '`{"error": {"code": ..., "message": ..., "request_id": ..., "details": [...]}}`, and never carry a '
        "stack trace. Every response has an `X-Request-ID` header.",
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    paths = spec.get("paths", {})
    for path, ops in paths.items():
        for method, op in ops.items():
            anchor = f"{method}-{path}".lower().replace("/", "-").replace("{", "").replace("}", "").replace("--", "-")
            lines.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {op.get('summary', '')} |")
    lines.append("")
    for path, ops in paths.items():
        for method, op in ops.items():
            anchor = f"{method}-{path}".lower().replace("/", "-").replace("{", "").replace("}", "").replace("--", "-")
            note, example = NOTES.get((method, path), ("", None))
            lines += [f'## {method.upper()} {path} <a id="{anchor}"></a>', ""]
            prose = (op.get("description") or note).strip()
            if prose:
                lines += [prose, ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | required |", "|---|---|---|---|"]
                for p in params:
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {type_of(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else ''} |"
                    )
                lines.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += [f"Request body: {type_of(body)}", ""]
            responses = op.get("responses", {})
            if responses:
                codes = []
                for code, resp in responses.items():
                    schema = resp.get("content", {}).get("application/json", {}).get("schema")
                    shape = f" ({type_of(schema)})" if schema else ""
                    codes.append(f"`{code}` {resp.get('description', '')}{shape}")
                lines += ["Responses: " + "; ".join(codes) + ".", ""]
            if example is not None:
                url_path = path.replace("{task}", "churn").replace("{customer_id}", "c000001")
                lines += [
                    "```bash",
                    f"curl -s -X {method.upper()} http://127.0.0.1:8000{url_path} \\",
                    "  -H 'X-API-Key: demo-key' -H 'content-type: application/json' \\",
                    f"  -d '{json.dumps(example)}'",
                    "```",
                    "",
                ]
    lines += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        lines += schema_table(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def current() -> str:
    from core.settings import Settings
    from serving.app import create_app

    return render(create_app(Settings(api_keys="docs")).openapi())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args(argv)
    text = current()
    if args.out:
        args.out.write_text(text)
        return 0
    if not args.check.exists() or args.check.read_text() != text:
        print(f"{args.check} is stale: run python -m serving.apidoc --out {args.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
