"""The WuKongIM emulator against a plain HTTP client and a loopback webhook receiver: the API as
v2.2.5 answers it, the webhook pusher's batches and retries, the event stream, the control plane
and `channeld emulate wukongim`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.wukongim.emulator import WuKongIMEmulatorThread, add_arguments, main
from channels.wukongim.emulator.state import fake_channel_id
from channels.wukongim.emulator.streams import EventRequest, EventStore
from tests.e2e_support import emulate
from tests.wukongim_support import BOT, WebhookReceiver, attempts, b64_text, decoded, started

OLD_VERSION = "v2.1.5-20250424"


class Api:
    """A raw client of the emulator's HTTP API (bodies as text, then JSON when they are)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.http = http
        self.base = base
        self.headers = {"token": token} if token else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.text()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        status, text = await self.call("POST", path, body)
        return status, json.loads(text)

    async def send(self, channel_id: str, text: str, **fields: Any) -> dict[str, Any]:
        body = {
            "from_uid": BOT,
            "channel_id": channel_id,
            "channel_type": 1,
            "payload": b64_text(text),
            **fields,
        }
        status, answer = await self.post("/message/send", body)
        assert status == 200, answer
        data: dict[str, Any] = answer["data"]
        return data

    async def event(self, client_msg_no: str, event_type: str, **fields: Any) -> tuple[int, Any]:
        body = {
            "channel_id": "u1",
            "channel_type": 1,
            "from_uid": BOT,
            "client_msg_no": client_msg_no,
            "event_type": event_type,
            **fields,
        }
        return await self.post("/message/event", body)

    async def delta(self, client_msg_no: str, event_id: str, text: str) -> dict[str, Any]:
        payload = {"kind": "text", "delta": text}
        status, answer = await self.event(
            client_msg_no, "stream.delta", event_id=event_id, event_key="main", payload=payload
        )
        assert status == 200, answer
        data: dict[str, Any] = answer["data"]
        return data


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as hooks:
        yield hooks


@pytest.fixture
async def emulator(receiver: WebhookReceiver) -> AsyncIterator[WuKongIMEmulatorThread]:
    async with started(receiver) as emu:
        yield emu


@pytest.fixture
def api(http: aiohttp.ClientSession, emulator: WuKongIMEmulatorThread) -> Api:
    return Api(http, emulator.url)


def ids(post: Any) -> list[str]:
    return [m["message_idstr"] for m in post.body]


# -- the HTTP API ---------------------------------------------------------------------------------


async def test_a_manager_token_guards_every_route_with_an_empty_401(
    http: aiohttp.ClientSession,
) -> None:
    async with started(None, token="s3cret") as emu:
        anonymous, wrong = Api(http, emu.url), Api(http, emu.url, "nope")
        right = Api(http, emu.url, "s3cret")
        for client in (anonymous, wrong):
            assert await client.call("GET", "/varz") == (401, "")
            assert await client.call("POST", "/message/send", {}) == (401, "")
            assert await client.call("GET", "/no/such/route") == (401, "")  # before routing
        status, varz = await right.call("GET", "/varz")
        assert (status, json.loads(varz)["version"]) == (200, "v2.2.5-20260422")
        assert json.loads(varz)["manager_token_on"] == 1
        assert await right.call("GET", "/no/such/route") == (404, "404 page not found")
        assert await right.call("GET", "/message/send") == (404, "404 page not found")
        assert await right.post("/user/token", {"uid": "aibot", "token": "t0k"}) == (
            200,
            {"status": 200},
        )
        status, _ = await anonymous.call("GET", "/_emulator/state")  # the control plane is open
        assert status == 200
        calls = await emu.calls()
        assert [c.status for c in calls if c.path == "/varz"] == [401, 401, 200]
        (token_call,) = await emu.calls("/user/token")
        assert token_call.body == {"uid": "aibot", "token": "***"}


@pytest.mark.parametrize(
    ("version", "has_events"),
    [
        ("v2.2.5-20260422", True),
        ("v2.2.4-20260313", True),
        ("v2.2.3-20260128", False),  # v2.2.0 to v2.2.3 streamed with /stream/open
        (OLD_VERSION, False),
    ],
)
async def test_varz_names_the_version_and_older_servers_have_no_event_api(
    http: aiohttp.ClientSession, receiver: WebhookReceiver, version: str, has_events: bool
) -> None:
    async with started(receiver, version=version) as emu:
        api = Api(http, emu.url)
        status, varz = await api.call("GET", "/varz")
        assert (status, json.loads(varz)["version"]) == (200, version)
        sent = await api.send("u1", "anchor", client_msg_no="c1", is_stream=1)
        delta = {"kind": "text", "delta": "x"}
        event = await api.call(
            "POST",
            "/message/event",
            {"channel_id": "u1", "channel_type": 1, "from_uid": BOT, "client_msg_no": "c1",
             "event_id": "e1", "event_type": "stream.delta", "payload": delta},
        )  # fmt: skip
        sync = await api.call(
            "POST", "/message/eventsync", {"channel_id": "u1", "client_msg_no": "c1"}
        )
        if has_events:
            assert event[0] == 200 and sync[0] == 200
        else:
            assert event == (404, "404 page not found")
            assert sync == (404, "404 page not found")
        (post,) = await receiver.wait_for(1)
        # before v2.2.4 there is no is_stream: the anchor is stored as a plain message
        assert post.body[0]["setting"] == (2 if has_events else 0)
        assert post.body[0]["message_idstr"] == str(sent["message_id"])


async def test_send_answers_with_a_64_bit_id_as_v2_2_5_does(api: Api) -> None:
    status, text = await api.call(
        "POST",
        "/message/send",
        {"from_uid": BOT, "channel_id": "u1", "channel_type": 1, "payload": b64_text("hi")},
    )
    answer = json.loads(text)
    assert status == 200
    assert list(answer) == ["data", "status"] and answer["status"] == 200
    assert sorted(answer["data"]) == ["client_msg_no", "message_id"]
    first = answer["data"]["message_id"]
    assert isinstance(first, int) and first > 2**53
    assert f'"message_id":{first}' in text  # a JSON integer, not a float or a string
    generated = answer["data"]["client_msg_no"]
    assert len(generated) == 33 and generated.endswith("0")
    second = await api.send("u1", "again", client_msg_no="mine")
    assert second["client_msg_no"] == "mine"
    assert second["message_id"] > first


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({"channel_id": "u1", "channel_type": 1}, "payload不能为空！"),
        ({"channel_type": 1, "payload": b64_text("x")}, "无法处理发送消息请求！"),
        ({"channel_id": "a@b", "channel_type": 1, "payload": b64_text("x")}, "频道ID不合法！"),
        ({"channel_id": "u1", "channel_type": "1", "payload": b64_text("x")}, "channel_type"),
        ({"channel_id": "u1", "channel_type": 1, "payload": "not base64!"}, "base64"),
        ({"channel_id": "u1", "channel_type": 300, "payload": b64_text("x")}, "uint8"),
    ],
)
async def test_send_refuses_like_the_server(api: Api, body: dict[str, Any], msg: str) -> None:
    status, answer = await api.post("/message/send", {"from_uid": BOT, **body})
    assert status == 400
    assert answer["status"] == 400 and msg in answer["msg"]


async def test_a_body_that_is_not_json_is_a_400(api: Api) -> None:
    async with api.http.post(api.base + "/message/send", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["status"] == 400


# -- the webhook pusher ---------------------------------------------------------------------------


async def test_a_full_batch_goes_at_once_as_one_json_array(receiver: WebhookReceiver) -> None:
    async with started(receiver, count_per_push=3, push_interval=60.0) as emu:
        dm = await emu.send_user_message(BOT, from_uid="alice", text="hello")
        other = await emu.send_user_message(BOT, from_uid="bob", text="hi there")
        assert await emu.pushes() == []  # two of three: the ticker is a minute away
        group = await emu.send_user_message(
            BOT, from_uid="carol", text="@aibot help", group=True, mention=True, group_id="g1"
        )
        (post,) = await receiver.wait_for(1)
        pushes = await attempts(emu, 1)
    assert post.path_qs == "/hooks/wk-main?event=msg.notify"
    assert post.headers["Content-Type"] == "application/json"
    assert isinstance(post.body, list)
    assert ids(post) == [dm.message_id, other.message_id, group.message_id]
    first, second, third = post.body
    for message in post.body:
        assert message["message_id"] > 2**53
        assert str(message["message_id"]) == message["message_idstr"]
        assert abs(message["timestamp"] - time.time()) < 60  # seconds, not milliseconds
    assert (first["from_uid"], first["channel_id"], first["channel_type"]) == ("alice", BOT, 1)
    assert decoded(first) == {"type": 1, "content": "hello"}
    assert (second["from_uid"], second["channel_id"]) == ("bob", BOT)
    assert (third["from_uid"], third["channel_id"], third["channel_type"]) == ("carol", "g1", 2)
    assert decoded(third) == {"type": 1, "content": "@aibot help", "mention": {"uids": [BOT]}}
    assert [(a.ok, a.message_ids) for a in pushes] == [(True, tuple(ids(post)))]


async def test_the_ticker_sends_everything_queued_as_one_batch(
    emulator: WuKongIMEmulatorThread, receiver: WebhookReceiver
) -> None:
    await emulator.pause_webhook()
    sent = [await emulator.send_user_message(BOT, from_uid=f"u{i}", text="x") for i in range(3)]
    await emulator.pause_webhook(False)
    (post,) = await receiver.wait_for(1)
    assert ids(post) == [s.message_id for s in sent]
    later = await emulator.send_user_message(BOT, from_uid="u9", text="later")
    _, second = await receiver.wait_for(2)
    assert ids(second) == [later.message_id]


async def test_a_failed_batch_is_sent_again_whole_until_it_gets_200(
    emulator: WuKongIMEmulatorThread, receiver: WebhookReceiver
) -> None:
    receiver.statuses.extend([500, 500])
    await emulator.pause_webhook()
    sent = [await emulator.send_user_message(BOT, from_uid=u, text=u) for u in ("a", "b")]
    await emulator.pause_webhook(False)
    posts = await receiver.wait_for(3)
    expected = [s.message_id for s in sent]
    assert [ids(p) for p in posts] == [expected] * 3
    assert [p.status for p in posts] == [500, 500, 200]
    assert posts[0].body == posts[2].body
    pushes = await attempts(emulator, 3)
    assert [a.status for a in pushes] == [500, 500, 200]
    assert all(b.at - a.at >= 0.05 for a, b in itertools.pairwise(pushes))
    assert [a.dropped for a in pushes] == [(), (), ()]


@pytest.mark.parametrize("status", [500, 429, 204])
async def test_a_message_is_pushed_five_times_at_most_then_dropped(
    emulator: WuKongIMEmulatorThread, receiver: WebhookReceiver, status: int
) -> None:
    receiver.default_status = status  # anything but exactly 200 is a failure
    lost = await emulator.send_user_message(BOT, from_uid="u1", text="lost")
    posts = await receiver.wait_for(5)
    assert [ids(p) for p in posts] == [[lost.message_id]] * 5
    pushes = await attempts(emulator, 5)
    assert [a.dropped for a in pushes] == [()] * 4 + [(lost.message_id,)]
    receiver.default_status = 200
    kept = await emulator.send_user_message(BOT, from_uid="u1", text="kept")
    sixth = (await receiver.wait_for(6))[5]
    assert ids(sixth) == [kept.message_id]  # the dropped message does not come back


async def test_a_webhook_that_does_not_answer_counts_as_a_failure(
    http: aiohttp.ClientSession,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/hooks/wk-main"
    async with started(None, webhook=dead, retry_max=2) as emu:
        sent = await emu.send_user_message(BOT, from_uid="u1", text="anyone?")
        pushes = await attempts(emu, 2)
    assert [(a.status, a.dropped) for a in pushes] == [(None, ()), (None, (sent.message_id,))]
    assert pushes[0].error


async def test_an_address_with_a_query_gets_a_second_question_mark(
    receiver: WebhookReceiver,
) -> None:
    async with started(receiver, webhook=receiver.url(key="K123")) as emu:
        sent = await emu.send_user_message(BOT, from_uid="u1", text="hi")
        (post,) = await receiver.wait_for(1)
        (attempt,) = await emu.wait_for(lambda e: e.pushes(sent.message_id))
    # fmt.Sprintf("%s?event=%s", httpAddr, event), as v2.2.5 builds it
    assert post.path_qs == "/hooks/wk-main?key=K123?event=msg.notify"
    assert post.query == {"key": "K123?event=msg.notify"}
    assert attempt.url == receiver.url(key="K123") + "?event=msg.notify"


async def test_the_bots_own_messages_come_back_through_the_webhook(
    api: Api, receiver: WebhookReceiver
) -> None:
    dm = await api.send("u1", "to you")
    await api.send("g1", "to all", channel_type=2)
    first, second = await receiver.messages(2)
    assert (first["message_id"], first["from_uid"], first["channel_id"]) == (
        dm["message_id"],
        BOT,
        "u1",
    )
    assert (second["from_uid"], second["channel_id"], second["channel_type"]) == (BOT, "g1", 2)
    assert decoded(second) == {"type": 1, "content": "to all"}


# -- the message event stream ---------------------------------------------------------------------


async def test_a_streamed_answer_is_one_card_and_only_its_anchor_is_pushed(
    emulator: WuKongIMEmulatorThread, api: Api, receiver: WebhookReceiver
) -> None:
    asked = await emulator.send_user_message(BOT, from_uid="u1", text="hello?")
    anchor = await api.send("u1", "", client_msg_no="cmn-1", is_stream=1)
    opened = await api.delta("cmn-1", "d1", "Hello")
    assert (opened["stream_status"], opened["msg_event_seq"], opened["event_key"]) == (
        "open",
        0,
        "main",
    )
    await api.delta("cmn-1", "d2", ", world")
    view = await emulator.chat_view(asked.chat_id)
    assert view is not None
    card = view["items"][1]
    assert (card["kind"], card["text"], card["status"], card["done"]) == (
        "card",
        "Hello, world",
        "streaming",
        False,
    )
    status, closed = await api.event("cmn-1", "stream.close", event_id="c1", payload={})
    assert (status, closed["data"]["stream_status"], closed["data"]["msg_event_seq"]) == (
        200,
        "closed",
        1,
    )
    status, finished = await api.event("cmn-1", "stream.finish", event_id="f1")
    assert (status, finished["data"]["event_key"]) == (200, "__finish__")
    view = await emulator.chat_view(asked.chat_id)
    assert view is not None
    assert [(i["kind"], i["text"]) for i in view["items"]] == [
        ("user", "hello?"),
        ("card", "Hello, world"),
    ]
    assert (view["items"][1]["status"], view["items"][1]["done"]) == ("finished", True)
    pushed = await receiver.messages(2)
    assert [m["message_idstr"] for m in pushed] == [asked.message_id, str(anchor["message_id"])]
    assert pushed[1]["setting"] == 2  # SettingStream
    # events never join the webhook queue: nothing is waiting, nothing else was pushed
    assert await emulator.call(lambda e: list(e.webhook.pending)) == []
    received = len(receiver.received)
    pushed_ids = [i for p in await attempts(emulator, received) for i in p.message_ids]
    assert pushed_ids == [asked.message_id, str(anchor["message_id"])]
    assert [e.event_type for e in await emulator.events("cmn-1")] == [
        "stream.delta",
        "stream.delta",
        "stream.close",
        "stream.finish",
    ]


async def test_the_chat_long_poll_returns_when_the_stream_moves(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    asked = await emulator.send_user_message(BOT, from_uid="u1", text="q")
    await api.send("u1", "", client_msg_no="cmn-2", is_stream=1)
    version = (await emulator.chat_view(asked.chat_id) or {})["version"]
    params = {"chat_id": asked.chat_id, "since": str(version), "wait": "10"}
    # whether the poll arrives before or after the delta, it must see the delta's version
    poll = asyncio.create_task(api.call("GET", "/_emulator/chat?" + _query(params)))
    await api.delta("cmn-2", "d1", "typing")
    status, text = await poll
    view = json.loads(text)
    assert status == 200 and view["version"] > version
    assert view["items"][-1]["text"] == "typing"


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize(
    ("ending", "shown"),
    [
        (("stream.error", {"error": "model down"}), ("error", "failed", "model down", "half")),
        (("stream.cancel", {}), ("cancelled", "cancelled", "", "half")),
        # clients show a close's snapshot in place of the deltas
        (("stream.close", {"snapshot": {"kind": "text", "text": "all"}}),
         ("closed", "finished", "", "all")),
    ],
)  # fmt: skip
async def test_how_a_stream_ends_shows_on_the_card(
    emulator: WuKongIMEmulatorThread,
    api: Api,
    ending: tuple[str, dict[str, Any]],
    shown: tuple[str, str, str, str],
) -> None:
    asked = await emulator.send_user_message(BOT, from_uid="u1", text="q")
    await api.send("u1", "", client_msg_no="cmn-3", is_stream=1)
    await api.delta("cmn-3", "d1", "half")
    status, answer = await api.event("cmn-3", ending[0], event_id="x1", payload=ending[1])
    assert (status, answer["data"]["stream_status"]) == (200, shown[0])
    view = await emulator.chat_view(asked.chat_id)
    assert view is not None
    item = view["items"][-1]
    assert item["done"] is True
    assert (item["status"], item["error"], item["text"]) == shown[1:]


async def test_a_delta_after_the_end_is_refused_only_while_another_lane_is_open(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    await api.send("u1", "", client_msg_no="two-lanes", is_stream=1)
    thinking = {"kind": "text", "delta": "hmm"}
    await api.event(
        "two-lanes", "stream.delta", event_id="t1", event_key="thinking", payload=thinking
    )
    await api.delta("two-lanes", "d1", "answer")
    await api.event("two-lanes", "stream.close", event_id="c1")
    status, refused = await api.event(
        "two-lanes", "stream.delta", event_id="d2", payload={"kind": "text", "delta": "!"}
    )
    assert (status, refused) == (400, {"msg": "stream closed", "status": 400})

    # one lane: its close ends the cache session, and a late delta opens a new one
    await api.send("u1", "", client_msg_no="one-lane", is_stream=1)
    await api.delta("one-lane", "d1", "done")
    await api.event("one-lane", "stream.close", event_id="c1")
    late = await api.delta("one-lane", "d2", " (late)")
    assert (late["stream_status"], late["msg_event_seq"]) == ("open", 0)
    _, history = await api.post(
        "/channel/messagesync",
        {"login_uid": BOT, "channel_id": "u1", "channel_type": 1, "limit": 1},
    )
    (main,) = history["messages"][0]["event_meta"]["events"]
    # the open cache lane hides the closed one: history shows only the late text
    assert (main["status"], main["snapshot"]["text"]) == ("open", " (late)")


async def test_a_persisted_event_sent_again_answers_as_the_first_time(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    await api.send("u1", "", client_msg_no="cmn-4", is_stream=1)
    await api.delta("cmn-4", "d1", "text")
    first = await api.event("cmn-4", "stream.close", event_id="c1", payload={"end_reason": 0})
    again = await api.event("cmn-4", "stream.close", event_id="c1", payload={"end_reason": 0})
    assert first == again and first[0] == 200
    other = await api.event("cmn-4", "stream.error", event_id="x9", payload={"error": "late"})
    assert other[1]["data"]["stream_status"] == "closed"  # a terminal key takes nothing more
    assert other[1]["data"]["msg_event_seq"] == first[1]["data"]["msg_event_seq"]
    status, synced = await api.post(
        "/message/eventsync",
        {"channel_id": "u1", "channel_type": 1, "from_uid": BOT, "client_msg_no": "cmn-4"},
    )
    assert status == 200
    (event,) = synced["data"]["events"]
    assert (event["event_id"], event["event_type"], event["payload"]) == (
        "c1",
        "stream.close",
        {"kind": "text", "text": "text"},
    )
    records = await emulator.events("cmn-4")
    assert [r.repeated for r in records] == [False, False, True, False]


async def test_a_delta_sent_again_is_appended_again_as_the_server_code_does(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    asked = await emulator.send_user_message(BOT, from_uid="u1", text="q")
    await api.send("u1", "", client_msg_no="cmn-5", is_stream=1)
    await api.delta("cmn-5", "d1", "ab")
    await api.delta("cmn-5", "d1", "ab")  # the docs promise idempotency; the cache appends
    view = await emulator.chat_view(asked.chat_id)
    assert view is not None and view["items"][-1]["text"] == "abab"
    status, history = await api.post(
        "/channel/messagesync",
        {"login_uid": BOT, "channel_id": "u1", "channel_type": 1, "limit": 10},
    )
    assert status == 200
    meta = history["messages"][-1]["event_meta"]
    assert meta["events"][0]["snapshot"] == {"kind": "text", "text": "abab"}
    assert [r.repeated for r in await emulator.events("cmn-5")] == [False, True]


async def test_finish_alone_leaves_the_main_lane_open(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    await api.send("u1", "", client_msg_no="cmn-6", is_stream=1)
    await api.delta("cmn-6", "d1", "all of it")
    status, _ = await api.event("cmn-6", "stream.finish", event_id="f1")
    assert status == 200
    _, history = await api.post(
        "/channel/messagesync",
        {"login_uid": "u1", "channel_id": BOT, "channel_type": 1, "limit": 5},
    )
    message = history["messages"][-1]
    meta = message["event_meta"]
    assert meta["completed"] is True
    assert [(e["event_key"], e["status"]) for e in meta["events"]] == [("main", "open")]
    assert base64.b64decode(message["stream_data"]) == b"all of it"
    assert "end" not in message
    assert (await api.delta("cmn-6", "d2", " and more"))["stream_status"] == "open"


async def test_events_need_their_fields_but_not_an_anchor(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    status, answer = await api.event("cmn-x", "stream.delta", payload={"kind": "text"})
    assert (status, answer) == (400, {"msg": "event_id不能为空！", "status": 400})
    status, answer = await api.event(
        "never-anchored", "stream.delta", event_id="d1", payload={"kind": "text", "delta": "?"}
    )
    assert (status, answer["data"]["stream_status"]) == (200, "open")  # v2.2.5 opens a session
    (record,) = await emulator.events("never-anchored")
    assert record.anchored is False
    assert await emulator.cards() == []


def test_a_cache_session_expires_after_ten_idle_minutes() -> None:
    now = [1000.0]
    store = EventStore(clock=lambda: now[0])
    store.register_stream("c1", fake_channel_id(BOT, "u1"), 1, BOT, 1)

    def delta(event_id: str) -> dict[str, Any]:
        payload = b'{"kind":"text","delta":"x"}'
        request = EventRequest("u1", 1, "", 0, "c1", event_id, "stream.delta", payload=payload)
        answer, _ = store.append(request)
        return answer

    assert delta("d1")["from_uid"] == BOT  # filled in from the anchor
    now[0] += 599
    assert delta("d2")["from_uid"] == BOT
    now[0] += 601
    assert delta("d3")["from_uid"] == "____system"  # the anchor's session is gone


# -- history --------------------------------------------------------------------------------------


async def test_messagesync_pages_a_channel_from_either_side(api: Api) -> None:
    sent = [await api.send("u1", f"m{i}") for i in range(5)]

    async def page(login: str, channel: str, **fields: Any) -> tuple[list[int], int]:
        body = {"login_uid": login, "channel_id": channel, "channel_type": 1, **fields}
        status, answer = await api.post("/channel/messagesync", body)
        assert status == 200, answer
        return [m["message_seq"] for m in answer["messages"]], answer["more"]

    assert await page(BOT, "u1", limit=2) == ([4, 5], 1)
    assert await page("u1", BOT, limit=10) == ([1, 2, 3, 4, 5], 0)  # the same person channel
    assert await page("u1", BOT, start_message_seq=2, pull_mode=1, limit=2) == ([2, 3], 1)
    assert await page("u1", BOT, start_message_seq=3, pull_mode=0, limit=10) == ([1, 2, 3], 0)
    assert await page("u2", BOT, limit=10) == ([], 0)
    # a person channel is named by its stored id here
    query = _query(
        {
            "channel_id": fake_channel_id(BOT, "u1"),
            "channel_type": "1",
            "client_msg_no": sent[2]["client_msg_no"],
        }
    )
    status, found = await api.call("GET", "/message/byclientmsgno?" + query)
    assert status == 200 and json.loads(found)["message_seq"] == 3
    status, missing = await api.call("GET", "/message/byclientmsgno?" + query + "x")
    assert (status, json.loads(missing)) == (200, {"status": 404})


# -- the control plane ----------------------------------------------------------------------------


async def test_the_control_plane_sends_user_messages_and_redelivers_them(
    emulator: WuKongIMEmulatorThread, api: Api, receiver: WebhookReceiver
) -> None:
    status, state = await api.call("GET", "/_emulator/state")
    assert status == 200 and json.loads(state)["apps"] == [{"bot_uid": BOT}]
    status, sent = await api.post(
        "/_emulator/messages",
        {"bot_uid": BOT, "from_uid": "dora", "group": False, "mention": True, "text": "hi"},
    )
    assert status == 200 and sent["delivered"] is True
    (first,) = await receiver.wait_for(1)
    assert ids(first) == [sent["item_id"]]
    status, view = await api.call("GET", f"/_emulator/chat?chat_id={sent['chat_id']}")
    assert json.loads(view)["items"][0]["id"] == sent["item_id"]

    status, again = await api.post(
        "/_emulator/messages", {"bot_uid": BOT, "message_id": sent["item_id"]}
    )
    assert (status, again["item_id"]) == (200, sent["item_id"])
    _, second = await receiver.wait_for(2)
    assert second.body == first.body  # the same message, pushed again

    await emulator.pause_webhook()
    fresh = await emulator.send_user_message(BOT, from_uid="eve", text="new")
    status, queued = await api.post("/_emulator/redeliver", {"message_ids": [sent["item_id"]]})
    assert queued == {"queued": [sent["item_id"]]}
    await emulator.pause_webhook(False)
    _, _, third = await receiver.wait_for(3)
    assert ids(third) == [fresh.message_id, sent["item_id"]]
    status, unknown = await api.post("/_emulator/messages", {"bot_uid": "nobody", "text": "x"})
    assert status == 404 and "nobody" in unknown["error"]


async def test_injected_faults_answer_like_the_server_or_a_proxy(
    emulator: WuKongIMEmulatorThread, api: Api
) -> None:
    await emulator.add_fault("/message/send", 429, retry_after=3)
    async with api.http.post(
        api.base + "/message/send", json={"channel_id": "u1", "payload": b64_text("x")}
    ) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "3")
        assert (await resp.json())["status"] == 429
    await api.send("u1", "fine now")
    await emulator.add_fault("/varz", 401)
    assert await api.call("GET", "/varz") == (401, "")
    await emulator.add_fault("/message/event", delay=1.0)
    timeout = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(TimeoutError):
        await api.http.post(api.base + "/message/event", json={}, timeout=timeout)
    await emulator.downtime(0.3)
    status, _ = await api.call("GET", "/varz")
    assert status == 503
    await emulator.wait_for(lambda e: not e.state.faults)
    status, _ = await api.call("GET", "/varz")
    assert status == 200


# -- channeld emulate wukongim --------------------------------------------------------------------


async def test_channeld_emulate_wukongim_serves_and_pushes(
    http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    async with emulate(
        "wukongim",
        "--bot",
        "aibot",
        "--bot",
        "helper",
        "--token",
        "t",
        "--webhook",
        receiver.url(key="k-0123456789abcdef"),
        "--push-interval",
        "0.05",
    ) as (printed, url):
        assert "bots: aibot, helper" in printed
        assert f'api_base = "{url}"' in printed
        assert "manager token: required" in printed
        assert 'webhook_key = "${WUKONGIM_WEBHOOK_KEY}"' in printed  # the URL carries one
        status, varz = await Api(http, url, "t").call("GET", "/varz")
        assert status == 200 and json.loads(varz)["server_name"] == "WuKongIM"
        status, sent = await Api(http, url).post(
            "/_emulator/messages", {"bot_uid": "helper", "from_uid": "u1", "text": "hi"}
        )
        assert status == 200
        (post,) = await receiver.wait_for(1)
        assert ids(post) == [sent["message_id"]] and post.body[0]["channel_id"] == "helper"


async def test_main_parses_its_options_and_reports_a_busy_port() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.listen, defaults.bot, defaults.version) == (
        "127.0.0.1:5001",
        None,
        "v2.2.5-20260422",
    )
    assert defaults.webhook == "http://127.0.0.1:8789/hooks/wk-main"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser.parse_args(
            ["--listen", f"127.0.0.1:{port}", "--bot", "b1", "--bot", "b2", "--push-interval", "2"]
        )
        assert [b.bot_uid for b in args.bot] == ["b1", "b2"]
        assert args.push_interval == 2.0
        assert await main(args) == 1
