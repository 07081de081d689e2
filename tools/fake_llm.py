"""A fake OpenAI-compatible server with scriptable faults, for tests and benchmarks.

By default it answers `Echo: <last user message>` as a token stream framed exactly like OpenAI's
SSE. Scripted behaviours are consumed one per chat completion request, first in first out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_TOKEN = re.compile(r"\s*\S+")


class _Stopping(Exception):
    """The server is stopping: abandon the response in progress."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the server does for one chat completion request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    error_message: str = ""  # for status >= 400, in an OpenAI-style error body
    error_code: str | None = None
    text: str | None = None  # answer text, split into word tokens; None: the default echo
    tokens: Sequence[str] | None = None  # exact tokens, overriding `text`
    first_token_delay: float | None = None  # None: the server's default
    token_interval: float | None = None
    stall_before_headers: float = 0.0  # seconds before the response starts at all
    stall_after: int | None = None  # tokens sent before stalling mid-stream
    stall: float = 0.0
    drop_after: int | None = None  # tokens sent before the connection is cut
    cut_clean: bool = False  # end the body properly instead, but with no finish_reason or [DONE]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it; the Authorization value is masked."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at: float  # time.monotonic()

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a completion request."""
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []


def _error_body(message: str, status: int, code: str | None) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded"}.get(status, "invalid_request_error")
    kind = "server_error" if status >= 500 else kind
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeLLM:
    """The server: `await start()`, point a client at `url`, script faults, `await stop()`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = "fake-model",
        first_token_delay: float = 0.0,
        token_interval: float = 0.0,
    ) -> None:
        self.api_key = api_key  # None: any key (or none) is accepted
        self.model = model
        self.first_token_delay = first_token_delay
        self.token_interval = token_interval
        self.requests: list[RecordedRequest] = []
        self.active = 0  # chat completion requests being answered right now
        self._script: list[Behaviour] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._host = "127.0.0.1"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 picks a free port)."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client that hangs up mid-stall must not keep a handler alive;
        # shutdown_timeout: stop() wakes every stall, so in-flight handlers finish at once.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host, self._port = host, self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Wake every stalled response and close the listener and all connections."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The base_url to give an OpenAI client."""
        return f"http://{self._host}:{self._port}/v1"

    # -- scripting --------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next chat completion requests, in order."""
        self._script.extend(behaviours)

    def script_error(
        self,
        status: int,
        message: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next request with an HTTP error and an OpenAI-style error body."""
        message = message or f"fake error {status}"
        self.script(Behaviour(status, dict(headers or {}), message, code))

    def script_reply(
        self,
        text: str | None = None,
        *,
        tokens: Sequence[str] | None = None,
        first_token_delay: float | None = None,
        token_interval: float | None = None,
    ) -> None:
        """Stream the given text (split into words) or exact tokens."""
        self.script(
            Behaviour(
                text=text,
                tokens=tokens,
                first_token_delay=first_token_delay,
                token_interval=token_interval,
            )
        )

    def script_stall(self, seconds: float, *, before_headers: bool = False) -> None:
        """Go silent before the first token (after the headers unless `before_headers`)."""
        if before_headers:
            self.script(Behaviour(stall_before_headers=seconds))
        else:
            self.script(Behaviour(first_token_delay=seconds))

    def script_stall_mid_stream(self, after_tokens: int, seconds: float) -> None:
        """Send some tokens, then go silent."""
        self.script(Behaviour(stall_after=after_tokens, stall=seconds))

    def script_drop(
        self, after_tokens: int, *, text: str | None = None, clean: bool = False
    ) -> None:
        """Send some tokens, then cut the connection mid-body (or end the body, unfinished)."""
        self.script(Behaviour(text=text, drop_after=after_tokens, cut_clean=clean))

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until at least `count` requests were recorded."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def wait_idle(self) -> None:
        """Wait until no chat completion is being answered (clients that hung up included)."""
        await self._idle.wait()

    # -- handlers ---------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Any:
        try:
            body: Any = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        headers = {
            k: ("***" if k.lower() == "authorization" else v) for k, v in request.headers.items()
        }
        async with self._changed:
            self.requests.append(
                RecordedRequest(request.method, request.path, headers, body, time.monotonic())
            )
            self._changed.notify_all()
        return body

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key == self.api_key:
            return None
        # Real servers echo (part of) the rejected key; doing the same lets tests prove that
        # clients never copy the server's message into their own errors.
        message = f"Incorrect API key provided: {key}."
        return web.json_response(_error_body(message, 401, "invalid_api_key"), status=401)

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "fake-llm"}
        return web.json_response({"object": "list", "data": [model]})

    async def _pause(self, seconds: float) -> None:
        """Sleep; raise _Stopping instead when the server stops meanwhile."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        if self._stopping.is_set():
            raise _Stopping

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self._track_active(+1)
        try:
            return await self._answer(request)
        except (_Stopping, ConnectionResetError):
            # The client hung up or the server is stopping: nothing is left to answer.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        finally:
            self._track_active(-1)  # no await here: a cancelled handler must still be counted

    def _track_active(self, change: int) -> None:
        self.active += change
        if self.active:
            self._idle.clear()
        else:
            self._idle.set()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            message = "'messages' is a required property"
            return web.json_response(_error_body(message, 400, None), status=400)
        behaviour = self._script.pop(0) if self._script else Behaviour()
        await self._pause(behaviour.stall_before_headers)
        if behaviour.status >= 400:
            payload = _error_body(behaviour.error_message, behaviour.status, behaviour.error_code)
            return web.json_response(payload, status=behaviour.status, headers=behaviour.headers)
        tokens = self._tokens(body["messages"], behaviour)
        if body.get("stream"):
            return await self._stream(request, body, behaviour, tokens)
        await self._pause(self._first_delay(behaviour))
        return web.json_response(self._completion(body, tokens))

    def _tokens(self, messages: list[dict[str, Any]], behaviour: Behaviour) -> list[str]:
        if behaviour.tokens is not None:
            return list(behaviour.tokens)
        text = behaviour.text
        if text is None:
            users = [m for m in messages if m.get("role") == "user"]
            text = f"Echo: {users[-1].get('content', '') if users else ''}"
        return _TOKEN.findall(text)

    def _first_delay(self, behaviour: Behaviour) -> float:
        if behaviour.first_token_delay is not None:
            return behaviour.first_token_delay
        return self.first_token_delay

    def _usage(self, body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }

    def _completion(self, body: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(tokens)},
            "logprobs": None,
            "finish_reason": "stop",
        }
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": self._usage(body, tokens),
        }

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        behaviour: Behaviour,
        tokens: list[str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": None,
        }

        async def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk = {**base, "choices": choices}
            if include_usage:
                chunk["usage"] = usage  # OpenAI sends "usage": null on every other chunk
            try:
                data = json.dumps(chunk, ensure_ascii=False).encode()
            except UnicodeEncodeError:  # a scripted lone surrogate: JSON escapes it, UTF-8 cannot
                data = json.dumps(chunk).encode()
            await response.write(b"data: " + data + b"\n\n")

        def delta(content: dict[str, str], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        await send(delta({"role": "assistant", "content": ""}))
        await self._pause(self._first_delay(behaviour))
        interval = (
            self.token_interval if behaviour.token_interval is None else behaviour.token_interval
        )
        for index, token in enumerate(tokens[: behaviour.drop_after]):
            if index == behaviour.stall_after:
                await self._pause(behaviour.stall)
            elif index:
                await self._pause(interval)
            await send(delta({"content": token}))
        if behaviour.drop_after is not None:
            return await self._drop(request, response, clean=behaviour.cut_clean)
        await send(delta({}, "stop"))
        if include_usage:
            await send([], self._usage(body, tokens))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    async def _drop(
        request: web.Request, response: web.StreamResponse, *, clean: bool
    ) -> web.StreamResponse:
        if clean:
            # A proxy that gives up politely: a well-formed body that just stops.
            await response.write_eof()
        elif request.transport is not None:
            # No terminating zero-length chunk: what a crashed upstream or a dead proxy looks
            # like to the client, an incomplete chunked body.
            request.transport.close()
        return response


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeLLM(
        api_key=args.api_key,
        first_token_delay=args.first_token_delay,
        token_interval=args.token_interval,
    )
    await fake.start(args.host, args.port)
    print(f"fake LLM listening on {fake.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m tools.fake_llm`: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.fake_llm", description="Fake OpenAI-compatible chat server"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--first-token-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--token-interval", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
