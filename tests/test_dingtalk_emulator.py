"""The DingTalk emulator: the real dingtalk-stream 0.24.3 SDK against it, its faults and its
control plane (`channeld chat` has tests/test_chat.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import dingtalk_stream
import pytest

from channels.dingtalk.emulator import (
    DingTalkEmulator,
    EmulatorThread,
    add_arguments,
    main,
    serve,
)
from channels.dingtalk.emulator.payloads import BOT_MESSAGE_TOPIC, MSGTYPES, bot_message
from channels.dingtalk.emulator.state import EmulatorApp
from tests import dingtalk_support
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    DINGTALK_CLIENT_SECRET,
    DINGTALK_TEMPLATE,
    RawStreamClient,
    Screen,
    callback_ack,
    sdk_pointed_at,
    stop_sdk_client,
)

dingtalk_emulator = dingtalk_support.dingtalk_emulator  # the shared fixture, by name
ID = DINGTALK_CLIENT_ID


# -- the real SDK ---------------------------------------------------------------------------------


class RecordingHandler(dingtalk_stream.ChatbotHandler):  # type: ignore[misc]  # untyped SDK base
    """Answers like a well-behaved bot: records the message and acks at once."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: asyncio.Queue[dingtalk_stream.ChatbotMessage] = asyncio.Queue()

    async def process(self, callback: dingtalk_stream.CallbackMessage) -> tuple[int, str]:
        self.messages.put_nowait(dingtalk_stream.ChatbotMessage.from_dict(callback.data))
        return dingtalk_stream.AckMessage.STATUS_OK, "OK"


@dataclass
class Sdk:
    client: dingtalk_stream.DingTalkStreamClient
    handler: RecordingHandler


@pytest.fixture
async def sdk(
    dingtalk_emulator: EmulatorThread,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Sdk]:
    """A started 0.24.3 client aimed at the emulator; stopped and cleaned up afterwards."""
    # get_host_ip() opens a UDP socket toward 8.8.8.8; keep the test on loopback.
    monkeypatch.setattr(dingtalk_stream.DingTalkStreamClient, "get_host_ip", lambda _: "127.0.0.1")
    with sdk_pointed_at(dingtalk_emulator.url):
        credential = dingtalk_stream.Credential(ID, DINGTALK_CLIENT_SECRET)
        client = dingtalk_stream.DingTalkStreamClient(credential, logger=logging.getLogger("sdk"))
        handler = RecordingHandler()
        client.register_callback_handler(dingtalk_stream.ChatbotMessage.TOPIC, handler)
        task = asyncio.create_task(client.start())
        try:
            yield Sdk(client, handler)
        finally:
            await stop_sdk_client(client, task)
    # Nothing the SDK started may outlive the test (websockets' own tasks finish on close).
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if leftovers:
        await asyncio.wait(leftovers, timeout=2.0)
    assert all(t.done() for t in leftovers), leftovers


@pytest.mark.allow_loop_block  # the SDK's blocking requests.post (docs/platforms/dingtalk.md §5.1)
async def test_sdk_handshake_and_ping_ack(dingtalk_emulator: EmulatorThread, sdk: Sdk) -> None:
    live = await dingtalk_emulator.wait_for(lambda e: e.live_connections(ID))
    assert live[0].subscriptions == (("CALLBACK", BOT_MESSAGE_TOPIC),)
    assert live[0].ua == "dingtalk-sdk-python/v0.24.3-union"
    opened = await dingtalk_emulator.calls("/v1.0/gateway/connections/open")
    assert opened[0].status == 200
    assert opened[0].body["clientId"] == ID
    assert opened[0].body["clientSecret"] == "***"  # recordings never keep credentials

    def acked_ping(e: DingTalkEmulator) -> Any:
        for ping in e.sent_frames("ping"):
            acks = e.acks(ping.message_id)
            if acks:
                return ping, acks[0]
        return None

    ping, ack = await dingtalk_emulator.wait_for(acked_ping)
    assert all(isinstance(v, str) for v in ping.frame["headers"].values())
    assert ack.connection_id == live[0].connection_id
    expected = {"contentType": "application/json", "messageId": ping.message_id}
    assert {k: ack.frame[k] for k in ("code", "headers", "message")} == {
        "code": 200,
        "headers": expected,
        "message": "OK",
    }
    assert json.loads(ack.frame["data"]) == json.loads(ping.frame["data"])


@pytest.mark.allow_loop_block
async def test_sdk_receives_a_bot_message_and_acks(
    dingtalk_emulator: EmulatorThread, sdk: Sdk
) -> None:
    await dingtalk_emulator.wait_for(lambda e: e.live_connections(ID))
    sent = await dingtalk_emulator.send_user_message(
        ID, text="hello bot", sender_staff_id="staff-42", sender_nick="Alice"
    )
    assert sent.delivered
    msg = await asyncio.wait_for(sdk.handler.messages.get(), 5)
    assert msg.text.content == "hello bot"
    assert msg.conversation_type == "1"
    assert (msg.sender_staff_id, msg.sender_nick) == ("staff-42", "Alice")
    assert msg.message_id == sent.msg_id
    assert msg.robot_code == ID
    assert msg.session_webhook == sent.session_webhook
    assert msg.session_webhook_expired_time - msg.create_at == 90 * 60 * 1000
    acks = await dingtalk_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert acks[0].frame == callback_ack({"headers": {"messageId": sent.frame_message_id}})


@pytest.mark.allow_loop_block
async def test_sdk_gets_group_messages_only_when_mentioned(
    dingtalk_emulator: EmulatorThread, sdk: Sdk
) -> None:
    await dingtalk_emulator.wait_for(lambda e: e.live_connections(ID))
    group = {"conversation_type": "2", "conversation_id": "cidGroup1=="}
    skipped = await dingtalk_emulator.send_user_message(
        ID, text="chatter", mentioned=False, **group
    )
    assert not skipped.delivered
    forced = await dingtalk_emulator.send_user_message(
        ID, text="overheard", mentioned=False, deliver_unmentioned=True, **group
    )
    mentioned = await dingtalk_emulator.send_user_message(ID, text="hi bot", **group)
    assert forced.delivered
    assert mentioned.delivered
    first = await asyncio.wait_for(sdk.handler.messages.get(), 5)
    second = await asyncio.wait_for(sdk.handler.messages.get(), 5)
    assert (first.text.content, first.is_in_at_list) == ("overheard", False)
    assert (second.text.content, second.is_in_at_list) == (" hi bot", True)
    assert second.conversation_type == "2"
    assert second.at_users[0].dingtalk_id == second.chatbot_user_id


@pytest.mark.allow_loop_block
async def test_sdk_reconnects_after_system_disconnect(
    dingtalk_emulator: EmulatorThread, sdk: Sdk
) -> None:
    first = (await dingtalk_emulator.wait_for(lambda e: e.live_connections(ID)))[0]
    assert await dingtalk_emulator.system_disconnect(ID, reason="load balancing") == 1

    def moved(e: DingTalkEmulator) -> Any:
        live = e.live_connections(ID)
        return live if [c.connection_id for c in live] not in ([], [first.connection_id]) else None

    live = await dingtalk_emulator.wait_for(moved)
    assert len(live) == 1  # the old socket was closed by the client, not left behind
    disconnect = (await dingtalk_emulator.call(lambda e: e.sent_frames("disconnect")))[0]
    acks = await dingtalk_emulator.acks(disconnect.message_id)
    assert json.loads(acks[0].frame["data"]) == {"reason": "load balancing"}
    sent = await dingtalk_emulator.send_user_message(ID, text="still there?")
    assert sent.connection_id == live[0].connection_id
    assert (await asyncio.wait_for(sdk.handler.messages.get(), 5)).text.content == "still there?"


async def test_sdk_ai_card_helpers_work_against_the_emulator(
    dingtalk_emulator: EmulatorThread,
) -> None:
    with sdk_pointed_at(dingtalk_emulator.url):
        credential = dingtalk_stream.Credential(ID, DINGTALK_CLIENT_SECRET)
        client = dingtalk_stream.DingTalkStreamClient(credential, logger=logging.getLogger("sdk"))
        incoming = dingtalk_stream.reply_specified_single_chat("staff-7")
        replier = dingtalk_stream.AICardReplier(client, incoming)

        def answer() -> str:
            card_id: str = replier.start(DINGTALK_TEMPLATE, {"content": ""})
            replier.streaming(card_id, "content", "Hel", append=False, finished=False, failed=False)
            replier.streaming(card_id, "content", "lo", append=True, finished=True, failed=False)
            replier.finish(card_id, {"content": "Hello"})
            return card_id

        # The SDK's card helpers block on requests; a worker thread keeps this loop free.
        card_id = await asyncio.to_thread(answer)
    card = await dingtalk_emulator.card(card_id)
    assert card is not None
    assert (card.text, card.status, card.flow_status) == ("Hello", "finished", "3")
    assert card.open_space_ids == ["dtv1.card//IM_ROBOT.staff-7"]
    assert [u.kind for u in card.history] == ["create", "deliver", "stream", "stream", "update"]


# -- the gateway with a raw client ----------------------------------------------------------------


@pytest.fixture
async def raw(dingtalk_emulator: EmulatorThread) -> AsyncIterator[RawStreamClient]:
    client = RawStreamClient(dingtalk_emulator.url)
    await client.connect()
    yield client
    await client.close()


async def test_wrong_credentials_and_used_tickets_are_refused(
    dingtalk_emulator: EmulatorThread,
) -> None:
    url = dingtalk_emulator.url
    async with aiohttp.ClientSession() as http:
        body = {
            "clientId": ID,
            "clientSecret": "wrong",
            "subscriptions": [],
            "ua": "t",
            "localIp": "",
        }
        async with http.post(url + "/v1.0/gateway/connections/open", json=body) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "InvalidAuthentication"
        body["clientSecret"] = DINGTALK_CLIENT_SECRET
        async with http.post(url + "/v1.0/gateway/connections/open", json=body) as resp:
            opened = await resp.json()
        assert opened["endpoint"] == url.replace("http", "ws") + "/connect"
        ws = await http.ws_connect(f"{opened['endpoint']}?ticket={opened['ticket']}")
        with pytest.raises(aiohttp.WSServerHandshakeError) as used:
            await http.ws_connect(f"{opened['endpoint']}?ticket={opened['ticket']}")
        assert used.value.status == 401
        await ws.close()


async def test_expired_ticket_is_refused() -> None:
    emulator = DingTalkEmulator([(ID, DINGTALK_CLIENT_SECRET)], ticket_ttl=0.0, ping_interval=None)
    await emulator.start()
    client = RawStreamClient(emulator.url)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as expired:
            await client.connect()
        assert expired.value.status == 401
    finally:
        await client.close()
        await emulator.stop()


async def test_frames_have_the_wire_shape(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
) -> None:
    sent = await dingtalk_emulator.send_user_message(ID, text="shape")
    await dingtalk_emulator.wait_for(lambda e: len(e.acks()) >= 3)  # 2+ pings and the message
    for frame in raw.frames:
        assert frame["specVersion"] == "1.0"
        assert all(isinstance(v, str) for v in frame["headers"].values())
        assert isinstance(frame["data"], str)
    callback = next(f for f in raw.frames if f["type"] == "CALLBACK")
    assert callback["headers"]["messageId"] == sent.frame_message_id
    assert callback["headers"]["topic"] == BOT_MESSAGE_TOPIC
    data = json.loads(callback["data"])
    assert data["conversationType"] == "1"
    assert data["sessionWebhook"] == sent.session_webhook
    ping = next(f for f in raw.frames if f["type"] == "SYSTEM")
    assert ping["headers"]["topic"] == "ping"
    assert "opaque" in json.loads(ping["data"])


@pytest.mark.parametrize("msgtype", MSGTYPES)
def test_every_message_type_parses_in_the_sdk(msgtype: str) -> None:
    payload = bot_message(
        EmulatorApp(ID, DINGTALK_CLIENT_SECRET),
        corp_id="dingcorp",
        text="voice text",
        msgtype=msgtype,
        conversation_type="1",
        conversation_id="cid1==",
        conversation_title="",
        sender_staff_id="u1",
        sender_nick="U",
        mentioned=True,
        at_staff_ids=[],
        session_webhook="http://127.0.0.1:1/robot/sendBySession?session=x",
        session_expires_ms=2,
        create_at_ms=1,
        download_code="dl-1",
        file_name="a.pdf",
        is_admin=False,
        extra=None,
    )
    msg = dingtalk_stream.ChatbotMessage.from_dict(json.loads(json.dumps(payload)))
    assert msg.message_type == msgtype
    content = payload.get("content", {})
    expected = {
        "text": lambda: msg.text.content == "voice text",
        "richText": lambda: (
            msg.get_text_list() == ["voice text"] and msg.get_image_list() == ["dl-1"]
        ),
        "picture": lambda: msg.image_content.download_code == "dl-1",
        "audio": lambda: (
            content["recognition"] == "voice text" and content["downloadCode"] == "dl-1"
        ),
        "video": lambda: content["videoType"] == "mp4",
        "file": lambda: content["fileName"] == "a.pdf",
    }
    assert expected[msgtype]()


@pytest.mark.parametrize(("mode", "code"), [("abort", 1006), ("close", 1011)])
async def test_drop_kills_the_socket(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
    mode: str,
    code: int,
) -> None:
    assert await dingtalk_emulator.drop(ID, mode=mode) == 1
    await asyncio.wait_for(raw.closed.wait(), 5)
    assert raw.close_code == code
    await dingtalk_emulator.wait_for(lambda e: not e.live_connections(ID))


async def test_system_disconnect_closes_tcp_after_the_grace(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
) -> None:
    assert await dingtalk_emulator.system_disconnect(ID, grace=0.1) == 1
    # No deliveries to a socket that was told to go away.
    late = await dingtalk_emulator.send_user_message(ID, text="late")
    assert (late.delivered, late.reason) == (False, "no live Stream connection")
    await asyncio.wait_for(raw.closed.wait(), 5)  # the client never closed: the server did
    assert "disconnect" in raw.topics("SYSTEM")
    assert await dingtalk_emulator.live_connections(ID) == []


async def test_silenced_socket_gets_nothing_until_woken(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
) -> None:
    other = RawStreamClient(dingtalk_emulator.url)
    await other.connect()
    try:
        await dingtalk_emulator.wait_for(lambda e: len(e.live_connections(ID)) == 2)
        target = (await dingtalk_emulator.live_connections(ID))[0].connection_id
        assert await dingtalk_emulator.call(lambda e: e.silence(ID, connection_id=target)) == 1
        before = await dingtalk_emulator.call(
            lambda e: next(c.frames_sent for c in e.connections(ID) if c.connection_id == target)
        )
        lost = await dingtalk_emulator.send_user_message(ID, text="lost", connection_id=target)
        assert (lost.delivered, lost.reason) == (False, "connection is silenced")
        # The other socket keeps getting pings meanwhile; the silenced one gets none.
        pings_other = await dingtalk_emulator.wait_for(
            lambda e: [
                c for c in e.connections(ID) if c.connection_id != target and c.pings_sent >= 3
            ]
        )
        assert pings_other
        after = await dingtalk_emulator.call(
            lambda e: next(c.frames_sent for c in e.connections(ID) if c.connection_id == target)
        )
        assert after == before
        await dingtalk_emulator.call(lambda e: e.silence(ID, False, connection_id=target))
        await dingtalk_emulator.wait_for(
            lambda e: (
                next(c.frames_sent for c in e.connections(ID) if c.connection_id == target) > after
            )
        )
    finally:
        await other.close()


async def test_redeliver_sends_the_identical_frame(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
) -> None:
    sent = await dingtalk_emulator.send_user_message(ID, text="twice")
    await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
    await dingtalk_emulator.wait_for(lambda e: len(e.acks(sent.frame_message_id)) == 2)
    copies = [r for r in raw.raw_frames if sent.frame_message_id in r]
    assert len(copies) == 2
    assert copies[0] == copies[1]


# -- control plane --------------------------------------------------------------------------------


async def test_control_plane_drives_users_chats_and_faults(
    dingtalk_emulator: EmulatorThread,
    raw: RawStreamClient,
) -> None:
    base = dingtalk_emulator.url + "/_emulator"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/state") as resp:
            state = await resp.json()
        assert state["apps"] == [{"client_id": ID, "robot_code": ID}]
        assert DINGTALK_CLIENT_SECRET not in json.dumps(state)
        message = {"client_id": ID, "text": "via control", "sender_staff_id": "ctl"}
        async with http.post(base + "/messages", json=message) as resp:
            sent = await resp.json()
        assert sent["delivered"]
        cid = sent["conversation_id"]
        # A long poll from the current version returns once the bot answers.
        params = {"conversation_id": cid, "since": str(sent["version"]), "wait": "5"}
        poll = asyncio.create_task(http.get(base + "/chat", params=params))
        await raw.api.send_by_session(sent["session_webhook"], markdown="answer", title="Answer")
        async with await poll as resp:
            view = await resp.json()
        assert [(i["kind"], i["text"]) for i in view["items"]] == [
            ("user", "via control"),
            ("message", "answer"),
        ]
        async with http.post(base + "/messages", json={**message, "bogus": 1}) as resp:
            assert resp.status == 400
        async with http.post(base + "/messages", json={**message, "client_id": "nope"}) as resp:
            assert resp.status == 404
        async with http.get(base + "/chat", params={"conversation_id": "missing"}) as resp:
            assert resp.status == 404
        fault = {"path": "/v1.0/oauth2/*", "status": 503, "times": 1}
        async with http.post(base + "/faults", json=fault) as resp:
            assert (await resp.json())["remaining"] == 1
        async with http.post(base + "/tokens/expire") as resp:
            assert resp.status == 200
        async with http.get(base + "/calls", params={"path": "/robot/sendBySession"}) as resp:
            calls = await resp.json()
        assert [c["status"] for c in calls] == [200]
        async with http.get(base + "/connections", params={"client_id": ID}) as resp:
            assert [c["state"] for c in await resp.json()] == ["open"]
        async with http.post(base + "/connections/disconnect", json={"client_id": ID}) as resp:
            assert (await resp.json())["connections"] == 1
        async with http.get(base + "/cards/unknown") as resp:
            assert resp.status == 404
        async with http.get(dingtalk_emulator.url + "/v1.0/not/emulated") as resp:
            assert resp.status == 404
    missing = await dingtalk_emulator.calls("/v1.0/not/emulated")
    assert [c.status for c in missing] == [404]  # unemulated endpoints show up in the record


async def test_control_plane_reports_an_offline_bot(
    dingtalk_emulator: EmulatorThread,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(dingtalk_emulator.url + "/_emulator/messages", json={"client_id": ID}) as resp,
    ):
        sent = await resp.json()
    assert (sent["delivered"], sent["reason"]) == (False, "no live Stream connection")


async def test_serve_prints_what_a_user_needs_and_stops_on_cancel() -> None:
    screen = Screen()
    task = asyncio.create_task(serve("127.0.0.1:0", [("app-a", "sec-a", "robot-a")], out=screen))
    await screen.shows("control plane")
    url = screen.getvalue().split("listening on ")[1].split()[0]
    assert "app client_id=app-a client_secret=sec-a robot_code=robot-a" in screen.getvalue()
    async with aiohttp.ClientSession() as http, http.get(url + "/_emulator/state") as resp:
        assert (await resp.json())["apps"] == [{"client_id": "app-a", "robot_code": "robot-a"}]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_main_parses_options_and_reports_a_busy_port() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser.parse_args(
            ["--listen", f"127.0.0.1:{port}", "--app", "a:b:c", "--template", "t1=body"]
        )
        assert args.app == [EmulatorApp("a", "b", "c")]
        assert await main(args) == 1
