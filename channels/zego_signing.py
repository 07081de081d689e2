"""ZEGO's server API conventions, shared by the ZIM server API and the AI Agent server API: the
two signatures, and the client base that signs every call and reads ZEGO's answers.

A call to either server API carries `AppId`, a fresh 16-hex-digit `SignatureNonce`, `Timestamp`
(Unix seconds), `SignatureVersion` 2.0 and `Signature = md5(AppId + SignatureNonce + ServerSecret
+ Timestamp)` in its query (docs/platforms/zim.md §2, docs/platforms/voice.md §1.2). A callback
from either product carries `sha1` of its secret, timestamp and nonce, sorted as strings and
joined (zim.md §1.2, voice.md §1.4). Both answer business errors with HTTP 200 and a non-zero
`Code`: each product's client names which codes are passing trouble, rate and credentials.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from typing import ClassVar, Unpack

from channels.callbacks import signed_bytes
from channels.http import MAX_PLATFORM_MESSAGE, Answer, HttpOptions, PlatformApi
from common.errors import AuthError, ChannelError, PermanentError, RateLimited, TransientError
from common.retry_after import retry_after

SIGNATURE_EXPIRED = 100000004  # the gateway's "signature expired": a clock off by minutes


def api_signature(app_id: int, nonce: str, secret: str, timestamp: int) -> str:
    """`Signature` of a server API call: md5 of AppId, nonce, ServerSecret and timestamp."""
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode()).hexdigest()  # noqa: S324 - ZEGO's scheme


def signed_query(action: str, app_id: int, secret: str, timestamp: int) -> dict[str, str]:
    """The query of one server API call: the action and the common parameters, freshly signed."""
    nonce = secrets.token_hex(8)
    return {
        "Action": action,
        "AppId": str(app_id),
        "SignatureNonce": nonce,
        "Timestamp": str(timestamp),
        "SignatureVersion": "2.0",
        "Signature": api_signature(app_id, nonce, secret, timestamp),
    }


def callback_signature(secret: str, timestamp: str, nonce: str) -> str:
    """A callback's signature: sha1 of the secret, timestamp and nonce, sorted and joined."""
    joined = "".join(sorted([secret, timestamp, nonce]))
    return hashlib.sha1(signed_bytes(joined)).hexdigest()  # noqa: S324 - ZEGO's scheme


class ZegoServerApi(PlatformApi):
    """A ZEGO product's server API: no token, every call signed, errors classified by `Code`."""

    token_margin = 0.0  # no token: every call is signed
    transient_codes: ClassVar[frozenset[int]] = frozenset()  # a later call may not meet them
    rate_codes: ClassVar[frozenset[int]] = frozenset()
    auth_codes: ClassVar[frozenset[int]] = frozenset()  # nothing changes until the config does
    auth_hint: ClassVar[str] = "check app_id and server_secret"

    def __init__(
        self,
        *,
        app_id: int,
        server_secret: str,
        api_base: str,
        wall_clock: Callable[[], float] = time.time,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(app_id=str(app_id), app_secret=server_secret, base_url=api_base, **options)
        self._app = app_id
        self._wall_clock = wall_clock

    async def _fetch_token(self) -> tuple[str, float]:
        return "", math.inf

    def _token_headers(self, token: str) -> dict[str, str]:
        return {}

    def _token_rejected(self, answer: Answer) -> bool:
        return False

    def _signed_query(self, action: str) -> dict[str, str]:
        return signed_query(action, self._app, self._secret, int(self._wall_clock()))

    def _business_error(self, action: str, code: int, message: str) -> ChannelError:
        detail = self._text(action, f"Code {code}: {message[:MAX_PLATFORM_MESSAGE]}".rstrip(": "))
        if code in self.rate_codes:
            return RateLimited(detail)
        if code in self.transient_codes:
            if code == SIGNATURE_EXPIRED:
                detail += " (the signature expired: is this machine's clock right?)"
            return TransientError(detail)
        if code in self.auth_codes:
            return AuthError(f"{detail} ({self.auth_hint})")
        return PermanentError(detail)

    def _http_error(self, action: str, answer: Answer) -> ChannelError:
        message = answer.get("Message")
        detail = self._status_text(action, answer.status, "", str(message or "")[:300])
        if answer.status in (401, 403):
            return AuthError(detail)
        if answer.status == 429:
            return RateLimited(detail, retry_after(answer.headers))
        if 400 <= answer.status < 500 and answer.status != 408:
            return PermanentError(detail)
        return TransientError(detail)  # 5xx, 408, 3xx: what was not asked for
