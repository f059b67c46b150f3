"""API keys: from settings only, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from serving.errors import ApiError


def check_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.api_keys
    given = request.headers.get("x-api-key", "")
    ok = False
    for key in keys:  # compare against every key so timing does not reveal which one matched
        ok |= hmac.compare_digest(given.encode(), key.encode())
    if not given or not ok:
        raise ApiError(401, "unauthorized", "missing or invalid X-API-Key")
