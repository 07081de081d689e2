"""JSON nested deeper than the decoder goes, on a live Feishu session (issue 10, finding 6).

The emulator's gateway writes the frames straight onto the daemon's socket: an event whose
payload is nested 100,000 deep, a pong whose ClientConfig is, and a well-formed event whose
message content is. Each is dropped or refused and counted; the session stays up (same
connection, no reconnect) and the next message is answered.
"""

from __future__ import annotations

from pathlib import Path

from channels.feishu import frames
from channels.feishu.emulator.server import FeishuEmulator
from tests.e2e_support import wait_until
from tests.feishu_support import FEISHU_APP_ID, FeishuEmulatorThread, feishu_emulator
from tests.test_e2e_feishu import FeishuStack, start_feishu
from tests.test_metrics_e2e import samples, value

__all__ = ["feishu_emulator"]

DEEP = b"[" * 100_000 + b"]" * 100_000


async def write_frame(emulator: FeishuEmulator, frame: frames.Frame) -> str:
    """Sends a frame on the app's live connection as is; returns that connection's id."""
    (conn,) = emulator.gateway.live(FEISHU_APP_ID)
    frame.service = conn.service_id
    assert await emulator.gateway.send(conn, frames.encode(frame))
    return conn.id


def metric(stack: FeishuStack, name: str, **labels: str) -> float:
    found = samples(stack.daemon.metrics.render()[0].decode())
    return value(found, name, channel=stack.channel_id, platform="feishu", **labels)


async def test_deep_nesting_neither_ends_the_session_nor_comes_back(
    tmp_path: Path, feishu_emulator: FeishuEmulatorThread
) -> None:
    stack = await start_feishu(tmp_path, feishu_emulator, None)
    try:
        await stack.connected()
        (before,) = await feishu_emulator.live_connections(FEISHU_APP_ID)

        # an event payload too deep to decode: dropped, counted, acked (it would only come back)
        headers = {frames.TYPE: frames.EVENT, frames.MESSAGE_ID: "deep-1", frames.SUM: "1"}
        event = frames.data_frame(service=0, seq_id=1, log_id=7, headers=headers, payload=DEEP)
        sent_on = await feishu_emulator.call(lambda e: write_frame(e, event))
        acks = await feishu_emulator.wait_for(lambda e: e.acks("deep-1"))
        assert (acks[0].connection_id, acks[0].code) == (sent_on, 200)
        # a pong whose ClientConfig is too deep: dropped and counted (pongs are never acked)
        pong = frames.control_frame(frames.PONG, 0, DEEP)
        await feishu_emulator.call(lambda e: write_frame(e, pong))
        await wait_until(
            lambda: metric(stack, "channeld_frames_dropped_total", reason="too_deep") == 2
        )

        # a well-formed event whose message content is too deep: an unusable message, acked
        deep_content = {
            "schema": "2.0",
            "header": {"event_id": "ev-deep", "event_type": "im.message.receive_v1"},
            "event": {
                "sender": {"sender_id": {"open_id": "ou_user1"}},
                "message": {
                    "message_id": "om_deep",
                    "chat_id": "oc_deep",
                    "chat_type": "p2p",
                    "message_type": "text",
                    "content": DEEP.decode(),
                },
            },
        }
        delivery = await feishu_emulator.push_event(FEISHU_APP_ID, deep_content)
        acks = await feishu_emulator.wait_for(lambda e: e.acks(delivery.frame_message_id))
        assert [a.code for a in acks] == [200]  # not 500: a redelivery would fail the same way
        assert metric(stack, "channeld_messages_invalid_total") == 1
        assert len(await feishu_emulator.deliveries("om_deep")) == 1

        # the session read on: same socket, no reconnect, and the next message is answered
        later = await stack.say("still there?")
        card = await stack.finished_card(later.chat_id)
        assert card["text"] == "You said: still there?"
        (after,) = await feishu_emulator.live_connections(FEISHU_APP_ID)
        assert after.connection_id == before.connection_id == sent_on
        assert stack.supervisor.status().reconnects == 0
    finally:
        await stack.stop()
