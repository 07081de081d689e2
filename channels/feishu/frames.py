"""The pbbp2 frames of Feishu's event long connection, shared by our client and the emulator.

`pbbp2_pb2` is generated from `pbbp2.proto` by protoc (`make proto`); this module only builds
and reads frames. Header names and frame kinds follow lark-oapi 1.7.5 `ws/const.py` and
`ws/enum.py` (docs/platforms/feishu.md §1.3).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from channels.feishu.pbbp2_pb2 import Frame, Header

__all__ = [
    "ClientConfig",
    "Frame",
    "FrameError",
    "FrameMethod",
    "Header",
    "Reassembler",
    "ack_frame",
    "control_frame",
    "data_frame",
    "decode",
    "encode",
    "headers_of",
]

# header keys
TYPE = "type"
MESSAGE_ID = "message_id"  # the frame message id shared by every part, not the IM om_ id
SUM = "sum"
SEQ = "seq"
TRACE_ID = "trace_id"
BIZ_RT = "biz_rt"

# values of the `type` header
PING = "ping"
PONG = "pong"
EVENT = "event"
CARD = "card"


class FrameMethod(IntEnum):
    CONTROL = 0
    DATA = 1


class FrameError(ValueError):
    """Bytes that are not a well-formed pbbp2 frame."""


def encode(frame: Frame) -> bytes:
    """Serialized frame; the four required fields are always present."""
    try:
        return frame.SerializeToString()
    except EncodeError as exc:
        raise FrameError(f"frame cannot be encoded: {exc}") from exc


def decode(data: bytes) -> Frame:
    """Parse one binary websocket message."""
    frame = Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError as exc:
        raise FrameError(f"not a pbbp2 frame: {exc}") from exc
    return frame


def headers_of(frame: Frame) -> dict[str, str]:
    """Header list as a dict (a repeated key keeps its last value, as the SDKs do)."""
    return {h.key: h.value for h in frame.headers}


def _headers(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[Header]:
    pairs = items.items() if isinstance(items, Mapping) else items
    return [Header(key=k, value=v) for k, v in pairs]


def control_frame(kind: str, service: int, payload: bytes | None = None) -> Frame:
    """A ping (client to server) or a pong (server to client, optional ClientConfig payload)."""
    frame = Frame(
        SeqID=0,
        LogID=0,
        service=service,
        method=FrameMethod.CONTROL,
        headers=_headers({TYPE: kind}),
    )
    if payload is not None:
        frame.payload = payload
    return frame


def data_frame(
    *,
    service: int,
    seq_id: int,
    log_id: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    payload: bytes,
) -> Frame:
    """A server to client data frame (one part of an event)."""
    return Frame(
        SeqID=seq_id,
        LogID=log_id,
        service=service,
        method=FrameMethod.DATA,
        headers=_headers(headers),
        payload=payload,
    )


def ack_frame(received: Frame, code: int, biz_rt_ms: int | None = None) -> Frame:
    """The response the gateway expects: the received frame echoed, payload replaced."""
    ack = Frame()
    ack.CopyFrom(received)
    if biz_rt_ms is not None:
        ack.headers.append(Header(key=BIZ_RT, value=str(biz_rt_ms)))
    ack.payload = json.dumps({"code": code}).encode()
    return ack


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Reconnect and ping settings the gateway hands out (seconds; count < 0 means forever)."""

    reconnect_count: int = -1
    reconnect_interval: float = 120.0
    reconnect_nonce: float = 30.0
    ping_interval: float = 120.0

    def updated(self, data: Mapping[str, Any]) -> ClientConfig:
        """Values present and sane in `data` (the gateway's capitalised keys) replace ours."""

        def pick(key: str, current: float, minimum: float) -> float:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return current
            if not math.isfinite(value):  # json.loads takes Infinity; int(inf) raises
                return current
            return float(value) if value >= minimum else current

        return ClientConfig(
            reconnect_count=int(pick("ReconnectCount", self.reconnect_count, -1)),
            reconnect_interval=pick("ReconnectInterval", self.reconnect_interval, 0),
            reconnect_nonce=pick("ReconnectNonce", self.reconnect_nonce, 0),
            ping_interval=pick("PingInterval", self.ping_interval, 0.1),
        )

    def to_json(self) -> dict[str, int | float]:
        """The gateway's wire form."""
        return {
            "ReconnectCount": self.reconnect_count,
            "ReconnectInterval": self.reconnect_interval,
            "ReconnectNonce": self.reconnect_nonce,
            "PingInterval": self.ping_interval,
        }


@dataclass
class _Parts:
    started: float
    slots: list[bytes | None]


@dataclass
class Reassembler:
    """Joins the parts of a split event; a completed or stale entry is dropped at once.

    lark-oapi 1.7.5 keeps completed entries for their TTL, so a redelivered multi-part event is
    handled once per part (docs/platforms/feishu.md §1.5); we remove the buffer as soon as it is
    complete.
    """

    ttl: float = 10.0
    max_pending: int = 1000
    clock: Any = time.monotonic
    _pending: dict[str, _Parts] = field(default_factory=dict)

    def add(self, message_id: str, total: int, index: int, payload: bytes) -> bytes | None:
        """Returns the whole payload once every part arrived, else None."""
        if total <= 1:
            return payload
        if not 0 <= index < total:
            raise FrameError(f"part {index} of {total} is out of range")
        now = self.clock()
        self._expire(now)
        parts = self._pending.get(message_id)
        if parts is None or len(parts.slots) != total:
            if len(self._pending) >= self.max_pending:
                self._pending.pop(next(iter(self._pending)))
            parts = self._pending[message_id] = _Parts(now, [None] * total)
        parts.slots[index] = payload
        if any(slot is None for slot in parts.slots):
            return None
        del self._pending[message_id]
        return b"".join(slot or b"" for slot in parts.slots)

    def _expire(self, now: float) -> None:
        stale = [k for k, v in self._pending.items() if now - v.started > self.ttl]
        for key in stale:
            del self._pending[key]

    def __len__(self) -> int:
        return len(self._pending)
