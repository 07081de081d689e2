"""Async Feishu/Lark OpenAPI client: endpoint discovery, tenant token, messages, CardKit cards,
a user's profile.

Non-blocking and bounded by a timeout (lark-oapi's discovery is a blocking `requests.post` with
none, docs/platforms/feishu.md §1.1). Every failure becomes one of `common.errors`, classified
by the platform's `code` (§4.7); messages never carry the secret or a token.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from channels.http import MAX_PLATFORM_MESSAGE, Answer, PlatformApi
from channels.model import SenderProfile
from channels.provider import ProfileUnavailable
from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.retry_after import retry_after

TOKEN_MARGIN = 600.0  # refresh this long before expiry, as lark-oapi's token manager does
# Feishu's gateway names the reset in x-ogw-ratelimit-reset; plain Retry-After otherwise
WAIT_HEADERS = ("x-ogw-ratelimit-reset", "Retry-After")

# Codes, from lark-oapi 1.7.5 and larksuite/cli's error table (docs/platforms/feishu.md §4.1, §4.7).
TOKEN_INVALID = frozenset(
    {99991661, 99991663, 99991664, 99991665, 99991666, 99991668, 99991671, 99991677}
)
RATE_LIMIT = frozenset({99991400, 230020, 11232, 11233})
TRANSIENT = frozenset({1, 1000040343, 300120, 99991401})
SEQUENCE_CONFLICT = 300317
STREAMING_CLOSED = frozenset({300309, 200850})
# discovery: these codes are "try again later"; every other non-zero code is fatal (§1.1)
DISCOVERY_RETRYABLE = frozenset({1, 1000040343})
# contact/v3 users (§4.8): the app has none of the contacts API scopes ...
SCOPE_MISSING = 99991672
# ... or the user lies outside its contacts range (41050; 40004 is the department twin)
OUT_OF_RANGE = frozenset({41050, 40004})
CONTACT_SCOPES = (
    "contact:contact.base:readonly (获取通讯录基本信息), and for the fields "
    "contact:user.email:readonly, contact:user.phone:readonly, contact:user.employee_number:read"
)
CONTACT_RANGE = "a contacts range (通讯录权限范围) that includes the sender"


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
    message = str(payload.get("msg") or payload.get("message") or "")[:MAX_PLATFORM_MESSAGE]
    try:
        return int(code), message
    except (TypeError, ValueError):
        return -1, message


class FeishuApi(PlatformApi):
    """One app's OpenAPI client; shared by all calls of a channel."""

    platform = "feishu"
    token_margin = TOKEN_MARGIN

    # -- plumbing ----------------------------------------------------------------------------------

    def _token_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _token_rejected(self, answer: Answer) -> bool:
        return answer.status == 401 or _code(answer.payload)[0] in TOKEN_INVALID

    def _error(self, name: str, answer: Answer) -> ChannelError:
        status = answer.status
        code, message = _code(answer.payload)
        shown = f"code {code}" if code not in (-1, 0) else ""
        detail = self._status_text(name, status, shown, message)
        if status == 429 or code in RATE_LIMIT:
            return RateLimited(detail, retry_after(answer.headers, WAIT_HEADERS))
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
        url = self._base + path
        answer = await self._send(name, method, url, body=body, params=params, authorized=True)
        if answer.status == 200 and _code(answer.payload)[0] == 0:
            data = answer.get("data")
            return data if isinstance(data, dict) else {}
        raise self._error(name, answer)

    # -- long connection and token -----------------------------------------------------------------

    async def discover(self) -> tuple[str, dict[str, Any]]:
        """The websocket URL (with its one-use credentials) and the gateway's ClientConfig."""
        name = "ws.endpoint"
        body = {"AppID": self.app_id, "AppSecret": self._secret}
        endpoint = self._base + "/callback/ws/endpoint"
        answer = await self._send(name, "POST", endpoint, body=body, headers={"locale": "zh"})
        code, message = _code(answer.payload)
        if answer.status != 200:
            raise self._error(name, answer)
        if code in DISCOVERY_RETRYABLE:
            raise TransientError(self._text(name, f"gateway busy (code {code})"))
        if code != 0:
            # lark-oapi stops on any other code, a client error (docs/platforms/feishu.md §1.1)
            raise AuthError(self._text(name, f"code {code}: {message}"))
        data = answer.get("data")
        url = data.get("URL") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise TransientError(f"feishu {name}: answer without a websocket URL")
        self._remember(url)
        config = data.get("ClientConfig") if isinstance(data, dict) else None
        return url, config if isinstance(config, dict) else {}

    async def tenant_token(self) -> str:
        """A valid tenant_access_token, refreshed ahead of expiry; one refresh at a time."""
        return await self._tokens.get()

    async def _fetch_token(self) -> tuple[str, float]:
        name = "auth.tenant_token"
        body = {"app_id": self.app_id, "app_secret": self._secret}
        url = self._base + "/open-apis/auth/v3/tenant_access_token/internal"
        answer = await self._send(name, "POST", url, body=body)
        code, message = _code(answer.payload)
        if answer.status >= 500 or answer.status == 429 or code in TRANSIENT | RATE_LIMIT:
            raise self._error(name, answer)
        if code != 0:
            raise AuthError(self._text(name, f"code {code}: {message}"))
        return self._token_from(name, answer, "tenant_access_token", "expire")

    async def bot_open_id(self) -> str:
        """The bot's own open_id, to recognise its mentions in groups."""
        name = "bot.info"
        url = self._base + "/open-apis/bot/v3/info"
        answer = await self._send(name, "GET", url, authorized=True)
        if answer.status != 200 or _code(answer.payload)[0] != 0:
            raise self._error(name, answer)
        bot = answer.get("bot")
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

    # -- contacts ----------------------------------------------------------------------------------

    async def user_profile(self, open_id: str) -> SenderProfile:
        """A user's e-mail, mobile and employee number; a field the app may not read is "".

        ProfileUnavailable when the app may not ask (no contacts scope, or the user is outside
        its contacts range); other failures are classified like every call.
        """
        name = "contact.user"
        url = f"{self._base}/open-apis/contact/v3/users/{quote(open_id, safe='')}"
        params = {"user_id_type": "open_id"}
        answer = await self._send(name, "GET", url, params=params, authorized=True)
        code, _ = _code(answer.payload)
        if answer.status == 200 and code == 0:
            data = answer.get("data")
            user = data.get("user") if isinstance(data, dict) else None
            if not isinstance(user, dict):
                raise TransientError(f"feishu {name}: answer without data.user")
            return SenderProfile(
                email=_field(user, "email") or _field(user, "enterprise_email"),
                mobile=_field(user, "mobile"),
                employee_no=_field(user, "employee_no"),
            )
        error = self._error(name, answer)
        if code == SCOPE_MISSING:
            raise ProfileUnavailable(str(error), CONTACT_SCOPES) from error
        if code in OUT_OF_RANGE:
            raise ProfileUnavailable(str(error), CONTACT_RANGE) from error
        raise error


def _field(user: dict[str, Any], key: str) -> str:
    value = user.get(key)
    return value.strip() if isinstance(value, str) else ""
