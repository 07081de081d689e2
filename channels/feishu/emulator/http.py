"""The HTTP plumbing of the Feishu emulator: injected faults, latency and the call record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from channels.emulator.control import CONTROL_PREFIX
from channels.feishu.emulator.state import (
    APP_ID_KEY,
    DISCOVERY_PATH,
    ApiError,
    CallRecord,
    EmulatorState,
    stable_hex,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SECRET_FIELDS = frozenset({"AppSecret", "app_secret"})


def _fault_body(path: str, status: int | None, code: int | None, msg: str) -> dict[str, Any]:
    if code is None:
        code = {429: 99991400, 400: 99992402, 401: 99991663, 403: 99991672}.get(status or 0, 1)
    body: dict[str, Any] = {"code": code, "msg": msg or "injected fault"}
    if path != DISCOVERY_PATH:
        body["error"] = {"log_id": stable_hex("fault", str(time.time()), length=32)}
    return body


def recording_middleware(state: EmulatorState, stopping: asyncio.Event) -> Middleware:
    """Applies faults and latency (not to the control plane) and records every call."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        arrived = time.monotonic()
        raw = await request.read()  # cached by aiohttp, so handlers can read it again
        fault = state.take_fault(request.method, request.path)
        delay = state.latency + (fault.delay if fault else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
        response: web.StreamResponse
        if fault is not None and fault.answers:
            status = fault.status or (200 if request.path == DISCOVERY_PATH else 400)
            body = _fault_body(request.path, fault.status, fault.code, fault.msg)
            response = web.json_response(body, status=status)
        else:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = web.json_response(exc.body(), status=exc.status, headers=exc.headers)
            except web.HTTPException as exc:  # e.g. 404 for an endpoint the emulator lacks
                _record(state, request, arrived, raw, status=exc.status, code=None, faulted=False)
                raise
        _record(
            state,
            request,
            arrived,
            raw,
            status=response.status,
            code=_code_of(response),
            faulted=bool(fault and fault.answers),
        )
        return response

    return middleware


def _record(
    state: EmulatorState,
    request: web.Request,
    arrived: float,
    raw: bytes,
    *,
    status: int,
    code: int | None,
    faulted: bool,
) -> None:
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
    if isinstance(body, dict):
        # Recordings end up in test output and control-plane answers: keep credentials out.
        body = {k: "***" if k in _SECRET_FIELDS else v for k, v in body.items()}
    state.calls.append(
        CallRecord(
            len(state.calls) + 1,
            arrived,
            request.method,
            request.path,
            dict(request.query),
            body,
            status,
            code,
            request.get(APP_ID_KEY, ""),
            faulted,
        )
    )
    state.notify()


def _code_of(response: web.StreamResponse) -> int | None:
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return None
    try:
        body = json.loads(response.text or "null")
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None
