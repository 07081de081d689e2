"""A voice cloud's callbacks to the console's callback URL: JSON POSTs in the background, retried
on the cloud's schedule while the answer is not 2xx or missing (ZEGO: 2, 4, 8, 16 and 32 s, each
counted from the previous attempt; Alibaba documents none, so it sends once). A retry sends the
same body and headers."""

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

    def send(
        self,
        url: str,
        event: str,
        instance_id: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Sends `body` to `url` (nothing when it is "") and retries as needed, all in the
        background: a cloud's API answers before its callbacks arrive."""
        if url:
            self.spawn(self._deliver(url, event, instance_id, body, dict(headers or {})))

    async def _deliver(
        self, url: str, event: str, instance_id: str, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        for attempt in range(len(self.retry_delays) + 1):
            if attempt:
                await asyncio.sleep(self.retry_delays[attempt - 1] * self.retry_scale)
            sent_at = time.monotonic()
            answer = await self._post(url, data, headers)
            ok = answer.status is not None and 200 <= answer.status < 300
            last = attempt == len(self.retry_delays)
            self.attempts.append(
                CallbackAttempt(
                    len(self.attempts) + 1,
                    sent_at,
                    event,
                    instance_id,
                    attempt,
                    url,
                    body,
                    answer.status,
                    answer.error,
                    not ok and last,
                )
            )
            self._changed()
            if ok:
                return

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
