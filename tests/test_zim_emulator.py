"""The ZIM emulator against a signed HTTP client and a loopback callback receiver: both
signatures with the documented vectors, the public-parameter checks, RobotRegister's two
"already exists" forms, the 2,000-byte text limit, the sliding-second rate window, edits and
their window, echoes, the callback retry schedule, the control plane and the command."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import itertools
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.zim.emulator import ZimEmulator, ZimEmulatorThread, add_arguments, main, serve
from channels.zim.emulator.callbacks import RETRY_DELAYS, CallbackAttempt
from channels.zim.emulator.signing import api_signature, callback_signature
from channels.zim.emulator.state import Robot
from tests.e2e_support import emulate
from tests.zim_support import (
    APP_ID,
    ROBOT,
    SECRET,
    USER,
    CallbackReceiver,
    FakeClock,
    ZimApi,
    started,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver() as hooks:
        yield hooks


@pytest.fixture
async def emulator(receiver: CallbackReceiver) -> AsyncIterator[ZimEmulatorThread]:
    async with started(receiver, registered=True) as emu:
        yield emu


@pytest.fixture
def api(http: aiohttp.ClientSession, emulator: ZimEmulatorThread) -> ZimApi:
    return ZimApi(http, emulator.url)


def signed_correctly(body: dict[str, Any], secret: str = SECRET) -> bool:
    """The callback rule written out again: sha1 of the sorted three strings, joined."""
    parts = sorted([secret, str(body["timestamp"]), body["nonce"]])
    digest = hashlib.sha1("".join(parts).encode()).hexdigest()  # noqa: S324 - ZIM's scheme
    return digest == str(body["signature"])


def attempts_once(emu: ZimEmulator, msg_id: str, count: int) -> list[CallbackAttempt] | None:
    """The callback attempts of one message once there are `count` of them."""
    attempts = emu.callback_attempts(msg_id)
    return attempts if len(attempts) >= count else None


# -- signatures ------------------------------------------------------------------------------------


def test_signatures_match_the_documented_vectors() -> None:
    assert callback_signature("secret", 1470820198, "123412") == (
        "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    )
    assert api_signature(
        "12345", "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943
    ) == ("43e5cfcca828314675f91b001390566a")


async def test_callbacks_are_signed_with_the_server_secret_or_a_distinct_callback_secret(
    receiver: CallbackReceiver,
) -> None:
    async with started(receiver) as emu:
        sent = await emu.send_user_message(ROBOT, from_user_id=USER, text="hi")
        (post,) = await receiver.wait_for(1)
    body = post.body
    assert sent.delivered and sent.message_id == body["msg_id"]
    assert signed_correctly(body) and not signed_correctly(body, "other")
    assert isinstance(body["timestamp"], int) and abs(body["timestamp"] - time.time()) < 60
    assert (body["appid"], body["event"], body["nonce"].isdigit()) == (APP_ID, "send_msg", True)
    assert (body["conv_type"], body["conv_id"], body["from_user_id"]) == (0, ROBOT, USER)
    assert (body["msg_type"], body["msg_body"], body["send_result"]) == (1, "hi", 0)
    assert "source" not in body  # 0, the SDK, is left out
    async with CallbackReceiver() as other, started(other, callback_secret="cb-secret") as emu:
        await emu.send_user_message(ROBOT, from_user_id=USER, text="hi")
        (post,) = await other.wait_for(1)
    assert signed_correctly(post.body, "cb-secret") and not signed_correctly(post.body)


async def test_api_calls_need_every_public_parameter_and_a_fresh_valid_signature(
    api: ZimApi,
) -> None:
    now = int(time.time())
    cases: list[tuple[dict[str, str], int]] = [
        ({"Action": ""}, 100000006),
        ({"Action": "NoSuchAction"}, 100000007),
        ({"AppId": "x1"}, 100000001),
        ({"AppId": "42"}, 100000010),
        ({"Timestamp": ""}, 100000002),
        ({"Timestamp": "soon"}, 100000003),
        ({"SignatureNonce": ""}, 100000008),
        ({"Signature": ""}, 100000009),
        ({"SignatureVersion": ""}, 100000013),
        ({"SignatureVersion": "1.0"}, 100000014),
        ({"Signature": "0" * 32}, 100000005),
        ({"Timestamp": str(now - 601)}, 100000004),
        ({"Timestamp": str(now + 601)}, 100000004),
    ]
    for overrides, code in cases:
        answer = await api.call(
            "QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER}, **overrides
        )
        assert answer["Code"] == code, (overrides, answer)
        assert answer["RequestId"]
    # a signature made for its own timestamp, 590 s away in either direction, is still good
    for skew in (-590, 590):
        nonce, stamp = "0123456789abcdef", str(now + skew)
        good = api_signature(APP_ID, nonce, SECRET, stamp)
        answer = await api.call(
            "QueryPeerMsg",
            {"FromUserId": ROBOT, "ToUserId": USER},
            SignatureNonce=nonce,
            Timestamp=stamp,
            Signature=good,
        )
        assert answer["Code"] == 0, answer
    wrong = ZimApi(api.http, api.base, secret="not-the-secret")
    assert (await wrong.send("hi"))["Code"] == 100000005


# -- RobotRegister ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "code"), [("list", 0), ("code", 660700002)])
async def test_registering_again_answers_already_exists_in_either_form(
    http: aiohttp.ClientSession, form: str, code: int
) -> None:
    async with started(None, exists_form=form) as emu:
        api = ZimApi(http, emu.url)
        assert (await api.send("too early"))["Code"] == 660500002  # not registered yet
        first = await api.register()
        assert (first["Code"], first["ErrorList"]) == (0, [])
        again = await api.register()
        assert again["Code"] == code
        assert [(e["UserId"], e["SubCode"]) for e in again["ErrorList"]] == [(ROBOT, 660700002)]
        both = await api.register(ROBOT, "@RBT#second")  # one new: Code 0 in either form
        assert (both["Code"], len(both["ErrorList"])) == (0, 1)
        robots = await emu.robots()
        assert [(r.robot_id, r.registered, r.name) for r in robots] == [
            (ROBOT, True, "Assistant"),
            ("@RBT#second", True, "Assistant"),
        ]
        bad = await api.register("assistant")  # no @RBT# prefix
        assert bad["Code"] == 660000002 and bad["ErrorList"][0]["SubCode"] == 660000002
        long_id = await api.register("@RBT#" + "x" * 28)
        assert long_id["Code"] == 660000002
        assert (await api.send("now it may"))["Code"] == 0


# -- SendPeerMessage -------------------------------------------------------------------------------


async def test_a_text_is_at_most_2000_bytes_of_utf8(api: ZimApi) -> None:
    fits = "汉" * 666 + "ab"  # 1998 + 2 bytes
    assert len(fits.encode()) == 2000
    answer = await api.send(fits)
    assert answer["Code"] == 0, answer
    ((entry,),) = [answer["SuccList"]]
    assert (entry["UserId"], entry["MsgSeq"]) == (USER, 1) and entry["MsgId"].isdigit()
    assert (await api.send(fits + "c"))["Code"] == 660400001
    assert (await api.send("汉" * 667))["Code"] == 660400001  # 667 characters, 2001 bytes
    assert (await api.send(""))["Code"] == 660000002
    assert (await api.send("hi", Priority=4))["Code"] == 660000002
    assert (await api.send("hi", to=ROBOT))["Code"] == 660000002  # to itself
    second = await api.send("next")
    assert second["SuccList"][0]["MsgSeq"] == 2
    assert int(second["SuccList"][0]["MsgId"]) > 2**53


async def test_sends_and_edits_share_20_requests_per_sliding_second(
    http: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    async with started(None, registered=True, clock=clock) as emu:
        api = ZimApi(http, emu.url)
        for _ in range(10):
            assert (await api.send("a"))["Code"] == 0
        clock.now += 0.5
        for _ in range(10):
            assert (await api.edit(1, "edited"))["Code"] == 0
        assert (await api.send("21st"))["Code"] == 7
        clock.now += 0.5  # the first ten leave the window; a fixed second would allow 20
        for _ in range(10):
            assert (await api.send("b"))["Code"] == 0
        assert (await api.edit(1, "over"))["Code"] == 7
        # other actions have windows of their own
        query = await api.call("QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER})
        assert query["Code"] == 0
        refusals = await emu.refusals()
        assert [(r.action, r.in_window) for r in refusals] == [
            ("SendPeerMessage", 20),
            ("EditC2cMsgBody", 20),
        ]
        calls = await emu.calls()
        assert [c.code for c in calls].count(7) == 2
        assert {c.action for c in calls} == {"SendPeerMessage", "EditC2cMsgBody", "QueryPeerMsg"}


# -- EditC2cMsgBody and QueryPeerMsg ---------------------------------------------------------------


async def test_edits_need_the_message_seq_and_its_24_hour_window(
    http: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    async with started(None, registered=True, clock=clock) as emu:
        api = ZimApi(http, emu.url)
        msg_id = (await api.send("one"))["SuccList"][0]["MsgId"]
        first = await api.edit(1, "one two")
        assert (first["Code"], first["EditMsgSeq"], first["StateMsgSeq"]) == (0, 1, 1)
        assert abs(first["LatestEditTime"] - time.time()) < 60
        second = await api.edit(1, "one two three")
        assert (second["EditMsgSeq"], second["StateMsgSeq"]) == (2, 2)
        assert (await api.edit(2, "no such seq"))["Code"] == 661000005
        assert (await api.edit(1, "as someone else", FromUserId=USER))["Code"] == 661000005
        assert (await api.edit(1, "x" * 2001))["Code"] == 660400001
        assert (await api.edit(1, "ext only", EditType=2))["Code"] == 660000002
        stored = await emu.message(msg_id)
        assert stored is not None
        assert (stored.text, stored.edit_seq) == ("one two three", 2)
        assert stored.texts == ["one", "one two", "one two three"]
        clock.now += 24 * 3600 - 1
        assert (await api.edit(1, "just in time"))["Code"] == 0
        clock.now += 2
        assert (await api.edit(1, "too late"))["Code"] == 661000001


async def test_history_is_newest_first_in_pages_with_edited_texts(
    emulator: ZimEmulatorThread, api: ZimApi
) -> None:
    await emulator.send_user_message(ROBOT, from_user_id=USER, text="question")
    await api.send("draft")
    await api.edit(2, "answer")
    await api.send("more")
    page = await api.call(
        "QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER, "Limit": 2, "Next": 0}
    )
    assert [(m["Sender"], m["MsgBody"], m["MsgSeq"]) for m in page["List"]] == [
        (ROBOT, "more", 3),
        (ROBOT, "answer", 2),
    ]
    assert isinstance(page["List"][0]["MsgId"], int) and page["Next"] == 1
    rest = await api.call(
        "QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER, "Limit": 2, "Next": page["Next"]}
    )
    assert [(m["Sender"], m["MsgBody"]) for m in rest["List"]] == [(USER, "question")]
    assert rest["Next"] == 0
    bad = await api.call("QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER, "Limit": 101})
    assert bad["Code"] == 660000002


# -- callbacks -------------------------------------------------------------------------------------


async def test_the_robots_sends_and_edits_are_echoed_as_server_api_send_msg(
    emulator: ZimEmulatorThread, api: ZimApi, receiver: CallbackReceiver
) -> None:
    sent = await api.send("partial")
    msg_id = sent["SuccList"][0]["MsgId"]
    (echo,) = await receiver.wait_for(1)
    await api.edit(1, "partial and more")
    _, edited = await receiver.wait_for(2)
    for post, text in ((echo, "partial"), (edited, "partial and more")):
        body = post.body
        assert signed_correctly(body)
        assert (body["event"], body["source"], body["from_user_id"]) == ("send_msg", 1, ROBOT)
        assert (body["conv_id"], body["msg_id"], body["msg_seq"]) == ("", msg_id, 1)
        assert body["msg_body"] == text
        assert body["user_list"] == [{"UserId": USER, "MsgId": msg_id, "MsgSeq": 1}]
    assert (
        echo.body["nonce"] != edited.body["nonce"]
        or echo.body["timestamp"] != (edited.body["timestamp"])
    )


async def test_a_users_message_can_come_as_send_msg_bot_msg_or_both(
    receiver: CallbackReceiver, http: aiohttp.ClientSession
) -> None:
    async with started(receiver, callback_mode="both", registered=True) as emu:
        sent = await emu.send_user_message(ROBOT, from_user_id=USER, text="hello")
        posts = await receiver.wait_for(2)
        assert sorted(p.body["event"] for p in posts) == ["bot_msg", "send_msg"]
        assert {p.body["msg_id"] for p in posts} == {sent.message_id}
        await emu.send_user_message(ROBOT, from_user_id=USER, text="only", callback="bot_msg")
        (third,) = (await receiver.wait_for(3))[2:]
        assert third.body["event"] == "bot_msg"
        await ZimApi(http, emu.url).send("answer")  # echoed with every configured event
        echoes = (await receiver.wait_for(5))[3:]
        assert sorted(p.body["event"] for p in echoes) == ["bot_msg", "send_msg"]
        assert {p.body["source"] for p in echoes} == {1}


async def test_msg_body_can_come_url_encoded(receiver: CallbackReceiver) -> None:
    text = "50% off & more: 汉字 a+b"
    async with started(receiver, url_encode=True) as emu:
        await emu.send_user_message(ROBOT, from_user_id=USER, text=text)
        (post,) = await receiver.wait_for(1)
    assert post.body["msg_body"] != text
    assert urllib.parse.unquote_plus(post.body["msg_body"]) == text
    assert " " not in post.body["msg_body"]


async def test_a_refused_callback_is_retried_with_the_same_body_on_the_scaled_schedule(
    receiver: CallbackReceiver,
) -> None:
    scale = 0.02
    receiver.statuses.extend([500, 401, 503])
    async with started(receiver, retry_scale=scale) as emu:
        sent = await emu.send_user_message(ROBOT, from_user_id=USER, text="hi")
        assert not sent.delivered and "500" in sent.reason
        posts = await receiver.wait_for(4)
        attempts = await emu.wait_for(lambda e: attempts_once(e, sent.message_id, 4)) or []
    assert [p.status for p in posts] == [500, 401, 503, 200]
    assert all(p.body == posts[0].body for p in posts)  # same nonce, timestamp and signature
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=False):
        assert gap >= delay * scale * 0.9, gaps
    assert [(a.attempt, a.ok, a.given_up) for a in attempts] == [
        (0, False, False),
        (1, False, False),
        (2, False, False),
        (3, True, False),
    ]


async def test_a_callback_refused_six_times_is_given_up(receiver: CallbackReceiver) -> None:
    receiver.default_status = 500
    async with started(receiver, retry_scale=0.005) as emu:
        sent = await emu.send_user_message(ROBOT, from_user_id=USER, text="hi")
        attempts = await emu.wait_for(lambda e: attempts_once(e, sent.message_id, 6)) or []
        assert attempts[-1].given_up
    assert [a.attempt for a in attempts] == [0, 1, 2, 3, 4, 5]
    assert len(receiver.received) == 6


async def test_a_redelivery_calls_back_the_same_message_freshly_signed(
    emulator: ZimEmulatorThread, receiver: CallbackReceiver
) -> None:
    sent = await emulator.send_user_message(ROBOT, from_user_id=USER, text="hi")
    again = await emulator.send_user_message(ROBOT, message_id=sent.message_id)
    first, second = await receiver.wait_for(2)
    assert again.message_id == sent.message_id and again.msg_seq == sent.msg_seq
    assert first.body["msg_id"] == second.body["msg_id"] == sent.message_id
    assert second.body["msg_body"] == "hi" and signed_correctly(second.body)
    view = await emulator.chat_view(sent.chat_id)
    assert view is not None and len(view["items"]) == 1


# -- control plane ---------------------------------------------------------------------------------


async def test_the_control_plane_drives_users_and_shows_the_answer_as_edited(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    clock = FakeClock()
    async with started(receiver, registered=True, clock=clock, settle=2.0) as emu:
        base = emu.url + "/_emulator"
        async with http.get(base + "/state") as resp:
            state = await resp.json()
        assert state["apps"] == [{"robot_id": ROBOT, "registered": True, "name": ""}]
        assert state["callback"] == receiver.url()
        message = {"robot_id": ROBOT, "from_user_id": USER, "text": "hi", "callback": "send_msg"}
        async with http.post(base + "/messages", json=message) as resp:
            sent = await resp.json()
        assert sent["delivered"] is True and sent["item_id"] == sent["message_id"]
        api = ZimApi(http, emu.url)
        seq = (await api.send("Hel"))["SuccList"][0]["MsgSeq"]
        assert seq == 2  # one sequence per conversation, both directions
        await api.edit(seq, "Hello there")
        params = {"chat_id": sent["chat_id"], "since": "-1"}
        async with http.get(base + "/chat", params=params) as resp:
            view = await resp.json()
        user, answer = view["items"]
        assert (user["kind"], user["text"], user["id"]) == ("user", "hi", sent["item_id"])
        assert (answer["kind"], answer["text"], answer["sender"]) == ("card", "Hello there", ROBOT)
        assert (answer["status"], answer["done"], answer["edits"]) == ("streaming", False, 1)
        clock.now += 2.5  # nothing changed it for longer than `settle`
        params["since"] = str(view["version"])
        params["wait"] = "5"
        async with http.get(base + "/chat", params=params) as resp:
            settled = (await resp.json())["items"][1]
        assert (settled["status"], settled["done"]) == ("finished", True)
        async with http.get(base + "/cards/" + answer["id"]) as resp:
            card = await resp.json()
        assert card["texts"] == ["Hel", "Hello there"]
        async with http.get(base + "/callbacks", params={"msg_id": sent["message_id"]}) as resp:
            callbacks = await resp.json()
        assert [a["event"] for a in callbacks["attempts"]] == ["send_msg"]
        unknown = {**message, "robot_id": "@RBT#nobody"}
        async with http.post(base + "/messages", json=unknown) as resp:
            assert resp.status == 404
        async with http.post(base + "/messages", json={**message, "group": True}) as resp:
            assert resp.status == 400


async def test_faults_by_action_rate_refusals_and_downtime_through_the_control_plane(
    http: aiohttp.ClientSession,
) -> None:
    async with started(None, registered=True, qps=2) as emu:
        base = emu.url + "/_emulator"
        api = ZimApi(http, emu.url)
        fault = {"action": "SendPeerMessage", "code": 660000001, "times": 1}
        async with http.post(base + "/faults", json=fault) as resp:
            assert resp.status == 200
        assert (await api.call("QueryPeerMsg", {"FromUserId": ROBOT, "ToUserId": USER}))[
            "Code"
        ] == 0
        assert (await api.send("a"))["Code"] == 660000001
        calls = await emu.calls()
        assert (calls[-1].action, calls[-1].code, calls[-1].fault) == (
            "SendPeerMessage",
            660000001,
            True,
        )
        async with http.post(base + "/faults", json={"status": 502}) as resp:
            assert resp.status == 200
        async with http.post(emu.url + "/", params=api.query("SendPeerMessage"), json={}) as resp:
            assert resp.status == 502
        results = [(await api.send(str(i)))["Code"] for i in range(3)]
        assert results == [0, 0, 7]  # the injected answers did not count
        async with http.get(base + "/refusals") as resp:
            assert [r["action"] for r in await resp.json()] == ["SendPeerMessage"]
        await emu.downtime(0.2)
        async with http.post(emu.url + "/", params=api.query("QueryPeerMsg"), json={}) as resp:
            assert resp.status == 503
        await emu.wait_for(lambda e: not e.state.faults)


# -- channeld emulate zim --------------------------------------------------------------------------


async def test_serve_prints_a_channel_snippet_and_takes_messages(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    out = io.StringIO()
    task = asyncio.create_task(
        serve(
            "127.0.0.1:0",
            [Robot("@RBT#helper", True)],
            out=out,
            callback=receiver.url(),
            app_id="777",
        )
    )
    try:
        async with asyncio.timeout(10):
            while "control plane" not in out.getvalue():
                await asyncio.sleep(0.01)
        printed = out.getvalue()
        url = printed.split("listening on ")[1].split()[0]
        assert 'type = "zim"' in printed and "app_id = 777" in printed
        assert f'api_base = "{url}"' in printed and 'robot_id = "@RBT#helper"' in printed
        message = {"robot_id": "@RBT#helper", "from_user_id": "u1", "text": "hi"}
        async with http.post(url + "/_emulator/messages", json=message) as resp:
            assert (await resp.json())["delivered"] is True
        (post,) = await receiver.wait_for(1)
        assert post.body["appid"] == "777" and post.body["conv_id"] == "@RBT#helper"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_main_parses_its_options_and_reports_a_busy_port() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.listen, defaults.robot, defaults.app_id) == (
        "127.0.0.1:8791",
        None,
        "1234567890",
    )
    assert defaults.callback == "http://127.0.0.1:8789/hooks/zim-main"
    assert (defaults.retry_scale, defaults.url_encode, defaults.callback_mode) == (
        1.0,
        False,
        "send_msg",
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser.parse_args(
            ["--listen", f"127.0.0.1:{port}", "--robot", "@RBT#a", "--url-encode", "--qps", "5"]
        )
        assert (args.robot, args.url_encode, args.qps) == (["@RBT#a"], True, 5)
        assert await main(args) == 1
    assert await main(parser.parse_args(["--callback-mode", "nope"])) == 2


async def test_channeld_emulate_zim_serves_and_calls_back(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with emulate(
        "zim",
        "--robot",
        "@RBT#helper",
        "--registered",
        "--callback",
        receiver.url(),
        "--url-encode",
    ) as (printed, url):
        assert "robots: @RBT#helper" in printed and f'api_base = "{url}"' in printed
        answer = await ZimApi(http, url, robot="@RBT#helper").send("hi there")
        assert answer["Code"] == 0
        message = {"robot_id": "@RBT#helper", "from_user_id": "u1", "text": "a b"}
        async with http.post(url + "/_emulator/messages", json=message) as resp:
            assert (await resp.json())["delivered"] is True
        posts = await receiver.wait_for(2)
        bodies = {p.body.get("source", 0): p.body["msg_body"] for p in posts}
        assert bodies == {1: "hi there", 0: "a+b"}  # only users' messages are URL-encoded
