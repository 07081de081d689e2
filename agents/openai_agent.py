"""The OpenAI-compatible streaming agent: our own retry, timeout and error classification policy.

The client's built-in retries are off (`max_retries=0`): a retry is only safe before the first
delta reached the caller, and only this module knows when that is. Written against openai 2.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

import httpx
import openai
from openai import omit
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from agents.base import AgentRequest
from agents.config import OpenAIAgentConfig
from common.backoff import Backoff, Rng
from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.redact import scrub
from common.retry_after import retry_after

logger = logging.getLogger(__name__)

# 0.5 s before the first retry, doubled for each next one up to 8 s; equal jitter: never zero (a
# storm of instant retries), never synchronised across replies
RETRY_BACKOFF = Backoff(initial=0.5, maximum=8.0)
RETRY_AFTER_CAP = 30.0  # a server hint longer than this is not worth keeping a user waiting for
CONNECT_TIMEOUT_CAP = 10.0
# The openai client refuses to start without a key; local servers ignore whatever is sent.
NO_KEY_PLACEHOLDER = "unused"
# Fields in which OpenAI-compatible servers (vLLM, DeepSeek, Ollama) stream reasoning text.
_REASONING_FIELDS = ("reasoning_content", "reasoning")
_DETAIL_LIMIT = 200
# the server's wait hint: OpenAI's own `retry-after-ms` first, then the standard header
WAIT_HEADERS = ("retry-after-ms", "retry-after")

# One-time costs paid at import (daemon startup) rather than inside the event loop on the first
# answer, where together they stalled it for 0.1-1 s: modules that openai 2.x, httpx 0.28 and
# anyio 4 import lazily, and the CA bundle, loaded once and shared instead of once per agent.
for _module in ("openai.resources", "httpcore", "anyio._backends._asyncio"):
    importlib.import_module(_module)
_TLS_CONTEXT = httpx.create_ssl_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR like httpx

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
UsageCallback = Callable[[int, int], None]


def _server_detail(exc: openai.APIError, secret: str) -> str:
    """The server's own error message, shortened and with anything key-like masked."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        return ""
    return f": {scrub(message, (secret,))[:_DETAIL_LIMIT]}"


def classify_error(exc: Exception, *, agent: str, secret: str = "") -> ChannelError:
    """Map an openai/httpx exception to the common.errors taxonomy, without secrets."""
    where = f"agent {agent!r}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            # No server detail: servers echo (part of) the rejected key in this message.
            return AuthError(f"{where}: credentials rejected (HTTP {status})")
        if isinstance(exc, openai.RateLimitError):
            if body.get("code") == "insufficient_quota":
                return PermanentError(f"{where}: quota exhausted (HTTP 429 insufficient_quota)")
            hint = retry_after(exc.response.headers, WAIT_HEADERS)
            return RateLimited(f"{where}: rate limited (HTTP 429)", retry_after=hint)
        if status >= 500 or status in (408, 409):
            return TransientError(f"{where}: server error (HTTP {status})")
        return PermanentError(
            f"{where}: request rejected (HTTP {status}){_server_detail(exc, secret)}"
        )
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return TransientError(f"{where}: request timed out ({type(exc).__name__})")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"{where}: cannot reach the server ({type(exc).__name__})")
    if isinstance(exc, openai.APIError):
        # An `error` event inside an otherwise healthy stream (overload, upstream failure).
        return TransientError(f"{where}: error during the stream{_server_detail(exc, secret)}")
    if isinstance(exc, httpx.HTTPError):
        return TransientError(f"{where}: stream broke mid-answer ({type(exc).__name__})")
    if isinstance(exc, json.JSONDecodeError):
        return TransientError(f"{where}: malformed stream event from the server")
    return PermanentError(f"{where}: unexpected client error ({type(exc).__name__})")


class OpenAIAgent:
    """Streams chat completions from an OpenAI-compatible server."""

    def __init__(
        self,
        name: str,
        config: OpenAIAgentConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Rng | None = None,
        on_usage: UsageCallback | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_usage = on_usage
        self._secret = config.api_key.get_secret_value()
        self._closed = False
        # A backstop only: the asyncio deadlines in stream() are the real policy.
        timeout = httpx.Timeout(
            config.timeout, connect=min(CONNECT_TIMEOUT_CAP, config.first_token_timeout)
        )
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=self._secret or NO_KEY_PLACEHOLDER,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=_TLS_CONTEXT, timeout=timeout),
        )

    def __repr__(self) -> str:
        return f"OpenAIAgent(name={self.name!r}, model={self.config.model!r})"

    async def aclose(self) -> None:
        """Close the HTTP connection pool; safe to call twice."""
        if not self._closed:
            self._closed = True
            await self._client.close()

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the answer's text deltas; retry only while nothing has been yielded."""
        messages = self._messages(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout
        attempt = 0
        while True:
            yielded = False
            try:
                # aclosing: an abandoned answer releases its connection now, not at GC time.
                attempt_deltas = self._attempt(messages, request, deadline)
                async with contextlib.aclosing(attempt_deltas) as deltas:
                    async for delta in deltas:
                        yielded = True
                        yield delta
                return
            except ChannelError as exc:
                if yielded or not exc.retryable or attempt >= self.config.max_retries:
                    raise
                delay = self._retry_delay(exc, attempt)
                if loop.time() + delay >= deadline:
                    raise  # the answer's budget is spent (always so after a total timeout)
                attempt += 1
                logger.warning(
                    "%s; retry %d of %d in %.2fs", exc, attempt, self.config.max_retries, delay
                )
                await self._sleep(delay)

    def _retry_delay(self, exc: ChannelError, attempt: int) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, RETRY_AFTER_CAP)
        return RETRY_BACKOFF.delay(attempt + 1, self._rng)

    def _messages(self, request: AgentRequest) -> list[ChatCompletionMessageParam]:
        messages: list[ChatCompletionMessageParam] = []
        prompt = request.system_prompt or self.config.system_prompt
        if prompt:
            messages.append({"role": "system", "content": prompt})
        keep = self.config.history_messages
        for turn in request.history[-keep:] if keep else ():
            if turn.role == "user":
                messages.append({"role": "user", "content": turn.content})
            else:
                messages.append({"role": "assistant", "content": turn.content})
        messages.append({"role": "user", "content": request.user_text})
        return messages

    async def _attempt(
        self, messages: list[ChatCompletionMessageParam], request: AgentRequest, deadline: float
    ) -> AsyncGenerator[str, None]:
        """One request: yields deltas, raises classified errors; never retries by itself."""
        loop = asyncio.get_running_loop()
        first_deadline = min(deadline, loop.time() + self.config.first_token_timeout)
        cfg = self.config
        stream = await self._bounded(
            self._client.chat.completions.create(
                model=cfg.model,
                # the messages go as they are, in the body's extra JSON (which replaces this empty
                # list): the client otherwise walks every message and key of the history to
                # transform it, about 4 ms of CPU per request at 20 turns, for plain dicts that
                # need nothing
                messages=[],
                extra_body={"messages": messages},
                stream=True,
                stream_options={"include_usage": True} if cfg.stream_usage else omit,
                temperature=cfg.temperature if cfg.temperature is not None else omit,
                max_tokens=cfg.max_tokens if cfg.max_tokens is not None else omit,
                user=request.user_id or omit,
            ),
            first_deadline,
            deadline,
        )
        try:
            started = complete = False
            while True:
                chunk = await self._bounded(
                    anext(stream, None), deadline if started else first_deadline, deadline
                )
                if chunk is None:
                    break
                complete = self._note_usage(chunk) or complete
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                complete = complete or choice.finish_reason is not None
                started = started or _carries_tokens(choice.delta)
                if choice.delta.content:
                    yield choice.delta.content
            if not complete:
                # The body ended cleanly but the answer did not (no finish_reason, no usage):
                # a proxy cut it short. Saying so beats presenting a truncated answer as whole.
                raise TransientError(f"agent {self.name!r}: stream ended before the answer did")
        finally:
            with contextlib.suppress(httpx.HTTPError):
                await stream.close()

    async def _bounded(self, awaitable: Awaitable[T], until: float, deadline: float) -> T:
        """Await one network step under `until`, turning every failure into a classified one."""
        try:
            async with asyncio.timeout_at(until):
                return await awaitable
        except TimeoutError:
            if until >= deadline:
                raise TransientError(
                    f"agent {self.name!r}: answer timed out after {self.config.timeout:g}s"
                ) from None
            raise TransientError(
                f"agent {self.name!r}: timed out after {self.config.first_token_timeout:g}s "
                "waiting for the first token"
            ) from None
        except (openai.OpenAIError, httpx.HTTPError, json.JSONDecodeError) as exc:
            raise classify_error(exc, agent=self.name, secret=self._secret) from exc

    def _note_usage(self, chunk: ChatCompletionChunk) -> bool:
        """Record the usage chunk, which only comes once the answer is complete."""
        usage = chunk.usage
        if usage is None:
            return False
        if self._on_usage is not None:
            try:
                self._on_usage(usage.prompt_tokens, usage.completion_tokens)
            except Exception:
                # A metrics hook must never cost the user an answer.
                logger.exception("agent %r: usage callback failed", self.name)
        return True


def _carries_tokens(delta: ChoiceDelta) -> bool:
    """Answer or reasoning text: the model has started, so the first-token bound is met."""
    if delta.content:
        return True
    extra = delta.model_extra or {}
    return any(isinstance(extra.get(f), str) and extra[f] for f in _REASONING_FIELDS)
