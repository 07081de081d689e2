"""What the emulated server does with a message once it is accepted: persists it in its
channel, shows it to the channel's members (the chat transcript), queues it for the webhook, and
applies message events to the streamed answer they belong to. The HTTP API and the control plane
both go through here, so a user's message and the bot's answer follow the same path.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from channels.wukongim.emulator.history import event_meta, merged_states
from channels.wukongim.emulator.payloads import b64, message_resp, parsed_json, shown_text
from channels.wukongim.emulator.state import (
    PERSON,
    SETTING_STREAM,
    ChatItem,
    EmulatorState,
    Message,
    StreamCard,
    stored_channel_id,
)
from channels.wukongim.emulator.streams import (
    CANCEL,
    CLOSE,
    DELTA,
    ERROR,
    FINISH,
    MAIN_KEY,
    SNAPSHOT,
    EventRequest,
    EventStore,
    Pushed,
)
from channels.wukongim.emulator.webhook import WebhookPusher


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One accepted `/message/event` call and what online clients received."""

    seq: int
    at: float  # time.monotonic()
    chat_id: str
    client_msg_no: str
    event_id: str
    event_type: str
    event_key: str
    msg_event_seq: int
    stream_status: str
    payload: Any
    anchored: bool  # a streamed message with this client_msg_no exists in the channel
    repeated: bool  # this event_id was accepted before for this client_msg_no


def new_client_msg_no() -> str:
    """What the server assigns when a send names none: a UUID without dashes, then `0`."""
    return uuid.uuid4().hex + "0"


class Messaging:
    """Persists messages, keeps chats and streamed answers, feeds the webhook."""

    def __init__(self, state: EmulatorState, events: EventStore, pusher: WebhookPusher) -> None:
        self._state = state
        self._events = events
        self._pusher = pusher
        self.records: list[EventRecord] = []
        self._seen: set[tuple[str, str, str]] = set()  # (chat, client_msg_no, event_id)

    def send(
        self,
        from_uid: str,
        channel_id: str,
        channel_type: int,
        payload: bytes,
        *,
        client_msg_no: str = "",
        stream: bool = False,
        persist: bool = True,
        red_dot: int = 1,
        sync_once: int = 0,
        expire: int = 0,
    ) -> Message:
        """One message into a channel: persisted (unless `persist` is off), shown to the
        channel's members and queued for the webhook."""
        chat_id = stored_channel_id(channel_id, channel_type, from_uid)
        message = Message(
            self._state.ids.next(),
            0,
            client_msg_no or new_client_msg_no(),
            from_uid,
            chat_id,
            channel_type,
            payload,
            int(time.time()),
            setting=SETTING_STREAM if stream else 0,
            red_dot=red_dot,
            sync_once=sync_once,
            expire=expire,
            chat_id=chat_id,
        )
        if persist:
            self._state.store(message)
            self._pusher.enqueue([message])
        self._show(message)
        if stream:
            self._events.register_stream(
                message.client_msg_no, chat_id, channel_type, from_uid, message.message_id
            )
        return message

    def redeliver(self, message_ids: list[int]) -> list[Message]:
        """Queues stored messages for the webhook again, in one batch when nothing else is due."""
        messages = [self._state.messages[i] for i in message_ids]
        self._pusher.enqueue(messages)
        return messages

    def _show(self, message: Message) -> None:
        chat = self._state.chat(message.chat_id, message.channel_type)
        payload = parsed_json(message.payload)
        sender = message.from_uid
        item_id = str(message.message_id)
        kind = "user"
        if sender in self._state.apps:
            kind = "card" if message.streamed else "message"
        if kind == "card":
            self._state.cards[item_id] = StreamCard(
                item_id, message.client_msg_no, message.chat_id, sender
            )
        text = "" if kind == "card" else shown_text(payload, message.payload)
        item = ChatItem(
            item_id, kind, time.monotonic(), sender, text, message.client_msg_no, payload
        )
        self._state.add_item(chat, item)

    def event(self, request: EventRequest) -> dict[str, Any]:
        """Applies one message event; returns the answer's `data`."""
        answer, pushed = self._events.append(request)
        self._record(pushed)
        return answer

    def _record(self, pushed: Pushed) -> None:
        card = self._state.card_of(pushed.channel_id, pushed.client_msg_no)
        anchored = any(
            m.streamed and m.client_msg_no == pushed.client_msg_no
            for m in self._state.channels.get((pushed.channel_id, pushed.channel_type), [])
        )
        seen = (pushed.channel_id, pushed.client_msg_no, pushed.event_id)
        self.records.append(
            EventRecord(
                len(self.records) + 1,
                time.monotonic(),
                pushed.channel_id,
                pushed.client_msg_no,
                pushed.event_id,
                pushed.event_type,
                pushed.event_key,
                pushed.msg_event_seq,
                pushed.stream_status,
                pushed.payload,
                anchored=anchored,
                repeated=seen in self._seen,
            )
        )
        self._seen.add(seen)
        if card is not None:
            self._render(card, pushed)
        self._state.notify(pushed.channel_id)

    @staticmethod
    def _render(card: StreamCard, pushed: Pushed) -> None:
        """What a client following the stream guide does with a pushed event (it does not
        dedupe by event_id: every delta it receives is appended)."""
        event_type = pushed.event_type.strip().lower()
        card.events.append(event_type)
        payload = pushed.payload if isinstance(pushed.payload, dict) else {}
        if event_type == FINISH:
            card.completed = True
            card.streaming = False
            return
        if pushed.event_key != MAIN_KEY:
            return
        snapshot = payload.get("snapshot")
        if event_type == DELTA:
            card.streaming = True
            delta = payload.get("delta")
            if payload.get("kind") == "text" and isinstance(delta, str):
                card.text += delta
        elif event_type == SNAPSHOT and payload.get("kind") == "text":
            card.text = str(payload.get("text", card.text))
        elif event_type in (CLOSE, ERROR, CANCEL):
            card.streaming = False
            card.main_status = pushed.stream_status
            if isinstance(snapshot, dict) and snapshot.get("kind") == "text":
                card.text = str(snapshot.get("text", card.text))
            if event_type == ERROR:
                card.error = str(payload.get("error") or "unknown error")

    # -- history ---------------------------------------------------------------------------------

    def history(
        self,
        login_uid: str,
        channel_id: str,
        channel_type: int,
        *,
        start: int,
        end: int,
        limit: int,
        pull_up: bool,
        full_meta: bool,
    ) -> dict[str, Any]:
        """`/channel/messagesync`: a range of a channel's messages, streams with event_meta."""
        stored = channel_id
        if channel_type == PERSON:
            stored = stored_channel_id(channel_id, PERSON, login_uid)
        channel = self._state.channels.get((stored, channel_type))
        if channel is None:
            return {"start_message_seq": 0, "end_message_seq": 0, "more": 0, "messages": []}
        last = len(channel)
        if start == 0 and end == 0:
            picked = _previous(channel, last, 0, limit)
        elif pull_up:
            upper = last + 1 if end == 0 else min(end, last + 1)
            picked = [m for m in channel if start <= m.message_seq < upper]
            picked = picked[:limit] if limit > 0 else picked
        elif end <= start:
            picked = _previous(channel, start, end, limit)
        else:
            picked = []
        more = len(picked) >= limit
        if picked and end != 0:
            edge = picked[-1] if pull_up else picked[0]
            more = more and edge.message_seq != end
        messages = [self._resp(m, full_meta) for m in picked]
        return {
            "start_message_seq": start,
            "end_message_seq": end,
            "more": int(more),
            "messages": messages,
        }

    def _resp(self, message: Message, full_meta: bool) -> dict[str, Any]:
        if not message.streamed or not message.client_msg_no:
            return message_resp(message)
        states = merged_states(
            self._events, message.channel_id, message.channel_type, message.client_msg_no
        )
        if not states:
            return message_resp(message)
        meta, legacy = event_meta(states, full_meta)
        if "stream_data" in legacy:
            legacy["stream_data"] = b64(legacy["stream_data"])
        hint = {"client_msg_no": message.client_msg_no, "from_msg_event_seq": 0}
        return message_resp(message, {**legacy, "event_meta": meta, "event_sync_hint": hint})


def _previous(channel: list[Message], start: int, end: int, limit: int) -> list[Message]:
    """LoadPrevRangeMsgs: up to `limit` messages ending at `start`, after `end`, oldest first."""
    if start == 0:
        raise ValueError(f"start messageSeq[{start}] must be greater than 0")
    if end:
        lower = start - limit + 1 if start - end > limit else end + 1
    else:
        lower = 1 if start < limit else start - limit + 1
    upper = min(start + 1, len(channel) + 1)
    return [m for m in channel if lower <= m.message_seq < upper]
