"""The HTTP plumbing every emulator shares: platform errors, injected faults and latency, and the
record of every call (with credentials masked)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from channels.emulator.control import CONTROL_PREFIX
from channels.emulator.state import EmulatorStateBase, Fault, RecordedCall

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
APP_KEY = web.RequestKey("emulator_app", str)  # the app a request turned out to be for


A = TypeVar("A")  # a platform's app record
CodeT = TypeVar("CodeT", int, str)


class ApiError(Exception, Generic[CodeT]):
    """A platform API's error answer: an HTTP status, the platform's code and message."""

    def __init__(
        self, status: int, code: CodeT, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code: CodeT = code
        self.message = message
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body the platform sends with this error."""
        raise NotImplementedError

    def response(self) -> web.Response:
        """The whole answer."""
        return web.json_response(self.body(), status=self.status, headers=self.headers)


Invalid = Callable[[str], ApiError[Any]]  # the platform's error for "not JSON" / "not an object"


def loaded_object(text: str, invalid: Invalid) -> dict[str, Any]:
    """`text` as a JSON object; else `invalid("JSON")` or `invalid("a JSON object")`."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise invalid("JSON") from exc
    if not isinstance(value, dict):
        raise invalid("a JSON object")
    return value


async def json_object(request: web.Request, invalid: Invalid) -> dict[str, Any]:
    """The request body as a JSON object, else the platform's error (see `loaded_object`)."""
    return loaded_object(await request.text(), invalid)


def known_app(
    request: web.Request, apps: Mapping[str, A], app_id: object, unknown: ApiError[Any]
) -> A:
    """The app a request names, remembered on the request for the call record; else `unknown`."""
    app = apps.get(str(app_id))
    if app is None:
        raise unknown
    request[APP_KEY] = str(app_id)
    return app


class Recorder(Protocol):
    """What a platform tells the shared plumbing: how faults answer, how calls are recorded."""

    @property
    def state(self) -> EmulatorStateBase[Any, Any, Any]:
        """Faults, latency and the call record."""
        ...

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the emulator stops: injected delays end at once."""
        ...

    def fault_response(self, request: web.Request, fault: Any) -> web.Response:
        """The answer of an injected fault that replaces the real one."""
        ...

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> RecordedCall:
        """The platform's record of one call (`response` is None when a route raised)."""
        ...


def scrubbed(body: Any, secret_fields: frozenset[str]) -> Any:
    """`body` with the values of secret top-level fields masked (recordings reach test output)."""
    if not isinstance(body, dict):
        return body
    return {k: "***" if k in secret_fields else v for k, v in body.items()}


def parsed(raw: bytes) -> Any:
    """A request body as JSON, else as text; None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def recording_middleware(recorder: Recorder, secret_fields: frozenset[str]) -> Middleware:
    """Applies faults and latency (not to the control plane) and records every call."""

    def record(
        request: web.Request,
        arrived: float,
        raw: bytes,
        status: int,
        response: web.StreamResponse | None,
        *,
        faulted: bool,
    ) -> None:
        state = recorder.state
        body = scrubbed(parsed(raw), secret_fields)
        call = RecordedCall(
            len(state.calls) + 1,
            arrived,
            request.method,
            request.path,
            dict(request.query),
            body,
            status,
            faulted,
        )
        state.record(recorder.call_record(request, response, call))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        arrived = time.monotonic()
        raw = await request.read()  # cached by aiohttp, so handlers can read it again
        fault: Fault | None = recorder.state.take_fault(request.method, request.path)
        delay = recorder.state.latency + (fault.delay if fault else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder.stopping.wait(), delay)
        response: web.StreamResponse
        if fault is not None and fault.answers:
            response = recorder.fault_response(request, fault)
        else:
            try:
                response = await handler(request)
            except ApiError as exc:  # any platform's
                response = exc.response()
            except web.HTTPException as exc:  # e.g. 404 for an endpoint the emulator lacks
                record(request, arrived, raw, exc.status, None, faulted=False)
                raise
        faulted = fault is not None and fault.answers
        record(request, arrived, raw, response.status, response, faulted=faulted)
        return response

    return middleware
