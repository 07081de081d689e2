"""The Easemob emulator against a plain HTTP client and a loopback callback receiver: the REST API
(tokens, users, sends, rewrites, limits), the signed pre-send and post-send callbacks, echoes of
the bot's sends, the control plane and `channeld emulate easemob`."""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.easemob.emulator import EasemobEmulator, add_arguments, main, security, serve
from channels.easemob.emulator.state import BotCard
from tests.easemob_support import (
    APP,
    APPKEY,
    BOT,
    CLIENT_ID,
    CLIENT_SECRET,
    ORG,
    CallbackReceiver,
    PresendAnswer,
    signed,
    started,
)

HAN = "汉"  # three bytes of UTF-8


class Rest:
    """A raw client of the emulator's REST API."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = f"{base}/{ORG}/{APP}"
        self.token = ""

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def login(self, **extra: Any) -> dict[str, Any]:
        body = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            **extra,
        }
        status, answer = await self.call("POST", "/token", body)
        assert status == 200, answer
        self.token = answer["access_token"]
        return dict(answer)

    async def send(self, to: str, text: str, **fields: Any) -> tuple[int, Any]:
        body = {"from": BOT, "to": [to], "type": "txt", "body": {"msg": text}, **fields}
        return await self.call("POST", "/messages/users", body)

    async def rewrite(self, msg_id: str, text: str) -> tuple[int, Any]:
        body = {"user": BOT, "new_msg": {"type": "txt", "msg": text}}
        return await self.call("PUT", f"/messages/rewrite/{msg_id}", body)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver() as hooks:
        yield hooks


# -- signatures -----------------------------------------------------------------------------------


def test_security_is_md5_of_call_id_secret_and_timestamp() -> None:
    # expected values computed with coreutils md5sum, independently of Python
    call_id = "org#app_0990a64f-5e0c-4b6e-8696-cf3b48b20e7e"
    assert security(call_id, "emulator-secret", 1600060847294) == (
        "856613d02b25f9a6e0ae6e34baa0d307"
    )
    assert security("org#app_8924312242322", "s3cr3t", 1600060847294) == (
        "3d3bdbf8ddb4971db262373c87411005"
    )


async def test_a_message_to_the_bot_fires_signed_pre_send_then_post_send(
    receiver: CallbackReceiver,
) -> None:
    async with started(receiver) as emu:
        sent = await emu.send_user_message(BOT, from_user="u1", text="hello")
        pre, post = await receiver.wait_for(2)
    assert sent.delivered and sent.verdict == "pass" and sent.postsend_ok
    assert pre.presend and not post.presend
    assert pre.body["callId"].startswith(f"{APPKEY}_") and pre.body["callId"] != post.body["callId"]
    assert post.body["callId"] == f"{APPKEY}_{sent.msg_id}"
    for hook in (pre, post):
        assert signed(hook.body)
        assert hook.headers["Content-Type"] == "application/json"
        assert hook.path == "/hooks/em-main"
        fields = hook.body
        assert (fields["chat_type"], fields["from"], fields["to"]) == ("chat", "u1", BOT)
        assert fields["msg_id"] == sent.msg_id and sent.msg_id.isdigit()
        assert fields["timestamp"] == pre.body["timestamp"]  # when the server took the message
    assert "eventType" not in pre.body and "group_id" not in pre.body
    # documented shapes: pre-send flat, post-send with bodies
    assert pre.body["payload"] == {"msg": "hello", "type": "txt"}
    assert post.body["payload"] == {"ext": {}, "bodies": [{"msg": "hello", "type": "txt"}]}
    assert post.body["eventType"] == "chat" and post.body["content_type"] == "chat:user:text"
    assert (post.body["appkey"], post.body["securityVersion"]) == (APPKEY, "1.0.0")


async def test_a_wrong_secret_or_a_skewed_clock_signs_as_asked(
    receiver: CallbackReceiver,
) -> None:
    async with started(receiver, callbacks="post") as emu:
        await emu.send_user_message(BOT, text="a", secret="not-the-secret")
        await emu.send_user_message(BOT, text="b", skew_seconds=-900)
        wrong, skewed = await receiver.wait_for(2)
    assert not signed(wrong.body) and signed(wrong.body, "not-the-secret")
    assert signed(skewed.body)  # signed right, with a timestamp 15 minutes old
    assert wrong.body["timestamp"] - skewed.body["timestamp"] > 890_000


@pytest.mark.parametrize(
    ("shape", "pre_payload", "post_payload"),
    [
        ("flat", {"msg": "hi", "type": "txt"}, {"msg": "hi", "type": "txt"}),
        ("bodies", {"ext": {}, "bodies": [{"msg": "hi", "type": "txt"}]}, None),
    ],
)
async def test_the_payload_shape_is_an_option(
    receiver: CallbackReceiver, shape: str, pre_payload: Any, post_payload: Any
) -> None:
    async with started(receiver) as emu:
        await emu.send_user_message(BOT, text="hi", shape=shape)
        pre, post = await receiver.wait_for(2)
    assert pre.body["payload"] == pre_payload
    assert post.body["payload"] == (post_payload or pre_payload)


async def test_callbacks_option_sends_either_or_both_and_groups_carry_group_id(
    receiver: CallbackReceiver,
) -> None:
    async with started(receiver, callbacks="pre") as emu:
        await emu.send_user_message(BOT, text="only pre")
        await emu.send_user_message(BOT, text="only post", callbacks="post")
        await emu.send_user_message(BOT, from_user="u1", to_user="u2", text="not for the bot")
        sent = await emu.send_user_message(BOT, text="in a group", group_id="g1", callbacks="both")
        hooks = await receiver.wait_for(5)
    assert [h.presend for h in hooks] == [True, False, True, True, False]
    assert (hooks[2].body["from"], hooks[2].body["to"]) == ("u1", "u2")
    group = hooks[4].body
    assert (group["chat_type"], group["group_id"], group["to"]) == ("groupchat", "g1", "g1")
    assert group["content_type"] == "chat:group:text" and sent.chat_id == "g1"


# -- pre-send verdicts and timing -----------------------------------------------------------------


async def test_a_verdict_in_time_decides_and_its_timing_is_recorded() -> None:
    block = PresendAnswer(body={"valid": False, "code": "HX:10001"})
    async with CallbackReceiver([PresendAnswer(), block]) as hooks, started(hooks) as emu:
        passed = await emu.send_user_message(BOT, text="fine")
        blocked = await emu.send_user_message(BOT, text="not fine")
        calls = await emu.presends()
        view = await emu.chat_view(blocked.chat_id)
        assert len(await hooks.wait_for(3)) == 3
    assert passed.delivered and passed.presend_in_time and passed.presend_after is not None
    assert not blocked.delivered and blocked.verdict == "block" and blocked.postsend_ok is None
    assert "HX:10001" in blocked.reason
    assert [(c.verdict, c.in_time, c.by_default) for c in calls] == [
        ("pass", True, False),
        ("block", True, False),
    ]
    assert all(c.answered_after is not None and c.answered_after < c.wait for c in calls)
    assert [h.presend for h in hooks.received] == [True, False, True]  # no post-send if blocked
    assert view is not None
    assert [i.get("blocked", "") for i in view["items"]] == ["", "HX:10001"]


@pytest.mark.parametrize(("default_pass", "verdict"), [(True, "pass"), (False, "block")])
async def test_a_late_verdict_leaves_the_default_policy_and_its_delay_is_recorded(
    receiver: CallbackReceiver, default_pass: bool, verdict: str
) -> None:
    gate = asyncio.Event()
    receiver.hold(gate, body={"valid": False})
    async with started(
        receiver, presend_wait=0.05, presend_default_pass=default_pass, callbacks="pre"
    ) as emu:
        sent = await emu.send_user_message(BOT, text="slow")
        (decided,) = await emu.presends()
        gate.set()
        late = await emu.wait_for(
            lambda e: [p for p in e.presends() if p.answered_after is not None]
        )
    assert (sent.verdict, sent.presend_in_time, sent.presend_after) == (verdict, False, None)
    assert (decided.verdict, decided.by_default, decided.answered_after) == (verdict, True, None)
    assert not sent.delivered
    (answered,) = late
    assert answered.verdict == verdict and not answered.in_time  # the late "false" changed nothing
    assert answered.answered_after is not None and answered.answered_after >= 0.05
    assert answered.answer == {"valid": False} and answered.status == 200


async def test_an_answer_without_valid_or_not_200_falls_to_the_default_policy() -> None:
    answers = [PresendAnswer(body={"ok": True}), PresendAnswer(status=500)]
    async with (
        CallbackReceiver(answers) as hooks,
        started(hooks, presend_default_pass=False, callbacks="pre") as emu,
    ):
        first = await emu.send_user_message(BOT, text="a")
        second = await emu.send_user_message(BOT, text="b")
    assert (first.verdict, second.verdict) == ("block", "block")
    assert first.presend_in_time and second.presend_in_time


# -- post-send retries ----------------------------------------------------------------------------


async def test_post_send_is_retried_once_immediately_then_dropped() -> None:
    async with (
        CallbackReceiver(post_statuses=[500, 200, 503, 502]) as hooks,
        started(hooks, callbacks="post") as emu,
    ):
        retried = await emu.send_user_message(BOT, text="one")
        dropped = await emu.send_user_message(BOT, text="two")
        attempts = await emu.postsends()
    assert retried.delivered and retried.postsend_ok
    assert not dropped.delivered and dropped.postsend_ok is False
    assert [(a.msg_id, a.attempt, a.status, a.ok) for a in attempts] == [
        (retried.msg_id, 1, 500, False),
        (retried.msg_id, 2, 200, True),
        (dropped.msg_id, 1, 503, False),
        (dropped.msg_id, 2, 502, False),
    ]
    assert attempts[0].call_id == attempts[1].call_id
    assert [h.body["callId"] for h in hooks.received[:2]] == [f"{APPKEY}_{retried.msg_id}"] * 2


async def test_a_redelivery_repeats_the_same_message(receiver: CallbackReceiver) -> None:
    async with started(receiver) as emu:
        first = await emu.send_user_message(BOT, text="again")
        again = await emu.send_user_message(BOT, message_id=first.msg_id, callbacks="post")
        view = await emu.chat_view(first.chat_id)
        hooks = await receiver.wait_for(3)
    assert again.msg_id == first.msg_id and again.delivered
    assert hooks[1].body == hooks[2].body  # the same post-send callback, byte for byte
    assert view is not None and len(view["items"]) == 1


async def test_no_callback_url_sends_nothing() -> None:
    async with started(None) as emu:
        sent = await emu.send_user_message(BOT, text="hi")
        assert await emu.presends() == [] and await emu.postsends() == []
    assert not sent.delivered and "no callback URL" in sent.reason


# -- tokens ---------------------------------------------------------------------------------------


async def test_tokens_are_granted_recorded_and_checked(http: aiohttp.ClientSession) -> None:
    async with started(None, token_ttl=3600) as emu:
        rest = Rest(http, emu.url)
        status, _ = await rest.call("GET", f"/users/{BOT}")
        assert status == 401
        granted = await rest.login(ttl=100)
        assert granted["expires_in"] == 100 and granted["access_token"].startswith("YWMt")
        assert (await rest.login(ttl="0"))["expires_in"] == 3600  # "permanent" is capped
        wrong = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "x"}
        status, refused = await rest.call("POST", "/token", wrong)
        assert (status, refused["error"]) == (400, "invalid_grant")
        requests = await emu.token_requests()
        (call, *_) = await emu.calls(f"/{ORG}/{APP}/token")
    assert [(r.client_id, r.granted, r.expires_in) for r in requests] == [
        (CLIENT_ID, True, 100),
        (CLIENT_ID, True, 3600),
        (CLIENT_ID, False, 0),
    ]
    assert call.body["client_secret"] == "***"


async def test_an_expired_or_unknown_token_is_refused_with_401(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        status, _ = await rest.call("GET", f"/users/{BOT}")
        assert status == 404  # authorized: the bot is not registered yet
        assert await emu.expire_tokens() == 1
        status, expired = await rest.call("GET", f"/users/{BOT}")
        assert status == 401 and expired["error"] == "unauthorized"
        assert expired["error_description"] == "Unable to authenticate due to expired access token"
        assert expired["exception"] == "EasemobSecurityException"
        rest.token = "YWMtnever-granted"
        status, unknown = await rest.call("POST", "/messages/users", {})
        assert (status, unknown["error"]) == (401, "auth_bad_access_token")


async def test_a_token_lives_at_most_token_ttl_seconds(http: aiohttp.ClientSession) -> None:
    async with started(None, token_ttl=1) as emu:
        rest = Rest(http, emu.url)
        token = (await rest.login())["access_token"]
        await emu.wait_for(lambda e: e.state.app_for_token(token) is None, timeout=5)
        status, answer = await rest.send("u1", "late")
    assert status == 401 and "expired" in answer["error_description"]


async def test_a_wrong_org_or_app_is_not_found(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu, http.post(f"{emu.url}/{ORG}/other/token", json={}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "organization_application_not_found"


# -- users ----------------------------------------------------------------------------------------


async def test_users_are_created_once_and_looked_up(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        new = [{"username": BOT, "password": "pw"}]
        status, created = await rest.call("POST", "/users", new)
        assert status == 200 and created["entities"][0]["username"] == BOT
        assert created["action"] == "post" and created["applicationName"] == APP
        status, duplicate = await rest.call("POST", "/users", new)
        assert (status, duplicate["error"]) == (400, "duplicate_unique_property_exists")
        assert "DuplicateUniquePropertyExistsException" in duplicate["exception"]
        status, found = await rest.call("GET", f"/users/{BOT}")
        assert (status, found["entities"][0]["username"], found["count"]) == (200, BOT, 1)
        status, illegal = await rest.call("POST", "/users", [{"username": "a b", "password": "p"}])
        assert (status, illegal["error"]) == (400, "illegal_argument")
        status, missing = await rest.call("GET", "/users/nobody")
        assert (status, missing["error"]) == (404, "service_resource_not_found")
        calls = await emu.calls(f"/{ORG}/{APP}/users", "POST")
    assert calls[0].body == [{"username": BOT, "password": "***"}]


# -- sends, echoes, limits ------------------------------------------------------------------------


async def test_a_rest_send_answers_the_ids_and_is_echoed_from_the_bot(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with started(receiver) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        status, answer = await rest.send("u1", "an answer")
        assert status == 200, answer
        msg_id = answer["data"]["u1"]
        (echo,) = await receiver.wait_for(1)
        view = await emu.chat_view(f"{BOT}|u1")
    assert msg_id.isdigit() and len(msg_id) >= 18
    assert (answer["path"], answer["action"], answer["organization"]) == (
        "/messages/users",
        "post",
        ORG,
    )
    assert not echo.presend and signed(echo.body)  # REST sends fire no pre-send callback
    assert (echo.body["from"], echo.body["to"], echo.body["msg_id"]) == (BOT, "u1", msg_id)
    assert echo.body["payload"]["bodies"] == [{"msg": "an answer", "type": "txt"}]
    assert view is not None
    assert [(i["kind"], i["sender"], i["text"]) for i in view["items"]] == [
        ("message", BOT, "an answer")
    ]


async def test_the_5_kb_limit_counts_bytes_not_characters(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        fits = HAN * 1666 + "ab"  # 4,998 + 2 = 5,000 bytes in 1,668 characters
        status, _ = await rest.send("u1", fits)
        assert status == 200
        status, error = await rest.send("u1", HAN * 1667)  # 5,001 bytes, 1,667 characters
        assert status == 400
        assert (error["error"], error["error_code"], error["error_description"]) == (
            "message_send_error",
            14007,
            "message is too large",
        )
        assert error["exception"] == "MessageSendException"
        status, _ = await rest.send("u1", "x" * 4990, ext={"k": "vv"})  # ext counts: 4,990 + 10
        assert status == 200
        status, _ = await rest.send("u1", "x" * 4991, ext={"k": "vv"})
        assert status == 400


async def test_sends_over_the_rate_limit_get_429(http: aiohttp.ClientSession) -> None:
    async with started(None, rate_limit=2) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        statuses = [(await rest.send("u1", f"m{i}"))[0] for i in range(3)]
        status, limited = await rest.send("u1", "again")
    assert statuses == [200, 200, 429]
    assert (status, limited["error"]) == (429, "reach_limit")
    assert limited["error_description"] == "This request has reached api limit"


async def test_injected_faults_answer_with_easemob_errors(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        await emu.add_fault(f"/{ORG}/{APP}/messages/*", 429, retry_after=2)
        async with http.post(
            f"{rest.base}/messages/users",
            json={"from": BOT, "to": ["u1"], "type": "txt", "body": {"msg": "x"}},
            headers={"Authorization": f"Bearer {rest.token}"},
        ) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "2")
            assert (await resp.json())["error"] == "reach_limit"
        status, _ = await rest.send("u1", "x")
        assert status == 200


# -- rewrites -------------------------------------------------------------------------------------


async def test_rewriting_is_refused_unless_enabled(http: aiohttp.ClientSession) -> None:
    async with started(None) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        _, sent = await rest.send("u1", "first")
        status, refused = await rest.rewrite(sent["data"]["u1"], "second")
        message = await emu.message(sent["data"]["u1"])
    assert status == 403 and refused["exception"] == "EditFeatureNotEnabledException"
    assert message is not None and message["body"]["msg"] == "first"


async def test_ten_rewrites_a_message_then_the_cap(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with started(receiver, rewrite=True, settle=60) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        _, sent = await rest.send("u1", "a")
        msg_id = sent["data"]["u1"]
        view = await emu.chat_view(f"{BOT}|u1")
        assert view is not None and view["items"][0]["status"] == "streaming"
        texts = ["a" * n for n in range(2, 12)]
        for text in texts:
            status, answer = await rest.rewrite(msg_id, text)
            assert (status, answer["data"], answer["action"]) == (200, "success", "put")
        status, capped = await rest.rewrite(msg_id, "too many")
        hooks = await receiver.wait_for(11)
        card = await emu.card(msg_id)
        view = await emu.chat_view(f"{BOT}|u1")
    assert status == 403 and capped["exception"] == "EditLimitExceededException"
    assert card is not None and (card.edits, card.text, card.done) == (10, texts[-1], True)
    assert view is not None
    assert [(i["kind"], i["text"], i["edits"], i["done"]) for i in view["items"]] == [
        ("card", texts[-1], 10, True)
    ]
    edits = [h.body for h in hooks[1:]]
    assert all(e["chat_type"] == "edit" and signed(e) for e in edits)
    assert {e["payload"]["edit_message_id"] for e in edits} == {msg_id}
    assert [e["payload"]["meta"]["edit_msg"]["count"] for e in edits] == list(range(1, 11))
    assert edits[-1]["payload"]["bodies"] == [{"type": "txt", "msg": texts[-1]}]
    assert len({e["msg_id"] for e in edits} | {msg_id}) == 11  # every event has its own id


async def test_a_rewritten_message_settles_when_rewrites_stop(
    http: aiohttp.ClientSession,
) -> None:
    async with started(None, rewrite=True, settle=0.05) as emu:
        rest = Rest(http, emu.url)
        await rest.login()
        _, sent = await rest.send("u1", "grow")
        await rest.rewrite(sent["data"]["u1"], "grown")
        card = await emu.wait_for(lambda e: _settled(e.card(sent["data"]["u1"])))
        status, unknown = await rest.rewrite("123", "x")
        status_bad, bad = await rest.rewrite("abc", "x")
    assert card is not None and card.texts == ["grow", "grown"] and card.status == "finished"
    assert (status, unknown["exception"]) == (404, "MessageUnavailableException")
    assert (status_bad, bad["exception"]) == (400, "InvalidMessageIdException")


def _settled(card: BotCard | None) -> BotCard | None:
    return card if card is not None and card.done else None


# -- control plane --------------------------------------------------------------------------------


async def test_the_control_plane_drives_users_and_shows_chats_timings_and_tokens(
    http: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with started(receiver) as emu:
        base = f"{emu.url}/_emulator"
        async with http.get(f"{base}/state") as resp:
            state = await resp.json()
        assert state["apps"] == [{"bot_user": BOT}] and state["appkey"] == APPKEY
        message = {"bot_user": BOT, "from_user": "u9", "text": "hi", "shape": "bodies"}
        async with http.post(f"{base}/messages", json=message) as resp:
            sent = await resp.json()
        assert sent["delivered"] and sent["item_id"] == sent["msg_id"]
        assert sent["chat_id"] == f"{BOT}|u9"
        rest = Rest(http, emu.url)
        await rest.login()
        await rest.send("u9", "hello u9")
        async with http.get(
            f"{base}/chat", params={"chat_id": sent["chat_id"], "since": "-1"}
        ) as resp:
            view = await resp.json()
        async with http.get(f"{base}/presend") as resp:
            (timing,) = await resp.json()
        async with http.get(f"{base}/tokens") as resp:
            (token,) = await resp.json()
        async with http.post(f"{base}/messages", json={**message, "colour": "red"}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/callback", json={"rewrite": True}) as resp:
            assert (await resp.json())["rewrite"] is True
    assert [(i["kind"], i["sender"], i["text"]) for i in view["items"]] == [
        ("user", "u9", "hi"),
        ("message", BOT, "hello u9"),
    ]
    assert timing["in_time"] and timing["verdict"] == "pass" and timing["answered_after"] >= 0
    assert token["granted"] and token["client_id"] == CLIENT_ID


# -- channeld emulate easemob ---------------------------------------------------------------------


class _Printed(io.StringIO):
    """What `serve` prints; `done` is set once it printed the control plane's address."""

    def __init__(self) -> None:
        super().__init__()
        self.done = asyncio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "control plane" in self.getvalue():
            self.done.set()
        return written


async def test_serve_prints_a_channel_snippet(receiver: CallbackReceiver) -> None:
    out = _Printed()
    task = asyncio.create_task(
        serve("127.0.0.1:0", None, out=out, callback=receiver.url(), rewrite=True)
    )
    try:
        async with asyncio.timeout(5):
            await out.done.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    printed = out.getvalue()
    url = printed.split("listening on ")[1].split()[0]
    assert f'api_base = "{url}"' in printed and 'type = "easemob"' in printed
    assert 'bot_user = "aibot"' in printed and 'stream = "edit"' in printed
    assert receiver.url() in printed


async def test_main_parses_its_options_and_reports_a_busy_port() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.listen, defaults.bot_user, defaults.presend_wait_ms) == (
        "127.0.0.1:8792",
        None,
        200,
    )
    assert defaults.callback == "http://127.0.0.1:8789/hooks/em-main" and not defaults.rewrite
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parser.parse_args(
            ["--listen", f"127.0.0.1:{port}", "--bot-user", "b1", "--rewrite", "--token-ttl", "5"]
        )
        assert [b.bot_user for b in args.bot_user] == ["b1"]
        assert args.rewrite and args.token_ttl == 5
        assert await main(args) == 1


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="callbacks"):
        EasemobEmulator(callbacks="sometimes")
