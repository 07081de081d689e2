"""What the clouds' callbacks say was heard of an answer cut short: the stored answer trimmed to
it when it begins with it, else only marked; an answer not stored yet gets it from the endpoint,
which asks right before it stores one.

An interruption never adds a turn: what was heard waits, briefly and bounded, in memory only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime, timedelta

from channels.voice.events import TurnInterrupted
from channels.voice.reconcile import RECONCILE_TEXT
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

# an interruption reported this long after its call ended changes nothing: the cloud's last
# callbacks come within seconds of the end, a replayed or forged one comes whenever
INTERRUPT_GRACE = timedelta(seconds=60)
HEARD_PENDING = 1000  # interruptions waiting for their answer to be stored; the oldest go first


class HeardParts:
    """What the cloud said was heard of answers the endpoint had not stored yet, by (call,
    round); bounded, the oldest dropped first. Kept in memory only: an interruption reported
    before its answer existed is a race of seconds, not something to survive a restart."""

    def __init__(self, limit: int = HEARD_PENDING) -> None:
        self._limit = limit
        self._parts: OrderedDict[tuple[str, str], str] = OrderedDict()

    def put(self, call_id: str, round: str, played: str) -> None:
        self._parts[(call_id, round)] = played
        self._parts.move_to_end((call_id, round))
        while len(self._parts) > self._limit:
            self._parts.popitem(last=False)

    def take(self, call_id: str, round: str) -> str | None:
        return self._parts.pop((call_id, round), None)


class Interruptions:
    """The clouds' interruptions applied to the stored answers, or kept for the endpoint."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._heard = HeardParts()

    async def apply(self, call: VoiceCallRecord, event: TurnInterrupted, now: datetime) -> None:
        """The round's answer was cut short: trimmed to what was heard when the stored answer
        begins with it, else only marked; not stored yet, what was heard waits for it."""
        over = min(call.ended_at or call.expires_at, call.expires_at)
        if now - over > INTERRUPT_GRACE:
            log.info("voice call %s: an interruption after its end ignored", call.id)
            return
        played = (event.played_text or "").strip() or None
        answer = await self._store.voice_turn_get(call.id, event.round, "assistant")
        if answer is None and played is not None and len(played) <= RECONCILE_TEXT:
            self._heard.put(call.id, event.round, played)
            # the endpoint may have stored it meanwhile, without asking
            answer = await self._store.voice_turn_get(call.id, event.round, "assistant")
            if answer is not None:
                self._heard.take(call.id, event.round)
        if answer is None:
            return
        heard = played if played is not None and answer.content.strip().startswith(played) else None
        await self._store.voice_turn_trim(call.id, event.round, text=heard, now=now)

    def take(self, call_id: str, round: str) -> str | None:
        """What was heard of the round's answer, reported before it was stored; taken once."""
        return self._heard.take(call_id, round)
