"""Async client of an Easemob app's REST API: the app token, the bot user, sends and rewrites.

Every call but the token's carries the app token (`Authorization: Bearer`), which comes from
`client_credentials` and is kept until shortly before `expires_in` (default 60 days): Easemob bans
accounts that ask for tokens too often, so a token is asked for at start, when it is about to
expire, and once when a call is refused with 401, never otherwise
(docs/platforms/easemob.md §3.2).
Every failure becomes one of `common.errors`; texts never carry a credential.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Unpack
from urllib.parse import quote

from channels.http import MAX_PLATFORM_MESSAGE, Answer, HttpOptions, PlatformApi
from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.retry_after import retry_after

TOKEN_MARGIN = 600.0  # refresh this long before the token's stated expiry
DUPLICATE_USER = "duplicate_unique_property_exists"
# 401s that refuse the request, not the token: asking for a new token would not help
_NOT_THE_TOKEN = frozenset({"RewriteMessageNotAuthorizedException"})
# 403 "message send reach limit" (6000 messages a minute): a rate limit, not a permission
_THROTTLE = re.compile(r"reach(ed)? (api )?limit|too many|rate", re.IGNORECASE)


def _error_fields(payload: Any) -> tuple[str, str, str]:
    """(error, exception, description) of an error answer, shortened."""
    if not isinstance(payload, dict):
        return "", "", ""
    error = str(payload.get("error") or "")[:MAX_PLATFORM_MESSAGE]
    exception = str(payload.get("exception") or "")[:MAX_PLATFORM_MESSAGE]
    description = str(payload.get("error_description") or "")[:MAX_PLATFORM_MESSAGE]
    return error, exception, description


class EasemobApi(PlatformApi):
    """One app's REST API as one bot user uses it; a channel shares one for all calls."""

    platform = "easemob"
    token_margin = TOKEN_MARGIN

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_base: str,
        org_name: str,
        app_name: str,
        bot_user: str,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(app_id=client_id, app_secret=client_secret, base_url=api_base, **options)
        self._app = f"/{quote(org_name, safe='')}/{quote(app_name, safe='')}"
        self.bot_user = bot_user

    # -- plumbing ----------------------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        name = "token"
        body = {
            "grant_type": "client_credentials",
            "client_id": self.app_id,
            "client_secret": self._secret,
        }
        answer = await self._send(name, "POST", self._base + self._app + "/token", body=body)
        if not answer.ok:
            raise self._error(name, answer, credentials=True)
        return self._token_from(name, answer, "access_token", "expires_in")

    def _token_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _token_rejected(self, answer: Answer) -> bool:
        return answer.status == 401 and _error_fields(answer.payload)[1] not in _NOT_THE_TOKEN

    def _error(self, name: str, answer: Answer, *, credentials: bool = False) -> ChannelError:
        """Classifies a failed answer. `credentials`: the token call, which carries the secret."""
        status = answer.status
        error, exception, description = _error_fields(answer.payload)
        code = answer.get("error_code")
        label = " ".join(str(part) for part in (error, exception, code) if part)
        detail = self._status_text(name, status, label, description)
        if status == 429:
            return RateLimited(detail, retry_after(answer.headers))
        if status == 403 and _THROTTLE.search(description):
            return RateLimited(detail, retry_after(answer.headers))
        if status >= 500 or status == 408:
            return TransientError(detail)
        if status == 401 and exception in _NOT_THE_TOKEN:
            return PermanentError(detail)
        if status == 401 or (credentials and status in (400, 403, 404)):
            # the token call: a wrong client id or secret (400), an unknown org or app (404)
            return AuthError(detail)
        if 400 <= status < 500:
            return PermanentError(detail)  # too large (14007), edit cap, feature not enabled...
        return TransientError(detail)  # 1xx/3xx: nothing we asked for

    async def _call(self, name: str, method: str, path: str, body: Any) -> Answer:
        """A token-bearing call; a token refused with 401 is refreshed and the call made again,
        once. Returns the answer, whatever its status."""
        return await self._send(
            name, method, self._base + self._app + path, body=body, authorized=True
        )

    # -- calls -------------------------------------------------------------------------------------

    async def ensure_user(self, username: str) -> bool:
        """Registers `username`; False when it existed already. Proves the credentials."""
        name = "users.create"
        # the bot never logs in: its password is random and kept nowhere
        body = [{"username": username, "password": secrets.token_urlsafe(24)}]
        answer = await self._call(name, "POST", "/users", body)
        if answer.ok:
            return True
        if answer.status == 400 and _error_fields(answer.payload)[0] == DUPLICATE_USER:
            return False
        raise self._error(name, answer)

    async def send_text(self, to: str, text: str) -> str:
        """A text message from the bot user to `to`; the message id Easemob gave it ("" when its
        answer named none)."""
        name = "messages.users"
        body = {"from": self.bot_user, "to": [to], "type": "txt", "body": {"msg": text}}
        answer = await self._call(name, "POST", "/messages/users", body)
        if not answer.ok:
            raise self._error(name, answer)
        data = answer.get("data")
        message_id = data.get(to) if isinstance(data, dict) else None
        return str(message_id) if isinstance(message_id, str | int) else ""

    async def rewrite(self, message_id: str, text: str) -> None:
        """Replaces the text of the bot's message `message_id` (at most 10 times a message)."""
        name = "messages.rewrite"
        body = {"user": self.bot_user, "new_msg": {"type": "txt", "msg": text}}
        path = f"/messages/rewrite/{quote(message_id, safe='')}"
        answer = await self._call(name, "PUT", path, body)
        if not answer.ok:
            raise self._error(name, answer)
