"""A circuit breaker per agent: stop calling a model that keeps failing, try it again later."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from agents.base import Agent, AgentRequest
from common.errors import ChannelError, TransientError

logger = logging.getLogger(__name__)


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(TransientError):
    """The agent's breaker is open: it was skipped without a request."""


CircuitObserver = Callable[[str, bool], None]  # (agent name, open or half-open)


def _wall_now() -> datetime:
    return datetime.now(UTC)


class CircuitBreaker:
    """Closed until `failures` consecutive failures; then open for `cooldown` seconds; then
    half-open, letting exactly one trial call through: its success closes, its failure reopens."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _wall_now,
        observer: CircuitObserver | None = None,
    ) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self.name = name
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._wall_clock = wall_clock
        self._observer = observer
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened = 0.0  # monotonic, for the cooldown
        self._opened_at: datetime | None = None  # wall clock, for people
        self._trial_running = False
        self._notify()

    @property
    def state(self) -> CircuitState:
        """The state now; an open breaker past its cooldown reads as half-open."""
        if self._state is CircuitState.OPEN and self._cooled_down():
            return CircuitState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go now; True in half-open claims the one trial until settled."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            if not self._cooled_down():
                return False
            self._state = CircuitState.HALF_OPEN
        if self._trial_running:
            return False
        self._trial_running = True
        return True

    def succeeded(self) -> None:
        """A call answered: the breaker closes and the failure count starts again."""
        self._trial_running = False
        self._failures = 0
        if self._state is not CircuitState.CLOSED:
            self._state = CircuitState.CLOSED
            self._opened_at = None
            self._notify()

    def failed(self, *, admitted_closed: bool = False) -> None:
        """A call failed with a classified error; opens at the threshold or after a trial.

        `admitted_closed`: the call was let through while closed; if the breaker has opened
        since, its late failure changes nothing (and must not settle the trial in flight).
        """
        if admitted_closed and self._state is not CircuitState.CLOSED:
            return
        self._failures += 1
        trial = self._state is CircuitState.HALF_OPEN
        self._trial_running = False
        if trial or self._failures >= self._threshold:
            self._state = CircuitState.OPEN
            self._opened = self._clock()
            self._opened_at = self._wall_clock()
            logger.warning(
                "agent %r: circuit breaker open after %d consecutive failure(s); skipped for %gs",
                self.name,
                self._failures,
                self._cooldown,
            )
            self._notify()

    def abandoned(self, *, admitted_closed: bool = False) -> None:
        """A call ended without a verdict (cancelled, stopped before any text): counts nothing,
        but frees the trial slot, when it held it, so the next call may try."""
        if not admitted_closed:
            self._trial_running = False

    def snapshot(self) -> dict[str, Any]:
        """State, consecutive failures and when it last opened (ISO 8601, UTC), for the API."""
        opened_at = None if self._opened_at is None else self._opened_at.isoformat()
        return {"state": str(self.state), "failures": self._failures, "opened_at": opened_at}

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened >= self._cooldown

    def _notify(self) -> None:
        if self._observer is not None:
            self._observer(self.name, self._state is not CircuitState.CLOSED)


class CircuitAgent:
    """An agent behind its breaker: skipped with CircuitOpen, no request, while it is open."""

    def __init__(self, agent: Agent, breaker: CircuitBreaker) -> None:
        self.name = agent.name
        self.agent = agent
        self.breaker = breaker

    def __repr__(self) -> str:
        return f"CircuitAgent({self.agent!r})"

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        """The agent's deltas; its classified errors count against the breaker."""
        admitted_closed = self.breaker.state is CircuitState.CLOSED
        if not self.breaker.allow():
            raise CircuitOpen(f"agent {self.name!r} skipped: its circuit breaker is open")
        answered = False
        deltas = self.agent.stream(request)
        try:
            async for delta in deltas:
                answered = True
                yield delta
        except ChannelError:
            self.breaker.failed(admitted_closed=admitted_closed)
            raise
        except BaseException:
            # a stop after text (the model was answering) is a success; a stop, cancellation
            # or bug before any text says nothing about the model
            if answered:
                self.breaker.succeeded()
            else:
                self.breaker.abandoned(admitted_closed=admitted_closed)
            raise
        finally:
            aclose: Any = getattr(deltas, "aclose", None)  # the Agent protocol does not promise it
            if aclose is not None:
                await aclose()
        self.breaker.succeeded()

    async def aclose(self) -> None:
        """Close the wrapped agent."""
        await self.agent.aclose()
