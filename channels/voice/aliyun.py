"""Alibaba Cloud IMS AI agents: the official SDK's calls channeld makes (the agent callbacks are
checked and read in aliyun_callbacks.py).

Written against `alibabacloud-ice20201109` 6.20.2 (`alibabacloud-tea-openapi` 0.4.6,
`darabonba-core` 1.0.9); docs/platforms/voice.md §2 has the facts. Two SDK habits shape this:

- Its async path builds a new SSL context and reads the CA bundle from disk for every HTTPS
  request (about 30 ms here), on whatever loop runs it. Each call therefore runs on a loop of
  its own in a worker thread, never on channeld's, which streams answers meanwhile.
- `AIAgentConfig.to_map()` always emits empty lists (LlmHistory, FunctionMap, ...), which may
  override the console's agent. No call here sends an AgentConfig: the console's agent is used.

Errors become common.errors classes, built from status, code and the platform's message only:
the SDK's exceptions can carry the signed request, so they are not chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

# The SDK ships no type information: what it returns is read field by field below.
from alibabacloud_ice20201109 import models  # type: ignore[import-untyped]
from alibabacloud_ice20201109.client import Client  # type: ignore[import-untyped]
from alibabacloud_tea_openapi.exceptions import (  # type: ignore[import-untyped]
    AlibabaCloudException,
    ThrottlingException,
)
from alibabacloud_tea_openapi.utils_models import Config  # type: ignore[import-untyped]
from darabonba.runtime import RuntimeOptions  # type: ignore[import-untyped]

from channels import normalize
from channels.http import MAX_PLATFORM_MESSAGE
from common.endpoint import http_base_url, https_unless_loopback
from common.errors import (
    AuthError,
    ChannelError,
    ConfigError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.redact import Scrubber

T = TypeVar("T")

PAGE_SIZE = 100  # ListAIAgentDialogues' largest page
MAX_PAGES = 100  # 10,000 dialogues: far beyond a call; a server repeating a page cannot loop us
_REGION = re.compile(r"[a-z0-9-]{2,32}")
# Codes that say the credentials or the RAM permissions are wrong.
_AUTH_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature", "Forbidden")
# StopAIAgentInstance on an instance that ended or never existed: no code is documented; any
# code naming something not found is taken for "already stopped" [unverified, voice.md §2.4].
_GONE = re.compile(r"(?i)not.?found|not.?exist")
ROLES: dict[str, Literal["user", "assistant"]] = {
    "user": "user",
    "agent": "assistant",
    "assistant": "assistant",
}


class _Gone(PermanentError):
    """A 4xx whose code says the resource is not there."""


@dataclass(frozen=True, slots=True)
class AliyunCall:
    """An agent instance Alibaba started with its own RTC channel, and how the app joins it."""

    instance_id: str
    rtc_channel_id: str
    rtc_join_token: str = field(repr=False)  # for the app's client only: never logged
    rtc_user_id: str
    agent_user_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Dialogue:
    """One sentence of a session as Alibaba recorded it (ListAIAgentDialogues)."""

    round_id: str
    role: Literal["user", "assistant"]
    text: str
    time_ms: int
    source: str  # "call" or "chat"


def _endpoint(endpoint: str | None) -> tuple[str | None, str]:
    """The SDK's endpoint (host[:port]) and protocol; None: the region's own host."""
    if endpoint is None:
        return None, "https"
    try:
        if "://" in endpoint:
            url = urlsplit(https_unless_loopback(endpoint))
            if url.path:
                raise ValueError("must be a host, or a scheme://host:port URL without a path")
            return url.netloc, url.scheme
        url = urlsplit(http_base_url(f"https://{endpoint}"))
        if url.path:
            raise ValueError("must be a host, or a scheme://host:port URL without a path")
        return url.netloc, "https"
    except ValueError as exc:
        raise ConfigError(f"Alibaba IMS endpoint: {exc}") from None


class AliyunVoiceApi:
    """One Alibaba Cloud account's IMS AI agent calls; a channel shares one for all its calls."""

    platform = "aliyun ims"

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        region: str,
        endpoint: str | None,
        timeout: float = 10.0,
    ) -> None:
        if not _REGION.fullmatch(region):
            raise ConfigError(f"Alibaba IMS region {region[:40]!r} is not a region id")
        if not access_key_id or not access_key_secret:
            raise ConfigError("Alibaba IMS needs access_key_id and access_key_secret")
        host, protocol = _endpoint(endpoint)
        self._timeout = timeout
        self._runtime_ms = max(1, int(timeout * 1000))
        self._scrub = Scrubber(access_key_secret)
        self._scrub.remember(access_key_id)
        self._closed = False
        # With explicit keys the SDK builds a static credential: no file, no environment, no
        # network (alibabacloud-credentials 1.0.12, StaticAKCredentialsProvider).
        self._client = Client(
            Config(
                access_key_id=access_key_id,
                access_key_secret=access_key_secret,
                region_id=region,
                endpoint=host,
                protocol=protocol,
                read_timeout=self._runtime_ms,
                connect_timeout=self._runtime_ms,
            )
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def _options(self) -> Any:
        # autoretry off, and the client has no RetryOptions: a start is never sent twice
        return RuntimeOptions(
            autoretry=False, read_timeout=self._runtime_ms, connect_timeout=self._runtime_ms
        )

    def _text(self, action: str, text: str) -> str:
        return self._scrub(f"{self.platform} {action}: {text}")

    async def _run(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """One SDK call on a loop of its own in a worker thread, within the timeout; its errors
        classified."""
        if self._closed:
            raise PermanentError(self._text(action, "client closed"))

        async def bounded() -> T:
            async with asyncio.timeout(self._timeout):
                return await call()

        def in_worker() -> T:
            return asyncio.run(bounded())  # the coroutine is made where it runs

        try:
            # the outer bound holds even if the worker's loop lingers on its own shutdown
            async with asyncio.timeout(self._timeout + 1.0):
                return await asyncio.to_thread(in_worker)
        except TimeoutError:
            raise TransientError(
                self._text(action, f"no answer within {self._timeout:g}s")
            ) from None
        except AlibabaCloudException as exc:
            raise self._classify(action, exc) from None
        except Exception as exc:  # noqa: BLE001 - the SDK raises whatever its generated code trips on
            # network failures come wrapped (UnretryableException), unreadable answers as
            # whatever reading them raised; neither is a verdict on the request
            name = type(exc).__name__
            raise TransientError(self._text(action, f"no usable answer ({name})")) from None

    def _classify(self, action: str, exc: Any) -> ChannelError:
        code = exc.code if isinstance(exc.code, str) and exc.code != "None" else ""
        status = exc.status_code if isinstance(exc.status_code, int) else 0
        data = exc.data if isinstance(exc.data, dict) else {}
        message = str(data.get("Message") or data.get("message") or "")[:MAX_PLATFORM_MESSAGE]
        request = data.get("RequestId") or data.get("requestId")
        detail = f"HTTP {status} {code}".rstrip() + (f": {message}" if message else "")
        if request:
            detail += f" (request {str(request)[:64]})"
        text = self._text(action, detail)
        if isinstance(exc, ThrottlingException) or code.startswith("Throttling"):
            wait = exc.retry_after if isinstance(exc.retry_after, int) else None
            # darabonba counts its retry delays in milliseconds [unverified for this header]
            return RateLimited(text, None if wait is None else wait / 1000)
        if code.startswith(_AUTH_CODES) or status in (401, 403):
            return AuthError(f"{text} (check access_key_id, access_key_secret and RAM permissions)")
        if status >= 500 or code in ("ServiceUnavailable", "InternalError", "SignatureNonceUsed"):
            return TransientError(text)
        return _Gone(text) if _GONE.search(code) else PermanentError(text)

    # -- calls -------------------------------------------------------------------------------------

    async def generate_call(
        self,
        *,
        agent_id: str,
        session_id: str,
        user_id: str,
        user_data: str,
        expire_seconds: int,
    ) -> AliyunCall:
        """`GenerateAIAgentCall`: Alibaba starts the agent in an RTC channel it creates and
        hands back the channel, the user's join token and the ids."""
        action = "GenerateAIAgentCall"
        request = models.GenerateAIAgentCallRequest(
            aiagent_id=agent_id,
            session_id=session_id,
            user_id=user_id,
            user_data=user_data,
            expire=expire_seconds,
        )
        answer = await self._run(
            action,
            functools.partial(
                self._client.generate_aiagent_call_with_options_async, request, self._options()
            ),
        )
        body = _body(answer)
        fields = {
            name: str_field(getattr(body, name, None))
            for name in ("instance_id", "channel_id", "token", "user_id", "aiagent_user_id")
        }
        if not (fields["instance_id"] and fields["channel_id"] and fields["token"]):
            raise TransientError(
                self._text(action, "the answer lacks InstanceId, ChannelId or Token")
            )
        return AliyunCall(
            instance_id=fields["instance_id"],
            rtc_channel_id=fields["channel_id"],
            rtc_join_token=fields["token"],
            rtc_user_id=fields["user_id"] or user_id,
            agent_user_id=fields["aiagent_user_id"],
            request_id=str_field(getattr(body, "request_id", None)),
        )

    async def start_instance(
        self, *, agent_id: str, session_id: str, user_data: str, runtime: Mapping[str, str]
    ) -> str:
        """`StartAIAgentInstance` in an RTC channel the app manages: `runtime` is the voice
        chat's `AgentUserId`, `ChannelId` and `AuthToken`. The instance id."""
        action = "StartAIAgentInstance"
        voice = {key: runtime.get(key) for key in ("AgentUserId", "ChannelId", "AuthToken")}
        if not all(isinstance(value, str) and value for value in voice.values()):
            raise PermanentError(
                self._text(action, "runtime needs AgentUserId, ChannelId and AuthToken")
            )
        request = models.StartAIAgentInstanceRequest(
            aiagent_id=agent_id,
            session_id=session_id,
            user_data=user_data,
            runtime_config=models.AIAgentRuntimeConfig(
                voice_chat=models.AIAgentRuntimeConfigVoiceChat(
                    agent_user_id=voice["AgentUserId"],
                    channel_id=voice["ChannelId"],
                    auth_token=voice["AuthToken"],
                )
            ),
        )
        answer = await self._run(
            action,
            functools.partial(
                self._client.start_aiagent_instance_with_options_async, request, self._options()
            ),
        )
        instance = str_field(getattr(_body(answer), "instance_id", None))
        if not instance:
            raise TransientError(self._text(action, "the answer names no InstanceId"))
        return instance

    async def stop_instance(self, instance_id: str) -> None:
        """`StopAIAgentInstance`; an instance stopped already, or unknown, counts as stopped."""
        request = models.StopAIAgentInstanceRequest(instance_id=instance_id)
        with contextlib.suppress(_Gone):
            await self._run(
                "StopAIAgentInstance",
                functools.partial(
                    self._client.stop_aiagent_instance_with_options_async, request, self._options()
                ),
            )

    async def list_dialogues(
        self, *, session_id: str, start_ms: int, end_ms: int
    ) -> list[Dialogue]:
        """`ListAIAgentDialogues` of a session between two times, every page, oldest first;
        sentences of a shape not recognised are left out."""
        dialogues: list[Dialogue] = []
        for page in range(1, MAX_PAGES + 1):
            request = models.ListAIAgentDialoguesRequest(
                session_id=session_id,
                start_time=start_ms,
                end_time=end_ms,
                page_number=page,
                page_size=PAGE_SIZE,
                order="ASC",
            )
            answer = await self._run(
                "ListAIAgentDialogues",
                functools.partial(
                    self._client.list_aiagent_dialogues_with_options_async, request, self._options()
                ),
            )
            items = getattr(_body(answer), "dialogues", None)
            items = items if isinstance(items, list) else []
            dialogues.extend(d for item in items if (d := _dialogue(item)) is not None)
            if len(items) < PAGE_SIZE:
                break
        return dialogues

    async def aclose(self) -> None:
        """Later calls are refused. The SDK keeps no connection between calls."""
        self._closed = True


def str_field(value: Any) -> str:
    """A field that should be a string; "" when it is not."""
    return value if isinstance(value, str) else ""


def _body(answer: Any) -> Any:
    return getattr(answer, "body", None)


def id_field(value: Any) -> str:
    """A round or sentence id, which may come as a number or a string; "" when neither."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    return normalize.platform_id(value) if isinstance(value, str) else ""


def _dialogue(item: Any) -> Dialogue | None:
    role = ROLES.get(str_field(getattr(item, "producer", None)))
    round_id = id_field(getattr(item, "round_id", None))
    text = getattr(item, "text", None)
    moment = getattr(item, "time", None)
    if role is None or not round_id or not isinstance(text, str):
        return None
    time_ms = moment if isinstance(moment, int) and not isinstance(moment, bool) else 0
    source = str_field(getattr(item, "source", None))
    return Dialogue(round_id, role, normalize.text(text), time_ms, normalize.name(source))
