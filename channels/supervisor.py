"""One supervisor per channel: connect, watch, back off, and report an honest state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.model import ChannelState, InboundMessage
from channels.provider import InboundSink, ProviderFactory
from common.backoff import Backoff
from common.errors import AuthError, ChannelError, ConfigError, TransientError

log = logging.getLogger(__name__)

STOP_BUDGET = 5.0  # seconds stop() may take before it gives up waiting


StateListener = Callable[[str, ChannelState], None]


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """What the supervisor reports of its channel (the admin API and the web page show it)."""

    state: ChannelState
    connected_at: float | None  # wall clock (epoch seconds)
    last_event_at: float | None
    last_error: str | None
    reconnects: int
    messages_received: int
    next_attempt_at: float | None


class Supervisor:
    """Keeps one provider connected; stops retrying only on auth or config errors.

    It builds the provider it owns with `build`, handing it a sink that counts each inbound
    message for the status and passes it on to `sink`.
    """

    def __init__(
        self,
        channel_id: str,
        build: ProviderFactory,
        *,
        sink: InboundSink,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_state: StateListener | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.channel_id = channel_id
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311  (jitter, not cryptography)
        self._on_state = on_state
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._state = ChannelState.DISCONNECTED
        self._connected_at: float | None = None
        self._last_error: str | None = None
        self._reconnects = 0
        self._attempts = 0
        self._sessions = 0
        self._next_attempt_at: float | None = None
        self.messages_received = 0
        self.last_event_at: float | None = None
        self.provider = build(self._receive)

    # -- status ---------------------------------------------------------------------------------

    def _set_state(self, state: ChannelState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_state is not None:
                self._on_state(self.channel_id, state)

    @property
    def state(self) -> ChannelState:
        return self._state

    def status(self) -> ChannelStatus:
        return ChannelStatus(
            state=self._state,
            connected_at=self._connected_at if self._state is ChannelState.CONNECTED else None,
            last_event_at=self.last_event_at,
            last_error=self._last_error,
            reconnects=self._reconnects,
            messages_received=self.messages_received,
            next_attempt_at=self._next_attempt_at,
        )

    async def _receive(self, message: InboundMessage) -> None:
        self.received(1)
        await self._sink(message)

    def received(self, count: int) -> None:
        """Count messages that reached the channel (also those a callback delivered)."""
        self.messages_received += count
        self.last_event_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin supervising; the returned task is owned here and ended by stop()."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"supervisor-{self.channel_id}")

    async def stop(self, final_state: ChannelState = ChannelState.DISABLED) -> None:
        """End supervision and close the provider; bounded, idempotent."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    async with asyncio.timeout(STOP_BUDGET):
                        await task
                except TimeoutError:
                    log.error("channel %s: supervisor did not stop in time", self.channel_id)
        await self.provider.close()
        if self._state is not ChannelState.FAILED or final_state is ChannelState.DISABLED:
            self._set_state(final_state)

    async def _run(self) -> None:
        while True:
            self._set_state(ChannelState.CONNECTING)
            self._attempts += 1
            try:
                await self.provider.start()
            except (AuthError, ConfigError) as exc:
                self._fail(exc)
                return
            except ChannelError as exc:
                await self._back_off(exc)
                continue
            except Exception as exc:
                log.exception("channel %s: unexpected error while connecting", self.channel_id)
                await self._back_off(exc)
                continue
            began = time.monotonic()
            self._sessions += 1
            if self._sessions > 1:
                self._reconnects += 1
                if self._on_reconnect is not None:
                    self._on_reconnect()
            self._connected_at = time.time()
            self._next_attempt_at = None
            self._set_state(ChannelState.CONNECTED)
            log.info("channel %s: connected", self.channel_id)
            try:
                await self.provider.wait_closed()
                reason: BaseException | None = None
            except ChannelError as exc:
                reason = exc
            except Exception as exc:
                log.exception("channel %s: session ended by an unexpected error", self.channel_id)
                reason = exc
            if time.monotonic() - began >= self._backoff.healthy_after:
                self._attempts = 0
            if reason is None:
                # the gateway asked us to move (SYSTEM disconnect): reconnect at once
                log.info("channel %s: gateway ended the session; reconnecting", self.channel_id)
                self._attempts = 0
                continue
            if isinstance(reason, AuthError | ConfigError):
                self._fail(reason)
                return
            await self._back_off(reason)

    def _fail(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._next_attempt_at = None
        log.error("channel %s: failed, not retrying until edited: %s", self.channel_id, exc)
        self._set_state(ChannelState.FAILED)

    async def _back_off(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        delay = self._backoff.delay(max(1, self._attempts), self._rng)
        if isinstance(exc, TransientError) and exc.retry_after:
            # a rate limit's hint, or the platform's own reconnect schedule (Feishu ClientConfig)
            delay = max(delay, exc.retry_after)
        self._next_attempt_at = time.time() + delay
        self._set_state(ChannelState.DISCONNECTED)
        log.warning(
            "channel %s: %s; next attempt in %.1fs", self.channel_id, self._last_error, delay
        )
        await self._sleep(delay)
