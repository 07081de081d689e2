"""ZIM's callbacks to the app's server: each one a signed JSON POST, retried after 2, 4, 8, 16
and 32 s (each wait counted from the previous attempt) while the answer is not 2xx or missing,
then dropped. A retry sends the same body: same nonce, timestamp and signature."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.emulator.outbound import Outbound
from channels.zim.emulator.signing import callback_signature

RETRY_DELAYS = (2.0, 4.0, 8.0, 16.0, 32.0)
SEND_MSG = "send_msg"
BOT_MSG = "bot_msg"
EVENTS = (SEND_MSG, BOT_MSG)


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One POST of a callback and how the app's server answered."""

    seq: int
    at: float  # time.monotonic() when sent
    event: str
    msg_id: str
    attempt: int  # 0: the first POST, 1 to 5: retries
    body: dict[str, Any]  # the JSON as sent
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str
    given_up: bool  # the last retry failed: ZIM drops the callback

    @property
    def ok(self) -> bool:
        """The app's server took it (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


class CallbackSender(Outbound):
    """Signs and posts callbacks to one URL, retrying on ZIM's schedule (times `retry_scale`)."""

    def __init__(
        self,
        url: str,
        *,
        app_id: str,
        secret: str,
        retry_scale: float,
        timeout: float,
        changed: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(timeout=timeout)
        self.url = url
        self.app_id = app_id
        self.secret = secret
        self.retry_scale = retry_scale
        self.attempts: list[CallbackAttempt] = []
        self._changed = changed
        self._rng = rng or random.Random()  # noqa: S311 - nonces only need to differ

    def signed(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A callback body: the common fields, freshly signed, then `fields`."""
        timestamp = int(time.time())
        nonce = str(self._rng.randrange(100000, 10000000))
        return {
            "appid": self.app_id,
            "event": event,
            "nonce": nonce,
            "signature": callback_signature(self.secret, timestamp, nonce),
            "timestamp": timestamp,
            **fields,
        }

    async def send(self, event: str, fields: dict[str, Any]) -> CallbackAttempt | None:
        """Posts a new callback; returns its first attempt (None without a URL). Retries, when
        needed, go on in the background."""
        if not self.url:
            return None
        body = self.signed(event, fields)
        first = await self._post(event, body, 0)
        if not first.ok and not first.given_up:
            self.spawn(self._retry(event, body))
        return first

    async def _retry(self, event: str, body: dict[str, Any]) -> None:
        for attempt, delay in enumerate(RETRY_DELAYS, start=1):
            await asyncio.sleep(delay * self.retry_scale)
            if (await self._post(event, body, attempt)).ok:
                return

    async def _post(self, event: str, body: dict[str, Any], attempt: int) -> CallbackAttempt:
        sent_at = time.monotonic()
        answer = await self.post(self.url, json.dumps(body).encode())
        ok = answer.status is not None and 200 <= answer.status < 300
        record = CallbackAttempt(
            len(self.attempts) + 1,
            sent_at,
            event,
            str(body.get("msg_id", "")),
            attempt,
            body,
            answer.status,
            answer.error,
            not ok and attempt == len(RETRY_DELAYS),
        )
        self.attempts.append(record)
        self._changed()
        return record
