"""The Feishu emulator with a raw pbbp2 client and a plain HTTP client: gateway, OpenAPI, CardKit,
faults, control plane and `channeld emulate feishu` (the real SDK is in test_feishu_fidelity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.feishu import frames
from channels.feishu.emulator import (
    FeishuEmulator,
    FeishuEmulatorThread,
    add_arguments,
    main,
)
from channels.feishu.emulator.gateway import BAD_TICKET
from daemon.chat import chat
from tests import feishu_support
from tests.e2e_support import emulate
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    MESSAGES,
    Api,
    RawFeishuClient,
    api,
    raw,
    streaming_card,
)

feishu_emulator = feishu_support.feishu_emulator  # the shared fixture, by name
__all__ = ["api", "raw"]
ID = FEISHU_APP_ID
DISCOVERY = "/callback/ws/endpoint"


# -- discovery and handshake ----------------------------------------------------------------------


async def test_discovery_answers_a_url_and_the_client_config(
    feishu_emulator: FeishuEmulatorThread,
) -> None:
    client = RawFeishuClient(feishu_emulator.url)
    try:
        answer = await client.discover()
        assert (answer["http_status"], answer["code"]) == (200, 0)
        url = answer["data"]["URL"]
        assert url.startswith(feishu_emulator.url.replace("http", "ws") + "/ws/v2?")
        for key in ("device_id=", "service_id=", "ticket="):
            assert key in url
        assert answer["data"]["ClientConfig"] == {
            "ReconnectCount": -1,
            "ReconnectInterval": 1,
            "ReconnectNonce": 0,
            "PingInterval": 1,
        }
        second = await client.discover()
        assert second["data"]["URL"] != url  # a new ticket every time
        client.app_secret = "wrong"
        refused = await client.discover()
        assert (refused["http_status"], refused["code"]) == (200, 10014)
    finally:
        await client.close()
    calls = await feishu_emulator.discoveries(ID)
    assert [(c.code, c.body["AppSecret"]) for c in calls] == [
        (0, "***"),
        (0, "***"),
        (10014, "***"),
    ]


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [({"code": 1}, 200, 1), ({"code": 1000040343}, 200, 1000040343), ({"status": 500}, 500, 1)],
)
async def test_discovery_faults(
    feishu_emulator: FeishuEmulatorThread, fault: dict[str, Any], status: int, code: int
) -> None:
    await feishu_emulator.add_fault(DISCOVERY, **fault)
    client = RawFeishuClient(feishu_emulator.url)
    try:
        answer = await client.discover()
        assert (answer["http_status"], answer["code"]) == (status, code)
        assert (await client.discover())["code"] == 0  # the fault was used up
    finally:
        await client.close()
    assert [c.fault for c in await feishu_emulator.discoveries()] == [True, False]


async def test_discovery_delay_outlasts_a_client_timeout(
    feishu_emulator: FeishuEmulatorThread,
) -> None:
    await feishu_emulator.add_fault(DISCOVERY, delay=1.0)
    timeout = aiohttp.ClientTimeout(total=0.2)
    body = {"AppID": ID, "AppSecret": FEISHU_APP_SECRET}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(TimeoutError):
            await http.post(feishu_emulator.url + DISCOVERY, json=body)


def handshake_headers(exc: aiohttp.WSServerHandshakeError) -> dict[str, str]:
    assert exc.headers is not None
    return {k.lower(): v for k, v in exc.headers.items() if k.lower().startswith("handshake-")}


@pytest.mark.parametrize(("status", "autherrcode"), [(514, 1000040350), (403, 0), (514, 42)])
async def test_injected_handshake_rejections_carry_the_handshake_headers(
    feishu_emulator: FeishuEmulatorThread, status: int, autherrcode: int
) -> None:
    await feishu_emulator.reject_handshakes(status, autherrcode)
    client = RawFeishuClient(feishu_emulator.url)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as rejected:
            await client.connect()
        assert rejected.value.status == 403
        headers = handshake_headers(rejected.value)
        assert headers["handshake-status"] == str(status)
        assert headers["handshake-autherrcode"] == str(autherrcode)
        assert headers["handshake-msg"]
        await client.connect()  # only one rejection was queued
    finally:
        await client.close()


async def test_tickets_are_single_use_and_connections_limited() -> None:
    emulator = FeishuEmulator([(ID, FEISHU_APP_SECRET)], max_connections=1)
    await emulator.start()
    first, second = RawFeishuClient(emulator.url), RawFeishuClient(emulator.url)
    try:
        answer = await first.discover()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(answer["data"]["URL"])
            with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
                await http.ws_connect(answer["data"]["URL"])
            assert handshake_headers(reused.value)["handshake-autherrcode"] == str(BAD_TICKET)
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await second.connect()
            assert handshake_headers(full.value) == {
                "handshake-status": "514",
                "handshake-msg": "exceed connection limit",
                "handshake-autherrcode": "1000040350",
            }
            await ws.close()
    finally:
        await first.close()
        await second.close()
        await emulator.stop()


# -- frames ---------------------------------------------------------------------------------------


async def test_ping_gets_a_pong_with_the_client_config(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    await raw.ping()
    await asyncio.wait_for(raw.pong_arrived.wait(), 5)
    assert raw.pongs[0] == raw.client_config
    pong = next(f for f in raw.received if f.method == frames.FrameMethod.CONTROL)
    assert (pong.service, frames.headers_of(pong)) == (raw.service_id, {"type": "pong"})
    await feishu_emulator.set_client_config(ping_interval=7, reconnect_count=3)
    raw.pong_arrived.clear()
    await raw.ping()
    await asyncio.wait_for(raw.pong_arrived.wait(), 5)
    assert raw.pongs[1] == {**raw.client_config, "PingInterval": 7, "ReconnectCount": 3}
    assert await feishu_emulator.silence(ID) == 1
    await raw.ping()
    info = await feishu_emulator.wait_for(lambda e: e.connections(ID)[0].pings == 3 or None)
    assert info is True
    conn = (await feishu_emulator.connections(ID))[0]
    assert (conn.state, conn.pongs) == ("silenced", 2)


async def test_an_event_has_the_documented_shape(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="hello", sender_open_id="ou_alice")
    assert (sent.delivered, sent.connection_id) == (True, raw.device_id)
    event = await raw.next_event()
    assert event["schema"] == "2.0"
    header = event["header"]
    assert (header["event_id"], header["event_type"]) == (sent.event_id, "im.message.receive_v1")
    assert header["app_id"] == ID
    assert header["create_time"].isdigit()
    sender = event["event"]["sender"]
    assert sender["sender_type"] == "user"
    assert sender["sender_id"]["open_id"] == "ou_alice"
    assert sender["sender_id"]["union_id"].startswith("on_")
    message = event["event"]["message"]
    assert message["message_id"] == sent.message_id
    assert message["message_id"].startswith("om_")
    assert (message["chat_id"], message["chat_type"]) == (sent.chat_id, "p2p")
    assert message["chat_id"].startswith("oc_")
    assert (message["message_type"], message["content"]) == ("text", '{"text": "hello"}')
    assert "mentions" not in message
    frame = raw.data_frames()[0]
    assert (frame.method, frame.service) == (frames.FrameMethod.DATA, raw.service_id)
    headers = frames.headers_of(frame)
    assert headers["message_id"] == sent.frame_message_id
    assert (headers["type"], headers["sum"], headers["seq"]) == ("event", "1", "0")
    assert headers["trace_id"]
    acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert (acks[0].code, acks[0].matches, acks[0].biz_rt) == (200, True, 0)
    assert acks[0].latency is not None
    assert acks[0].latency >= 0


async def test_a_split_event_arrives_out_of_order_and_is_acked_once(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="x" * 400, parts=4)
    event = await raw.next_event()
    assert event["event"]["message"]["message_id"] == sent.message_id
    parts = raw.data_frames()
    seqs = [int(frames.headers_of(f)["seq"]) for f in parts]
    assert sorted(seqs) == [0, 1, 2, 3]
    assert seqs != [0, 1, 2, 3]
    assert {frames.headers_of(f)["sum"] for f in parts} == {"4"}
    assert len({f.LogID for f in parts}) == 1
    acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert len(acks) == 1
    assert acks[0].matches


async def test_group_messages_need_a_mention_unless_the_scope_is_granted(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    group = {"chat_type": "group", "chat_name": "team"}
    mentioned = await feishu_emulator.send_user_message(
        ID, text="hi", mentions=[{"open_id": "ou_bob", "name": "Bob"}], **group
    )
    event = await raw.next_event()
    message = event["event"]["message"]
    bot_open_id = feishu_emulator.emulator.state.apps[ID].bot_open_id
    assert json.loads(message["content"]) == {"text": "@_user_1 @_user_2 hi"}
    assert [(m["key"], m["id"]["open_id"], m["name"]) for m in message["mentions"]] == [
        ("@_user_1", bot_open_id, "Emulated Bot"),
        ("@_user_2", "ou_bob", "Bob"),
    ]
    skipped = await feishu_emulator.send_user_message(
        ID, text="chatter", mention_bot=False, **group
    )
    assert not skipped.delivered
    assert "group_msg" in skipped.reason
    overheard = await feishu_emulator.send_user_message(
        ID, text="overheard", mention_bot=False, group_msg_scope=True, **group
    )
    assert overheard.delivered
    assert json.loads((await raw.next_event())["event"]["message"]["content"]) == {
        "text": "overheard"
    }
    view = await feishu_emulator.chat_view(mentioned.chat_id)
    assert view is not None
    assert view["chat_type"] == "group"
    assert [(i["kind"], i["text"]) for i in view["items"]] == [
        ("user", "@Emulated Bot @Bob hi"),
        ("user", "chatter"),
        ("user", "overheard"),
    ]


@pytest.mark.parametrize(
    ("message_type", "keys"),
    [
        ("post", {"title", "content"}),
        ("image", {"image_key"}),
        ("file", {"file_key", "file_name"}),
        ("audio", {"file_key", "duration"}),
        ("sticker", {"file_key"}),
    ],
)
async def test_message_types_carry_their_content(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, message_type: str, keys: set[str]
) -> None:
    await feishu_emulator.send_user_message(ID, text="a.txt", message_type=message_type)
    message = (await raw.next_event())["event"]["message"]
    assert message["message_type"] == message_type
    assert set(json.loads(message["content"])) == keys


async def test_a_raw_content_override_is_sent_verbatim(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    content = {"title": "", "content": [[{"tag": "code_block", "language": "PY", "text": "x=1"}]]}
    await feishu_emulator.send_user_message(ID, message_type="post", content=content)
    assert json.loads((await raw.next_event())["event"]["message"]["content"]) == content


# -- redelivery ---------------------------------------------------------------------------------


async def test_unacked_events_come_back_with_a_new_event_id(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    raw.ack_code = None
    sent = await feishu_emulator.send_user_message(ID, text="ack me")
    first = await raw.next_event()
    raw.ack_code = 500
    second = await raw.next_event()
    raw.ack_code = 200
    third = await raw.next_event()
    ids = [
        (e["header"]["event_id"], e["event"]["message"]["message_id"])
        for e in (first, second, third)
    ]
    assert [m for _, m in ids] == [sent.message_id] * 3
    assert len({e for e, _ in ids}) == 3

    def ack_codes(e: FeishuEmulator) -> list[int | None]:
        return [d.ack_code for d in e.deliveries(sent.message_id)]

    await feishu_emulator.wait_for(lambda e: ack_codes(e) == [None, 500, 200])
    deliveries = await feishu_emulator.deliveries(sent.message_id)
    again = await feishu_emulator.redeliver(sent.message_id, new_event_id=False)
    fourth = await raw.next_event()
    assert fourth["header"]["event_id"] == ids[2][0]
    assert again.frame_message_id != deliveries[-1].frame_message_id


async def test_an_event_waits_for_a_connection(feishu_emulator: FeishuEmulatorThread) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="anyone?")
    assert (sent.delivered, sent.reason) == (False, "no live connection")
    client = RawFeishuClient(feishu_emulator.url)
    try:
        await client.connect()
        event = await client.next_event()
        assert event["event"]["message"]["message_id"] == sent.message_id
        assert event["header"]["event_id"] != sent.event_id
    finally:
        await client.close()


@pytest.mark.parametrize(("mode", "code"), [("abort", 1006), ("close", 1000), ("close", 1001)])
async def test_drop_kills_the_socket(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, mode: str, code: int
) -> None:
    assert await feishu_emulator.drop(ID, mode=mode, code=code) == 1
    await asyncio.wait_for(raw.closed.wait(), 5)
    assert raw.close_code == code
    await feishu_emulator.wait_for(lambda e: not e.live_connections(ID))


async def test_a_restarted_gateway_refuses_then_accepts(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    await feishu_emulator.refuse_connections(ID)
    assert await feishu_emulator.drop(ID) == 1
    client = RawFeishuClient(feishu_emulator.url)
    try:
        assert (await client.discover())["http_status"] == 503
        await feishu_emulator.refuse_connections(ID, on=False)
        await client.connect()
        assert len(await feishu_emulator.live_connections(ID)) == 1
    finally:
        await client.close()


# -- control plane and CLI ------------------------------------------------------------------------


async def test_control_plane_drives_users_chats_and_faults(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    base = feishu_emulator.url + "/_emulator"
    http = api.http
    async with http.get(base + "/state") as resp:
        state = await resp.json()
    assert [a["app_id"] for a in state["apps"]] == [ID]
    assert FEISHU_APP_SECRET not in json.dumps(state)
    message = {"app_id": ID, "text": "via control", "sender_open_id": "ou_ctl"}
    async with http.post(base + "/messages", json=message) as resp:
        sent = await resp.json()
    assert sent["delivered"]
    chat_id = sent["chat_id"]
    params = {"chat_id": chat_id, "since": str(sent["version"]), "wait": "5"}
    poll = asyncio.create_task(http.get(base + "/chat", params=params))
    await api.reply(sent["message_id"], "text", {"text": "answer"})
    async with await poll as resp:
        view = await resp.json()
    assert [(i["kind"], i["text"]) for i in view["items"]] == [
        ("user", "via control"),
        ("message", "answer"),
    ]
    async with http.get(
        base + "/acks", params={"frame_message_id": sent["frame_message_id"]}
    ) as resp:
        assert [a["code"] for a in await resp.json()] == [200]
    async with http.post(base + "/redeliver", json={"message_id": sent["message_id"]}) as resp:
        assert (await resp.json())["message_id"] == sent["message_id"]
    assert (await raw.next_event())["event"]["message"]["message_id"] == sent["message_id"]
    async with http.post(base + "/messages", json={**message, "bogus": 1}) as resp:
        assert resp.status == 400
    async with http.post(base + "/messages", json={**message, "app_id": "nope"}) as resp:
        assert resp.status == 404
    async with http.get(base + "/chat", params={"chat_id": "missing"}) as resp:
        assert resp.status == 404
    async with http.post(base + "/faults", json={"path": DISCOVERY, "code": 1}) as resp:
        assert (await resp.json())["remaining"] == 1
    assert (await raw.discover())["code"] == 1
    async with http.post(base + "/handshakes/reject", json={"status": 403}) as resp:
        assert (await resp.json())["pending"] == 1
    async with http.delete(base + "/faults") as resp:
        assert await resp.json() == []
    async with http.post(base + "/latency", json={"seconds": 0}) as resp:
        assert (await resp.json())["latency"] == 0
    async with http.post(base + "/client_config", json={"ping_interval": 9}) as resp:
        assert (await resp.json())["PingInterval"] == 9
    async with http.post(base + "/tokens/expire") as resp:
        assert (await resp.json())["expired"] == 1
    async with http.get(
        base + "/calls", params={"path": f"{MESSAGES}/{sent['message_id']}/reply"}
    ) as resp:
        assert [c["code"] for c in await resp.json()] == [0]
    async with http.post(base + "/connections/silence", json={"app_id": ID}) as resp:
        assert (await resp.json())["connections"] == 1
    async with http.get(base + "/connections", params={"app_id": ID}) as resp:
        assert [c["state"] for c in await resp.json()] == ["silenced"]
    async with http.post(base + "/connections/drop", json={"app_id": ID, "mode": "close"}) as resp:
        assert (await resp.json())["connections"] == 1
    async with http.post(base + "/connections/refuse", json={"app_id": ID}) as resp:
        assert (await resp.json())["refused"] == [ID]
    async with http.get(base + "/cards") as resp:
        assert await resp.json() == []
    async with http.get(base + "/cards/unknown") as resp:
        assert resp.status == 404
    async with http.get(feishu_emulator.url + "/open-apis/not/emulated") as resp:
        assert resp.status == 404
    assert [c.status for c in await feishu_emulator.calls("/open-apis/not/emulated")] == [404]


async def test_channeld_emulate_feishu_serves_discovery() -> None:
    async with emulate("feishu", "--app", f"{ID}:cli-secret:Helper") as (printed, url):
        assert f"app_id={ID} app_secret=cli-secret" in printed
        assert 'type = "feishu"' in printed
        assert f'domain = "{url}"' in printed
        body = {"AppID": ID, "AppSecret": "cli-secret"}
        async with aiohttp.ClientSession() as http, http.post(url + DISCOVERY, json=body) as resp:
            answer = await resp.json()
        assert answer["code"] == 0
        assert answer["data"]["URL"].startswith(url.replace("http", "ws") + "/ws/v2?")


async def test_main_parses_options_and_reports_a_busy_port() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser.parse_args(["--listen", f"127.0.0.1:{port}", "--redelivery", "1,2"])
        assert args.app is None
        assert await main(args) == 1
        assert await main(parser.parse_args(["--redelivery", "soon"])) == 2


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


@pytest.mark.parametrize("platform", ["auto", "feishu"])
async def test_channeld_chat_talks_through_the_feishu_emulator(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api, platform: str
) -> None:
    async def bot() -> None:
        event = await raw.next_event(10)
        asked = event["event"]["message"]
        assert json.loads(asked["content"]) == {"text": "@_user_1 hi"}
        _, created = await api.create_card(streaming_card(""))
        card_id = created["data"]["card_id"]
        content = {"type": "card", "data": {"card_id": card_id}}
        assert (await api.reply(asked["message_id"], "interactive", content))[1]["code"] == 0
        assert (await api.stream(card_id, "Hel", 1))[1]["code"] == 0
        assert (await api.stream(card_id, "Hello there", 2))[1]["code"] == 0
        assert (await api.settings(card_id, {"streaming_mode": False}, 3))[1]["code"] == 0

    answering = asyncio.create_task(bot())
    out = io.StringIO()
    code = await chat(
        feishu_emulator.url,
        None,
        group=True,
        lines=_lines("hi"),
        out=out,
        tty=False,
        platform=platform,
    )
    await answering
    assert code == 0
    assert out.getvalue().splitlines()[-1] == "bot> Hello there"
    assert f"chatting with {ID} as you in a group" in out.getvalue()


async def test_a_gateway_restart_drops_refuses_and_comes_back(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    restart = asyncio.create_task(feishu_emulator.restart_gateway(ID, downtime=0.5))
    await asyncio.wait_for(raw.closed.wait(), 5)
    assert raw.close_code == 1006  # killed: no close frame
    assert (await raw.discover())["http_status"] == 503
    assert await restart == 1
    assert (await raw.discover())["code"] == 0


async def test_any_event_envelope_can_be_pushed(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient
) -> None:
    envelope = {"schema": "2.0", "header": {"event_id": "e1", "event_type": "card.action.trigger"}}
    delivery = await feishu_emulator.push_event(ID, envelope, parts=2, redeliver=False)
    assert (delivery.event_id, delivery.message_id, delivery.delivered) == ("e1", "", True)
    assert await raw.next_event() == envelope
    await feishu_emulator.wait_for(lambda e: e.acks(delivery.frame_message_id))
    body = {"app_id": ID, "payload": {**envelope, "header": {"event_id": "e2"}}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(feishu_emulator.url + "/_emulator/events", json=body) as resp,
    ):
        assert (await resp.json())["event_id"] == "e2"
    assert (await raw.next_event())["header"] == {"event_id": "e2"}
