"""A voice cloud's callbacks to the console's callback URL: JSON POSTs in the background, first
attempts in the order the events happened, retried on the cloud's schedule while the answer is
not 2xx or missing (ZEGO: 2, 4, 8, 16 and 32 s, each counted from the previous attempt; Alibaba
documents none, so it sends once). A retry sends the same body and headers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from channels.emulator.outbound import Answer, Outbound


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One POST of a callback and how the app's server answered."""

    seq: int
    at: float  # time.monotonic() when sent
    event: str
    instance_id: str
    attempt: int  # 0: the first POST, then retries
    url: str
    body: dict[str, Any]  # the JSON as sent
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str
    given_up: bool  # it failed and no retry follows: the cloud drops the callback

    @property
    def ok(self) -> bool:
        """The app's server took it (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (headers are not kept: they carry the callback token)."""
        return {
            "seq": self.seq,
            "event": self.event,
            "instance_id": self.instance_id,
            "attempt": self.attempt,
            "url": self.url,
            "body": self.body,
            "status": self.status,
            "error": self.error,
            "given_up": self.given_up,
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class _Pending:
    """A callback waiting for its first attempt."""

    url: str
    event: str
    instance_id: str
    body: dict[str, Any]
    headers: dict[str, str]


class CallbackSender(Outbound):
    """Posts callbacks in the background, retrying after `retry_delays` (times `retry_scale`)."""

    def __init__(
        self,
        *,
        retry_delays: tuple[float, ...],
        retry_scale: float,
        timeout: float,
        changed: Callable[[], None],
    ) -> None:
        super().__init__(timeout=timeout)
        self.retry_delays = retry_delays
        self.retry_scale = retry_scale
        self.attempts: list[CallbackAttempt] = []
        self._changed = changed
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    def start(self) -> None:
        """Opens the HTTP client and starts posting what is queued."""
        super().start()
        self.spawn(self._post_in_order(), name="voice-callbacks")

    def send(
        self,
        url: str,
        event: str,
        instance_id: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queues `body` for `url` (nothing when it is ""): a cloud's API answers before its
        callbacks arrive."""
        if url:
            self._queue.put_nowait(_Pending(url, event, instance_id, body, dict(headers or {})))

    async def _post_in_order(self) -> None:
        while True:
            pending = await self._queue.get()
            if not await self._attempt(pending, 0) and self.retry_delays:
                self.spawn(self._retry(pending))

    async def _retry(self, pending: _Pending) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=1):
            await asyncio.sleep(delay * self.retry_scale)
            if await self._attempt(pending, attempt):
                return

    async def _attempt(self, pending: _Pending, attempt: int) -> bool:
        """One POST, recorded; whether the app's server took it."""
        sent_at = time.monotonic()
        data = json.dumps(pending.body, ensure_ascii=False).encode()
        answer = await self._post(pending.url, data, pending.headers)
        ok = answer.status is not None and 200 <= answer.status < 300
        self.attempts.append(
            CallbackAttempt(
                len(self.attempts) + 1,
                sent_at,
                pending.event,
                pending.instance_id,
                attempt,
                pending.url,
                pending.body,
                answer.status,
                answer.error,
                not ok and attempt == len(self.retry_delays),
            )
        )
        self._changed()
        return ok

    async def _post(self, url: str, data: bytes, headers: dict[str, str]) -> Answer:
        if not headers:
            return await self.post(url, data)
        # `Outbound.post` sends no headers of its own; Alibaba's callbacks carry a token
        if self._http is None:
            raise RuntimeError("callback sender not started")
        started = time.monotonic()
        try:
            async with self._http.post(
                url, data=data, headers={"Content-Type": "application/json", **headers}
            ) as resp:
                text = await resp.text(errors="replace")
                return Answer(resp.status, text, time.monotonic() - started, "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Answer(None, "", time.monotonic() - started, f"{type(exc).__name__}: {exc}")
