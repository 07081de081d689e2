"""Async Feishu/Lark OpenAPI client: endpoint discovery, tenant token, messages, CardKit cards.

Non-blocking and bounded by a timeout (lark-oapi's discovery is a blocking `requests.post` with
none, reference/feishu.md §1.1). Every failure becomes one of `common.errors`, classified by the
platform's `code` (§4.7); messages never carry the secret or a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
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

USER_AGENT = "channeld (+feishu)"
TOKEN_MARGIN = 600.0  # refresh this long before expiry, as lark-oapi's token manager does
_MAX_PLATFORM_MESSAGE = 300

# Codes, from lark-oapi 1.7.5 and larksuite/cli's error table (reference §4.1, §4.7).
TOKEN_INVALID = frozenset(
    {99991661, 99991663, 99991664, 99991665, 99991666, 99991668, 99991671, 99991677}
)
RATE_LIMIT = frozenset({99991400, 230020, 11232, 11233})
TRANSIENT = frozenset({1, 1000040343, 300120, 99991401})
SEQUENCE_CONFLICT = 300317
STREAMING_CLOSED = frozenset({300309, 200850})
CARD_TOO_BIG = frozenset({200860, 230025})
# discovery: these codes are "try again later"; every other non-zero code is fatal (§1.1)
DISCOVERY_RETRYABLE = frozenset({1, 1000040343})


class FeishuApiError(ChannelError):
    """A business error answer; `code` is Feishu's code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class SequenceConflict(FeishuApiError, TransientError):
    """300317: a card operation's sequence was not above the card's last one."""

    retryable = True


class StreamingClosed(FeishuApiError, PermanentError):
    """300309/200850: the card no longer streams (closed, or timed out after 10 minutes)."""


class Rejected(FeishuApiError, PermanentError):
    """Any other business error: the request will fail the same way again."""


def _code(payload: Any) -> tuple[int, str]:
    if not isinstance(payload, dict):
        return -1, ""
    code = payload.get("code", -1)
    message = str(payload.get("msg") or payload.get("message") or "")[:_MAX_PLATFORM_MESSAGE]
    try:
        return int(code), message
    except (TypeError, ValueError):
        return -1, message


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # Feishu's gateway names the reset in x-ogw-ratelimit-reset; plain Retry-After otherwise
    for name in ("x-ogw-ratelimit-reset", "Retry-After"):
        value = headers.get(name)
        if value:
            try:
                return max(float(value), 0.0)
            except ValueError:
                continue
    return None


class FeishuApi:
    """One app's OpenAPI client; shared by all calls of a channel."""

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        base_url: str,
        timeout: float = 10.0,
        on_request: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self._secret = app_secret
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._on_request = on_request
        self._clock = clock
        self._token: str | None = None
        self._token_deadline = 0.0
        self._token_lock = asyncio.Lock()
        self._seen_credentials: deque[str] = deque(maxlen=16)

    # -- plumbing ----------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def scrub(self, text: str) -> str:
        """`text` with the secret and any token or ticket this client has seen masked."""
        for value in (self._secret, *self._seen_credentials):
            if value:
                text = text.replace(value, "***")
        return text

    def _count(self, name: str, status: str) -> None:
        if self._on_request is not None:
            self._on_request(name, status)

    async def _send(
        self,
        name: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """One HTTP exchange: (status, decoded JSON or None, response headers)."""
        sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        try:
            async with self._http().request(
                method,
                self._base + path,
                json=body,
                params=params,
                headers=sent,
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                status, answer_headers = resp.status, resp.headers
        except TimeoutError as exc:
            self._count(name, "timeout")
            total = self._timeout.total or 0.0
            raise TransientError(f"feishu {name}: no answer within {total:g}s") from exc
        except aiohttp.ClientError as exc:
            self._count(name, "error")
            raise TransientError(self.scrub(f"feishu {name}: {type(exc).__name__}: {exc}")) from exc
        self._count(name, str(status))
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return status, payload, answer_headers

    def _error(
        self, name: str, status: int, payload: Any, headers: Mapping[str, str]
    ) -> ChannelError:
        code, message = _code(payload)
        detail = f"feishu {name}: HTTP {status}"
        if code not in (-1, 0):
            detail += f" code {code}"
        if message:
            detail += f": {message}"
        detail = self.scrub(detail)
        if status == 429 or code in RATE_LIMIT:
            return RateLimited(detail, _retry_after(headers))
        if code == SEQUENCE_CONFLICT:
            return SequenceConflict(detail, code)
        if code in STREAMING_CLOSED:
            return StreamingClosed(detail, code)
        if code in TOKEN_INVALID or status in (401, 403):
            return AuthError(detail)
        if status >= 500 or status == 408 or code in TRANSIENT:
            return TransientError(detail)
        if code == -1 and status < 400:
            return TransientError(detail + " (unreadable answer)")
        return Rejected(detail, code)

    async def _call(
        self,
        name: str,
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A token-bearing call; a rejected token is refreshed and the call retried once."""
        token = await self.tenant_token()
        status, payload, headers = await self._send(
            name, method, path, body, token=token, params=params
        )
        if _code(payload)[0] in TOKEN_INVALID or status == 401:
            self._invalidate(token)
            token = await self.tenant_token()
            status, payload, headers = await self._send(
                name, method, path, body, token=token, params=params
            )
        if status == 200 and _code(payload)[0] == 0:
            data = payload.get("data") if isinstance(payload, dict) else None
            return data if isinstance(data, dict) else {}
        raise self._error(name, status, payload, headers)

    def _invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None
            self._token_deadline = 0.0

    # -- long connection and token -----------------------------------------------------------------

    async def discover(self) -> tuple[str, dict[str, Any]]:
        """The websocket URL (with its one-use credentials) and the gateway's ClientConfig."""
        name = "ws.endpoint"
        body = {"AppID": self.app_id, "AppSecret": self._secret}
        status, payload, headers = await self._send(
            name, "POST", "/callback/ws/endpoint", body, headers={"locale": "zh"}
        )
        code, message = _code(payload)
        if status != 200:
            raise self._error(name, status, payload, headers)
        if code in DISCOVERY_RETRYABLE:
            raise TransientError(self.scrub(f"feishu {name}: gateway busy (code {code})"))
        if code != 0:
            # lark-oapi treats every other code as a client error and stops (reference §1.1)
            raise AuthError(self.scrub(f"feishu {name}: code {code}: {message}"))
        data = payload.get("data") if isinstance(payload, dict) else None
        url = data.get("URL") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise TransientError(f"feishu {name}: answer without a websocket URL")
        self._seen_credentials.append(url)
        config = data.get("ClientConfig") if isinstance(data, dict) else None
        return url, config if isinstance(config, dict) else {}

    async def tenant_token(self) -> str:
        """A valid tenant_access_token, refreshed ahead of expiry; one refresh at a time."""
        if self._token is not None and self._clock() < self._token_deadline:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_deadline:
                return self._token
            name = "auth.tenant_token"
            body = {"app_id": self.app_id, "app_secret": self._secret}
            status, payload, headers = await self._send(
                name, "POST", "/open-apis/auth/v3/tenant_access_token/internal", body
            )
            code, message = _code(payload)
            if status >= 500 or status == 429 or code in TRANSIENT | RATE_LIMIT:
                raise self._error(name, status, payload, headers)
            if code != 0:
                raise AuthError(self.scrub(f"feishu {name}: code {code}: {message}"))
            token = payload.get("tenant_access_token")
            expire = payload.get("expire")
            if not isinstance(token, str) or not token or not isinstance(expire, int | float):
                raise TransientError(f"feishu {name}: answer without a token or expiry")
            self._seen_credentials.append(token)
            self._token = token
            self._token_deadline = self._clock() + expire - min(TOKEN_MARGIN, expire / 2)
            return token

    async def bot_open_id(self) -> str:
        """The bot's own open_id, to recognise its mentions in groups."""
        token = await self.tenant_token()
        name = "bot.info"
        status, payload, headers = await self._send(
            name, "GET", "/open-apis/bot/v3/info", None, token=token
        )
        if status != 200 or _code(payload)[0] != 0:
            raise self._error(name, status, payload, headers)
        bot = payload.get("bot") if isinstance(payload, dict) else None
        open_id = bot.get("open_id") if isinstance(bot, dict) else None
        if not isinstance(open_id, str) or not open_id:
            raise TransientError(f"feishu {name}: answer without bot.open_id")
        return open_id

    # -- messages ----------------------------------------------------------------------------------

    async def reply(
        self, message_id: str, msg_type: str, content: dict[str, Any], idempotency_key: str
    ) -> str:
        """Replies to a message; the same key within an hour never posts twice. Returns om_ id."""
        body = {
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
            "uuid": idempotency_key,
        }
        data = await self._call(
            "im.reply", "POST", f"/open-apis/im/v1/messages/{message_id}/reply", body
        )
        return str(data.get("message_id", ""))

    async def send(
        self,
        chat_id: str,
        msg_type: str,
        content: dict[str, Any],
        idempotency_key: str,
        receive_id_type: str = "chat_id",
    ) -> str:
        """Sends a message to a chat (or a user, by receive_id_type). Returns its om_ id."""
        body = {
            "receive_id": chat_id,
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
            "uuid": idempotency_key,
        }
        data = await self._call(
            "im.send",
            "POST",
            "/open-apis/im/v1/messages",
            body,
            params={"receive_id_type": receive_id_type},
        )
        return str(data.get("message_id", ""))

    # -- CardKit -----------------------------------------------------------------------------------

    async def create_card(self, card: dict[str, Any]) -> str:
        """Creates a card entity from card JSON 2.0; returns its card_id."""
        body = {"type": "card_json", "data": json.dumps(card, ensure_ascii=False)}
        data = await self._call("cardkit.create", "POST", "/open-apis/cardkit/v1/cards", body)
        card_id = data.get("card_id")
        if not isinstance(card_id, str) or not card_id:
            raise TransientError("feishu cardkit.create: answer without card_id")
        return card_id

    async def stream_text(
        self, card_id: str, element_id: str, content: str, sequence: int, idempotency_key: str
    ) -> None:
        """Sets the full text of a streaming element (the client types out what is new)."""
        body = {"content": content, "sequence": sequence, "uuid": idempotency_key}
        await self._call(
            "cardkit.content",
            "PUT",
            f"/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content",
            body,
        )

    async def card_settings(
        self, card_id: str, settings: dict[str, Any], sequence: int, idempotency_key: str
    ) -> None:
        """Changes a card's config, e.g. ends streaming mode."""
        body = {
            "settings": json.dumps(settings, ensure_ascii=False),
            "sequence": sequence,
            "uuid": idempotency_key,
        }
        await self._call(
            "cardkit.settings", "PATCH", f"/open-apis/cardkit/v1/cards/{card_id}/settings", body
        )

    async def close(self) -> None:
        """Closes the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
