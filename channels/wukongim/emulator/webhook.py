"""The webhook pusher of WuKongIM v2.2.5 (internal/webhook/webhook.go notifyQueueLoop).

Every persisted message joins a queue. A ticker (`msgNotifyEventPushInterval`, 500 ms) or a full
batch (`msgNotifyEventCountPerPush`, 100) sends everything queued as one JSON array to
`{httpAddr}?event=msg.notify`, built with `fmt.Sprintf("%s?event=%s", ...)`: an address that
already has a query gets a second `?` (kept byte for byte). Only HTTP 200 is success. A failed
batch adds one to each message's error count; messages below `msgNotifyEventRetryMaxCount` (5)
go back to the front of the queue, the others are dropped; then the loop sleeps 1 s, and the tick
that fell due meanwhile pushes at once. A message is thus sent at most 5 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from yarl import URL

from channels.emulator.outbound import Outbound
from channels.wukongim.emulator.payloads import go_json, message_resp
from channels.wukongim.emulator.state import Message

EVENT = "msg.notify"
USER_AGENT = "Go-http-client/1.1"  # net/http's default, which the server does not override


@dataclass(frozen=True, slots=True)
class PushAttempt:
    """One POST of a batch to the webhook and how the receiver answered."""

    seq: int
    at: float  # time.monotonic() when sent
    url: str  # exactly as requested
    message_ids: tuple[str, ...]
    body: list[dict[str, object]]  # the JSON array as sent
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str
    dropped: tuple[str, ...]  # messages given up after this attempt

    @property
    def ok(self) -> bool:
        """The receiver took the batch (exactly HTTP 200)."""
        return self.status == 200


class WebhookPusher(Outbound):
    """Batches persisted messages to the webhook address, retrying as the server does."""

    def __init__(
        self,
        url: str,
        *,
        interval: float,
        count_per_push: int,
        retry_max: int,
        retry_pause: float,
        timeout: float,
        changed: Callable[[], None],
    ) -> None:
        super().__init__(timeout=timeout, headers={"User-Agent": USER_AGENT})
        self.url = url
        self.interval = interval
        self.threshold = count_per_push if count_per_push > 0 else 20
        self.retry_max = retry_max
        self.retry_pause = retry_pause
        self.paused = False
        self.pending: list[Message] = []
        self.attempts: list[PushAttempt] = []
        self._errors: dict[int, int] = {}  # message id -> failed pushes so far
        self._changed = changed
        self._wake = asyncio.Event()
        self._flush = False

    @property
    def enabled(self) -> bool:
        """A webhook address is set (the server queues nothing without one)."""
        return bool(self.url)

    def start(self) -> None:
        """Starts the push loop on the running loop; `stop()` forgets what is still queued."""
        super().start()
        self.spawn(self._run(), name="wukongim-webhook")

    def enqueue(self, messages: list[Message]) -> bool:
        """Queues messages for the next batch; False when no webhook is set."""
        if not self.enabled:
            return False
        self.pending.extend(messages)
        if len(self.pending) >= self.threshold:
            self.flush()
        return True

    def flush(self) -> None:
        """Pushes what is queued now instead of at the next tick (unless paused)."""
        self._flush = True
        self._wake.set()

    def pause(self, on: bool) -> None:
        """Holds (or releases) every push; messages keep queueing. Releasing pushes at once."""
        self.paused = on
        if not on:
            self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - loop.time()))
            self._wake.clear()
            now = loop.time()
            due = now >= next_tick or self._flush
            while next_tick <= now:  # a ticker drops the ticks nobody read
                next_tick += self.interval
            if not due or self.paused or not self.pending:
                continue
            self._flush = False
            batch, self.pending = self.pending, []
            if not await self._push(batch):
                # a tick that falls due meanwhile waits in the ticker's channel: the retry goes
                # out right after the pause (at the next tick when the interval is longer)
                await asyncio.sleep(self.retry_pause)

    async def _push(self, batch: list[Message]) -> bool:
        body = [message_resp(m) for m in batch]
        url = f"{self.url}?event={EVENT}"
        answer = await self.post(URL(url, encoded=True), go_json(body))
        ok = answer.status == 200
        dropped: list[str] = []
        if ok:
            for m in batch:
                self._errors.pop(m.message_id, None)
        else:
            retry: list[Message] = []
            for m in batch:
                count = self._errors[m.message_id] = self._errors.get(m.message_id, 0) + 1
                if count >= self.retry_max:
                    del self._errors[m.message_id]
                    dropped.append(str(m.message_id))
                else:
                    retry.append(m)
            self.pending = (retry + self.pending)[-self.threshold * 5 :]
        self.attempts.append(
            PushAttempt(
                len(self.attempts) + 1,
                time.monotonic(),
                url,
                tuple(str(m.message_id) for m in batch),
                json.loads(go_json(body)),
                answer.status,
                answer.error,
                tuple(dropped),
            )
        )
        self._changed()
        return ok
