"""After an Alibaba call ends: the cloud's own record of the dialogue compared with the
conversation's stored turns, and any turn the endpoint never saw added, once.

Alibaba's session is the conversation, which other calls share: only the call's own part of the
session is asked for (its time, with a margin for the cloud's clock, stopping at the previous
call's end and the next call's start), only spoken sentences are taken, and a sentence any call
of the conversation stored already is not added. Both the search and what is added are bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from channels import normalize
from channels.voice import aliyun
from channels.voice.endpoint import MAX_UTTERANCE
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

RECONCILE_MARGIN = timedelta(minutes=1)  # the cloud's clock may differ a little from ours
RECONCILE_TURNS = 1000  # the conversation's latest voice turns searched for a recorded one
RECONCILE_ADDED = 200  # turns one reconciliation adds at most: a call is far shorter
RECONCILE_TEXT = MAX_UTTERANCE  # characters of a recorded turn kept, as the endpoint's utterances


class DialogueRecord(Protocol):
    """Where a call's dialogue, as the cloud recorded it, is read back (Alibaba's API)."""

    async def list_dialogues(
        self, *, session_id: str, start_ms: int, end_ms: int
    ) -> list[aliyun.Dialogue]: ...


def _same_turn(role: str, content: str, other_role: str, other: str) -> bool:
    """Whether a stored turn is this recorded one: the same text (an answer cut short by an
    interruption is a beginning of the recorded one, or the other way round)."""
    if role != other_role:
        return False
    content = content.strip()
    if role == "assistant" and content and other:
        return content.startswith(other) or other.startswith(content)
    return content == other


async def add_unseen_turns(
    store: Store, call: VoiceCallRecord, api: DialogueRecord, clock: Callable[[], datetime]
) -> int:
    """Adds the rounds Alibaba recorded in this call that the endpoint never saw; how many
    turns.

    Alibaba's session is the conversation, which other calls share: only the time between
    the previous call's end and the next call's start is asked for, only spoken sentences
    are taken, and a sentence any call of the conversation stored already is not added.
    """
    window = await _window(store, call, clock)
    if window is None:
        return 0
    dialogues = await api.list_dialogues(
        session_id=call.conversation_id, start_ms=window[0], end_ms=window[1]
    )
    stored = await store.voice_rounds(call.id)
    said = [
        (turn.role, turn.content)
        for turn in await store.voice_turns_of_conversation(call.conversation_id, RECONCILE_TURNS)
    ]
    added = 0
    for dialogue in sorted(dialogues, key=lambda d: (d.time_ms, d.role != "user")):
        if dialogue.source != "call":
            continue  # the same agent's text chat in this session, not this call
        text = normalize.text(dialogue.text).strip()[:RECONCILE_TEXT]
        if (dialogue.round_id, dialogue.role) in stored or not text:
            continue
        if any(_same_turn(role, content, dialogue.role, text) for role, content in said):
            # Alibaba's RoundId may not be the sentenceId the endpoint saw: the text decides
            continue
        if added == RECONCILE_ADDED:
            log.warning(
                "voice call %s: Alibaba recorded more than %d turns the endpoint never saw; "
                "the rest are not added",
                call.id,
                RECONCILE_ADDED,
            )
            break
        await store.voice_turn_put(
            call.conversation_id,
            call_id=call.id,
            round=dialogue.round_id,
            role=dialogue.role,
            content=text,
            now=clock(),
        )
        stored.add((dialogue.round_id, dialogue.role))
        said.append((dialogue.role, text))
        added += 1
    if added:
        log.info("voice call %s: %d turn(s) added from Alibaba's record", call.id, added)
    return added


async def _window(
    store: Store, call: VoiceCallRecord, clock: Callable[[], datetime]
) -> tuple[int, int] | None:
    """The milliseconds of the call's own part of its session, with a margin for the
    cloud's clock that stops at the conversation's previous and next calls; None: none."""
    low = call.started_at - RECONCILE_MARGIN
    high = (call.ended_at or clock()) + RECONCILE_MARGIN
    calls = await store.voice_calls_of_conversation(call.conversation_id)
    ids = [other.id for other in calls]
    if call.id in ids:
        at = ids.index(call.id)
        if at > 0:
            low = max(low, calls[at - 1].ended_at or call.started_at)
        if at + 1 < len(calls):
            high = min(high, calls[at + 1].started_at)
    if low >= high:
        return None
    return int(low.timestamp() * 1000), int(high.timestamp() * 1000)
