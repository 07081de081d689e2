"""Event pushes over the long connection: cluster-mode delivery, split parts, redelivery.

A split event's parts share one LogID and carry their own SeqIDs; they are sent in a shuffled
order that is never the natural one, and an ack must echo the SeqID of one of the parts (the
real gateway's numbering is unverified). Until some connection acks an event with code 200 it
is pushed again on the redelivery schedule with a new `event_id` and the same `message_id`.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.feishu import frames
from channels.feishu.emulator.state import EmulatorState

if TYPE_CHECKING:
    from channels.feishu.emulator.gateway import Gateway

REDELIVERY_SCHEDULE = (15.0, 300.0, 3600.0, 21600.0)  # 事件概述: 15 s, 5 min, 1 h, 6 h


@dataclass
class Delivery:
    """One push of an event (all its parts) to one connection."""

    frame_message_id: str
    app_id: str
    message_id: str  # the om_ id inside the event, "" for raw events
    event_id: str
    connection_id: str  # "" when no connection could take it
    seq_ids: tuple[int, ...]
    log_id: int
    service: int
    sent_at: float  # monotonic time the last part went out
    delivered: bool  # False: swallowed by a silenced socket or no connection
    ack_code: int | None = None


@dataclass
class _Pending:
    """An event Feishu keeps pushing until it is acked with code 200."""

    app_id: str
    payload: dict[str, Any]
    parts: int
    deliveries: list[Delivery] = field(default_factory=list)
    acked: bool = False


def split(payload: bytes, parts: int) -> list[bytes]:
    """`parts` non-empty consecutive chunks (lark-oapi treats an empty part as missing)."""
    if parts < 1 or parts > len(payload):
        raise ValueError(f"cannot split {len(payload)} bytes into {parts} parts")
    size, extra = divmod(len(payload), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(payload[start:end])
        start = end
    return chunks


class EventPusher:
    """Pushes events through a gateway's live connections and keeps redelivering them."""

    def __init__(
        self,
        state: EmulatorState,
        gateway: Gateway,
        *,
        redelivery_schedule: Sequence[float],
        rng: random.Random,
    ) -> None:
        self._state = state
        self._gateway = gateway
        self.redelivery_schedule = tuple(redelivery_schedule)
        self._rng = rng
        self._pending: dict[str, _Pending] = {}  # keyed by the first frame message id
        self.deliveries: dict[str, Delivery] = {}  # frame message id -> delivery
        self._seq = 0

    def acked(self, delivery: Delivery, code: int | None) -> None:
        """A matching ack arrived; code 200 ends the event's redelivery."""
        delivery.ack_code = code
        if code == 200:
            for pending in self._pending.values():
                if delivery in pending.deliveries:
                    pending.acked = True

    async def push(
        self,
        app_id: str,
        payload: dict[str, Any],
        *,
        parts: int = 1,
        connection_id: str | None = None,
        redeliver: bool = True,
    ) -> Delivery:
        """Pushes an event to one random live connection of the app (cluster mode).

        Until a connection acks it with code 200, it is pushed again on the redelivery schedule
        with a new `event_id` (and the same `message_id`), as Feishu does.
        """
        delivery = await self._deliver(app_id, payload, parts, connection_id)
        pending = _Pending(app_id, payload, parts, [delivery])
        self._pending[delivery.frame_message_id] = pending
        if redeliver and self.redelivery_schedule:
            # the gateway owns the task: closing it ends the redeliveries
            self._gateway.spawn(self._redeliver_later(pending))
        return delivery

    async def _redeliver_later(self, pending: _Pending) -> None:
        for delay in self.redelivery_schedule:
            await asyncio.sleep(delay)
            if pending.acked:
                return
            payload = with_new_event_id(pending.payload)
            pending.payload = payload
            delivery = await self._deliver(pending.app_id, payload, pending.parts, None)
            pending.deliveries.append(delivery)

    async def redeliver(self, key: str, *, new_event_id: bool = True) -> Delivery:
        """Pushes an earlier event again now, found by its om_ id or a frame message id."""
        source = next(
            (
                p
                for p in self._pending.values()
                for d in p.deliveries
                if key in (d.message_id, d.frame_message_id)
            ),
            None,
        )
        if source is None:
            raise KeyError(f"no event with message id {key!r} was pushed")
        payload = with_new_event_id(source.payload) if new_event_id else source.payload
        source.payload = payload
        delivery = await self._deliver(source.app_id, payload, source.parts, None)
        source.deliveries.append(delivery)
        return delivery

    async def _deliver(
        self, app_id: str, payload: dict[str, Any], parts: int, connection_id: str | None
    ) -> Delivery:
        candidates = [c for c in self._gateway.live(app_id) if connection_id in (None, c.id)]
        awake = [c for c in candidates if not c.silenced]
        # Random choice models Feishu's cluster mode; not a security decision.
        conn = self._rng.choice(awake or candidates) if candidates else None
        body = json.dumps(payload, ensure_ascii=False).encode()
        chunks = split(body, parts)
        log_id = self._rng.randrange(1, 2**62)
        seq_ids = tuple(range(self._seq + 1, self._seq + 1 + len(chunks)))
        self._seq += len(chunks)
        event_id, message_id = _ids_of(payload)
        delivery = Delivery(
            frame_message_id=str(uuid.uuid4()),
            app_id=app_id,
            message_id=message_id,
            event_id=event_id,
            connection_id=conn.id if conn else "",
            seq_ids=seq_ids,
            log_id=log_id,
            service=conn.service_id if conn else 0,
            sent_at=time.monotonic(),
            delivered=False,
        )
        self.deliveries[delivery.frame_message_id] = delivery
        if conn is not None and not conn.silenced:
            order = list(range(len(chunks)))
            if len(order) > 1:
                while order == sorted(order):
                    self._rng.shuffle(order)
            trace_id = secrets.token_hex(16)
            sent_all = True
            for index in order:
                frame = frames.data_frame(
                    service=conn.service_id,
                    seq_id=seq_ids[index],
                    log_id=log_id,
                    headers={
                        frames.TYPE: frames.EVENT,
                        frames.MESSAGE_ID: delivery.frame_message_id,
                        frames.SUM: str(len(chunks)),
                        frames.SEQ: str(index),
                        frames.TRACE_ID: trace_id,
                    },
                    payload=chunks[index],
                )
                if not await self._gateway.send(conn, frames.encode(frame)):
                    sent_all = False
                    break
                conn.events_sent += 1
            delivery.delivered = sent_all
            delivery.sent_at = time.monotonic()
        self._state.notify()
        return delivery


def with_new_event_id(payload: dict[str, Any]) -> dict[str, Any]:
    """The same event under a fresh `header.event_id` (redeliveries get one)."""
    header = payload.get("header")
    if not isinstance(header, dict):
        return payload
    return {**payload, "header": {**header, "event_id": secrets.token_hex(16)}}


def _ids_of(payload: dict[str, Any]) -> tuple[str, str]:
    """(event_id, om_ message_id) of an event envelope; "" where absent (raw events)."""
    header = payload.get("header")
    event = payload.get("event")
    message = event.get("message") if isinstance(event, dict) else None
    return (
        str(header.get("event_id", "")) if isinstance(header, dict) else "",
        str(message.get("message_id", "")) if isinstance(message, dict) else "",
    )
