"""What the Feishu emulator adds to the shared HTTP plumbing: how an injected fault answers, and
the business `code` of every answer, which the call record keeps."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from channels.feishu.emulator.state import DISCOVERY_PATH, Fault, stable_hex


def fault_response(request: web.Request, fault: Fault) -> web.Response:
    """Discovery answers HTTP 200 with only a `code` (as the SDK expects), the OpenAPI 400."""
    status = fault.status or (200 if request.path == DISCOVERY_PATH else 400)
    code = fault.code
    if code is None:
        code = {429: 99991400, 400: 99992402, 401: 99991663, 403: 99991672}.get(
            fault.status or 0, 1
        )
    body: dict[str, Any] = {"code": code, "msg": fault.msg or "injected fault"}
    if request.path != DISCOVERY_PATH:
        body["error"] = {"log_id": stable_hex("fault", str(time.time()), length=32)}
    return web.json_response(body, status=status)


def code_of(response: web.StreamResponse | None) -> int | None:
    """The business `code` of a JSON answer, None when it has none."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return None
    try:
        body = json.loads(response.text or "null")
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None
