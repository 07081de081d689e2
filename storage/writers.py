"""SQLite's one writer at a time, for the writers of this process: in order, urgent ones first.

Two writes have someone waiting on them: the journal insert (the platform's ack waits for it) and
the stored answer (the final text waits for it: see `Store.reply_finishing`). Under a burst,
queued behind progress writes and bookkeeping, each waited for every write ahead of it. Urgent
writes go before ordinary ones that are still waiting, never before the one in progress; among
themselves both lanes stay first come, first served. Ordinary writes cannot starve: urgent ones
come one per inbound message and one per answer, a few milliseconds each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriteQueue:
    """A lock with two lanes of waiters; `urgent` waiters are handed the turn first."""

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Holds the writer's turn for the body."""
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._hand_over()

    async def _acquire(self, urgent: bool) -> None:
        if not self._busy:
            self._busy = True
            return
        lane = self._urgent if urgent else self._ordinary
        turn = asyncio.get_running_loop().create_future()
        lane.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # handed the turn as it was cancelled: pass it on
            elif turn in lane:  # not yet passed over by a hand-over
                lane.remove(turn)
            raise

    def _hand_over(self) -> None:
        """The next waiter, urgent first, gets the turn; with none, the writer is free."""
        for lane in (self._urgent, self._ordinary):
            while lane:
                turn = lane.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._busy = False
