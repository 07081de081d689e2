"""Async DingTalk OpenAPI client: gateway ticket, access token, AI cards, robot and webhook sends.

The SDK's own helpers block the loop, open a session per call and swallow failures (reference
§8); this client is non-blocking, bounded by a timeout, and turns every failure into one of
`common.errors` with a message that never carries a credential.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-acs-dingtalk-access-token"  # noqa: S105 - a header name, not a secret
TOKEN_MARGIN = 300.0  # refresh this long before DingTalk's stated expiry, as the SDK does
BATCH_LIMIT = 20  # oToMessages/batchSend takes at most 20 userIds
USER_AGENT = "channeld (+dingtalk)"
_THROTTLE = re.compile(r"qps|throttl|limit|flow ?control|too many|频率|限流", re.IGNORECASE)
_TRANSIENT_CODES = {"systemError", "ServiceUnavailable", "InternalError"}
_RETRY_AUTH_CODES = {"InvalidAuthentication"}  # a stale token: refresh and retry once
_URL_SECRETS = re.compile(r"((?:session|ticket|access_token)=)[^&\s\"']+", re.IGNORECASE)
_MAX_PLATFORM_MESSAGE = 300


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _platform_error(payload: Any) -> tuple[str, str]:
    """(code, message) from either error style: `code`/`message` or `errcode`/`errmsg`."""
    if not isinstance(payload, dict):
        return "", ""
    code = payload.get("code", payload.get("errcode", ""))
    message = payload.get("message", payload.get("errmsg", ""))
    return str(code or ""), str(message or "")[:_MAX_PLATFORM_MESSAGE]


class DingTalkApi:
    """One app's OpenAPI client; share it between all calls of a channel."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_base: str,
        robot_code: str,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        on_request: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._base = api_base.rstrip("/")
        self._robot_code = robot_code or client_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._on_request = on_request
        self._clock = clock
        self._token: str | None = None
        self._token_deadline = 0.0
        self._token_lock = asyncio.Lock()
        # Recent tokens and tickets, scrubbed from error messages like the secret itself.
        self._seen_credentials: deque[str] = deque(maxlen=16)

    # -- plumbing ----------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: a session must be born inside a running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _scrub(self, text: str) -> str:
        for value in (self._secret, *self._seen_credentials):
            if value:
                text = text.replace(value, "***")
        return _URL_SECRETS.sub(r"\1***", text)

    def _count(self, name: str, status: str) -> None:
        if self._on_request is not None:
            self._on_request(name, status)

    async def _send(
        self,
        name: str,
        method: str,
        url: str,
        body: dict[str, Any],
        token: str | None = None,
    ) -> tuple[int, Any, float | None]:
        """One HTTP exchange: (status, decoded JSON or None, Retry-After)."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token is not None:
            headers[TOKEN_HEADER] = token
        try:
            async with self._http().request(
                method, url, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            self._count(name, "timeout")
            total = self._timeout.total or 0.0
            raise TransientError(f"dingtalk {name}: no answer within {total:g}s") from exc
        except aiohttp.ClientError as exc:
            self._count(name, "error")
            message = self._scrub(f"dingtalk {name}: {type(exc).__name__}: {exc}")
            raise TransientError(message) from exc
        self._count(name, str(status))
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None  # e.g. an HTML ban page; the status still classifies it
        return status, payload, retry_after

    def _error(
        self, name: str, status: int, payload: Any, retry_after: float | None, *, credentials: bool
    ) -> ChannelError:
        """Classifies a failed answer. `credentials`: the call authenticates with the secret."""
        code, message = _platform_error(payload)
        detail = f"dingtalk {name}: HTTP {status}"
        if code:
            detail += f" {code}"
        if message:
            detail += f": {message}"
        detail = self._scrub(detail)
        if status == 429:
            return RateLimited(detail, retry_after)
        if status == 403:
            if _THROTTLE.search(code) or _THROTTLE.search(message):
                return RateLimited(detail, retry_after)
            return AuthError(detail)  # a permission the app was not granted
        if status == 401 or code in _RETRY_AUTH_CODES:
            return AuthError(detail)
        if status >= 500 or status == 408 or code in _TRANSIENT_CODES:
            return TransientError(detail)
        if credentials and status == 400:
            return AuthError(detail)  # appKey/appSecret rejected
        if 400 <= status < 500:
            return PermanentError(detail)
        return TransientError(detail)  # 1xx/3xx: nothing we asked for

    async def _call(self, name: str, method: str, path: str, body: dict[str, Any]) -> Any:
        """A token-bearing call; a rejected token is refreshed and the call retried once."""
        url = self._base + path
        token = await self.access_token()
        status, payload, retry_after = await self._send(name, method, url, body, token)
        if status == 401 or _platform_error(payload)[0] in _RETRY_AUTH_CODES:
            self._invalidate(token)
            token = await self.access_token()
            status, payload, retry_after = await self._send(name, method, url, body, token)
        if 200 <= status < 300:
            return payload
        raise self._error(name, status, payload, retry_after, credentials=False)

    def _invalidate(self, token: str) -> None:
        # Only the token that failed: a concurrent caller may already have a fresh one.
        if self._token == token:
            self._token = None
            self._token_deadline = 0.0

    # -- gateway and token -------------------------------------------------------------------------

    async def open_connection(
        self, subscriptions: list[dict[str, str]], ua: str
    ) -> tuple[str, str]:
        """Asks the gateway for a Stream endpoint and a single-use ticket."""
        name = "gateway.open"
        body = {
            "clientId": self._client_id,
            "clientSecret": self._secret,
            "subscriptions": subscriptions,
            "ua": ua,
            "localIp": "",
        }
        url = self._base + "/v1.0/gateway/connections/open"
        status, payload, retry_after = await self._send(name, "POST", url, body)
        if not 200 <= status < 300:
            raise self._error(name, status, payload, retry_after, credentials=True)
        endpoint = payload.get("endpoint") if isinstance(payload, dict) else None
        ticket = payload.get("ticket") if isinstance(payload, dict) else None
        if (
            not isinstance(endpoint, str)
            or not isinstance(ticket, str)
            or not endpoint
            or not ticket
        ):
            raise TransientError(f"dingtalk {name}: answer without endpoint or ticket")
        self._seen_credentials.append(ticket)
        return endpoint, ticket

    async def access_token(self) -> str:
        """A valid access token, refreshed ahead of expiry; concurrent callers share one refresh."""
        if self._token is not None and self._clock() < self._token_deadline:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_deadline:
                return self._token
            name = "oauth2.accessToken"
            url = self._base + "/v1.0/oauth2/accessToken"
            body = {"appKey": self._client_id, "appSecret": self._secret}
            status, payload, retry_after = await self._send(name, "POST", url, body)
            if not 200 <= status < 300:
                raise self._error(name, status, payload, retry_after, credentials=True)
            token = payload.get("accessToken") if isinstance(payload, dict) else None
            expire_in = payload.get("expireIn") if isinstance(payload, dict) else None
            if not isinstance(token, str) or not token or not isinstance(expire_in, int | float):
                raise TransientError(f"dingtalk {name}: answer without accessToken or expireIn")
            # Short-lived tokens (tests, odd tenants) keep half their life rather than none.
            margin = min(TOKEN_MARGIN, expire_in / 2)
            self._seen_credentials.append(token)
            self._token = token
            self._token_deadline = self._clock() + expire_in - margin
            log.debug(
                "dingtalk access token refreshed for %s, valid %ss", self._client_id, expire_in
            )
            return token

    # -- cards -------------------------------------------------------------------------------------

    async def create_and_deliver_card(
        self,
        *,
        template_id: str,
        out_track_id: str,
        card_data: dict[str, str],
        conversation_type: str,
        conversation_id: str,
        sender_staff_id: str,
        at_user_ids: dict[str, str] | None = None,
    ) -> None:
        """Creates a card and delivers it to the chat; raises if any space refused it."""
        body: dict[str, Any] = {
            "cardTemplateId": template_id,
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": card_data},
            "callbackType": "STREAM",
            "userIdType": 1,
        }
        if conversation_type == "1":
            body["openSpaceId"] = f"dtv1.card//IM_ROBOT.{sender_staff_id}"
            body["imRobotOpenSpaceModel"] = {"supportForward": True}
            body["imRobotOpenDeliverModel"] = {
                "spaceType": "IM_ROBOT",
                "robotCode": self._robot_code,
            }
        elif conversation_type == "2":
            body["openSpaceId"] = f"dtv1.card//IM_GROUP.{conversation_id}"
            body["imGroupOpenSpaceModel"] = {"supportForward": True}
            deliver: dict[str, Any] = {"robotCode": self._robot_code}
            if at_user_ids:
                deliver["atUserIds"] = at_user_ids
            body["imGroupOpenDeliverModel"] = deliver
        else:
            raise ValueError(f"conversation_type must be '1' or '2', got {conversation_type!r}")
        name = "card.createAndDeliver"
        payload = await self._call(name, "POST", "/v1.0/card/instances/createAndDeliver", body)
        self._check_success(name, payload)
        result = payload.get("result") if isinstance(payload, dict) else None
        results = result.get("deliverResults") if isinstance(result, dict) else None
        for delivery in results or []:
            if isinstance(delivery, dict) and delivery.get("success") is False:
                error = self._scrub(str(delivery.get("errorMsg", ""))[:_MAX_PLATFORM_MESSAGE])
                space = delivery.get("spaceType", "")
                raise PermanentError(f"dingtalk {name}: delivery to {space} failed: {error}")

    async def update_card(self, out_track_id: str, card_data: dict[str, str]) -> None:
        """Updates the given card data keys, leaving the others as they are."""
        body = {
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": card_data},
            "cardUpdateOptions": {"updateCardDataByKey": True},
        }
        name = "card.update"
        self._check_success(name, await self._call(name, "PUT", "/v1.0/card/instances", body))

    async def stream_card(
        self,
        out_track_id: str,
        key: str,
        content: str,
        *,
        finalize: bool = False,
        error: bool = False,
    ) -> None:
        """Replaces the streamed text of `key` with `content` (always the full text so far)."""
        body = {
            "outTrackId": out_track_id,
            "guid": uuid.uuid4().hex,
            "key": key,
            "content": content,
            "isFull": True,
            "isFinalize": finalize,
            "isError": error,
        }
        name = "card.streaming"
        self._check_success(name, await self._call(name, "PUT", "/v1.0/card/streaming", body))

    def _check_success(self, name: str, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("success") is False:
            code, message = _platform_error(payload)
            detail = self._scrub(f"dingtalk {name}: success false {code} {message}".rstrip())
            if _THROTTLE.search(code) or _THROTTLE.search(message):
                raise RateLimited(detail)
            raise PermanentError(detail)

    # -- messages ----------------------------------------------------------------------------------

    async def _session_post(self, webhook_url: str, body: dict[str, Any]) -> None:
        name = "robot.sendBySession"
        status, payload, retry_after = await self._send(name, "POST", webhook_url, body)
        if not 200 <= status < 300:
            raise self._error(name, status, payload, retry_after, credentials=False)
        errcode = payload.get("errcode", 0) if isinstance(payload, dict) else 0
        if errcode not in (0, "0"):
            code, message = _platform_error(payload)
            detail = self._scrub(f"dingtalk {name}: errcode {code}: {message}")
            # 130101 is the robot's "more than 20 messages a minute" throttle.
            if str(errcode) == "130101" or _THROTTLE.search(message):
                raise RateLimited(detail)
            raise PermanentError(detail)  # e.g. 300001: the session expired; use the robot API

    async def send_by_session(
        self, webhook_url: str, *, markdown: str, title: str, at_staff_id: str | None = None
    ) -> None:
        """Answers through an incoming message's sessionWebhook, as markdown."""
        body: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {"title": title, "text": markdown},
        }
        if at_staff_id:
            body["at"] = {"atUserIds": [at_staff_id]}
        await self._session_post(webhook_url, body)

    async def send_text_by_session(self, webhook_url: str, text: str) -> None:
        """Answers through a sessionWebhook as plain text."""
        await self._session_post(webhook_url, {"msgtype": "text", "text": {"content": text}})

    async def send_to_users(self, user_ids: list[str], *, markdown: str, title: str) -> None:
        """Sends a markdown message to users' single chats with the bot, 20 users per call."""
        param = json.dumps({"title": title, "text": markdown}, ensure_ascii=False)
        for start in range(0, len(user_ids), BATCH_LIMIT):
            body = {
                "robotCode": self._robot_code,
                "userIds": user_ids[start : start + BATCH_LIMIT],
                "msgKey": "sampleMarkdown",
                "msgParam": param,
            }
            await self._call("robot.batchSend", "POST", "/v1.0/robot/oToMessages/batchSend", body)

    async def send_to_group(self, open_conversation_id: str, *, markdown: str, title: str) -> None:
        """Sends a markdown message to a group the bot is in."""
        body = {
            "robotCode": self._robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": title, "text": markdown}, ensure_ascii=False),
        }
        await self._call("robot.groupSend", "POST", "/v1.0/robot/groupMessages/send", body)

    async def close(self) -> None:
        """Closes the HTTP session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
