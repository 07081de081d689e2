"""SessionSocket, the websocket side both platforms' connections share, against a real server.

The server is a `websockets` server on port 0 that the test drives (tests/websocket_support.py);
the client is the real `SessionSocket`.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.exceptions import InvalidStatus

from channels.connection import SessionSocket
from channels.observer import TOO_DEEP, UNREADABLE
from common.errors import AuthError, TransientError
from tests.websocket_support import Gateway, gateway

__all__ = ["gateway"]

LOG = logging.getLogger("test.connection")


def refused(exc: InvalidStatus) -> Exception:
    return AuthError(f"upgrade refused with HTTP {exc.response.status_code}")


async def test_connect_then_receive_updates_the_last_frame_time(gateway: Gateway) -> None:
    socket = SessionSocket("test gateway", LOG)
    before = socket.last_frame_at
    await socket.connect(gateway.url, rejected=refused)
    server_side = await asyncio.wait_for(gateway.accepted.get(), 5)
    opened_at = socket.last_frame_at
    assert opened_at >= before
    await server_side.send("hello")
    assert await socket.receive(5) == "hello"
    assert socket.last_frame_at >= opened_at
    await socket.close()
    await socket.close()  # idempotent
    assert socket.ws is None


async def test_a_refused_upgrade_is_classified_by_the_platform(gateway: Gateway) -> None:
    gateway.refuse_with = 403
    socket = SessionSocket("test gateway", LOG)
    with pytest.raises(AuthError, match="HTTP 403"):
        await socket.connect(gateway.url, rejected=refused)
    assert socket.ws is None


async def test_an_unreachable_gateway_is_transient_with_the_hint(gateway: Gateway) -> None:
    url = gateway.url
    await gateway.stop()  # nothing listens on that port any more
    socket = SessionSocket("test gateway", LOG)
    with pytest.raises(TransientError, match="test gateway websocket connect failed") as raised:
        await socket.connect(url, rejected=refused, retry_hint=lambda: 7.0)
    assert raised.value.retry_after == 7.0


async def test_silence_ends_the_session_with_a_fresh_hint(gateway: Gateway) -> None:
    hints = iter([3.0, 4.0])
    socket = SessionSocket("test gateway", LOG)
    await socket.connect(gateway.url, rejected=refused)
    await asyncio.wait_for(gateway.accepted.get(), 5)
    with pytest.raises(TransientError, match=r"no frame from the test gateway for 0s") as raised:
        await socket.receive(0.1, lambda: next(hints))
    assert raised.value.retry_after == 3.0  # asked for when the session ended
    await socket.close()


async def test_a_close_by_the_gateway_names_its_code(gateway: Gateway) -> None:
    socket = SessionSocket("test gateway", LOG)
    await socket.connect(gateway.url, rejected=refused)
    server_side = await asyncio.wait_for(gateway.accepted.get(), 5)
    await server_side.close(code=1011, reason="going away")
    with pytest.raises(TransientError, match=r"test gateway closed the socket \(code 1011\)"):
        await socket.receive(5)
    await socket.close()


async def test_receive_without_a_socket_is_transient() -> None:
    with pytest.raises(TransientError, match="not open"):
        await SessionSocket("test gateway", LOG).receive(1)


def test_json_objects_pass_and_anything_else_is_dropped_with_its_reason() -> None:
    reasons: list[str] = []
    socket = SessionSocket("test gateway", LOG, reasons.append)
    assert socket.json_object('{"a": 1}', "frame") == {"a": 1}
    assert socket.json_object(b'{"b": [2]}', "frame") == {"b": [2]}
    for junk in ("[1, 2]", "not json", b"\xff\xfe", "null"):
        assert socket.json_object(junk, "frame") is None
    deep = "[" * 100_000 + "]" * 100_000  # past the decoder's recursion limit
    assert socket.json_object(deep, "frame") is None
    assert reasons == [UNREADABLE] * 4 + [TOO_DEEP]
