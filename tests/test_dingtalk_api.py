"""`DingTalkApi` against the emulator (served on the test's own loop: our client never blocks)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest

from channels.dingtalk.api import DingTalkApi
from channels.dingtalk.emulator import DingTalkEmulator
from channels.dingtalk.emulator.state import QPS_LIMIT_BODY
from common.errors import AuthError, ChannelError, PermanentError, RateLimited, TransientError

ID = "ding-api"
SECRET = "secret-api-5f2c9e"  # distinctive, so a leak into a message is detectable
TEMPLATE = "tpl.ai.schema"
TOKEN_PATH = "/v1.0/oauth2/accessToken"
STREAM_PATH = "/v1.0/card/streaming"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, endpoint: str, status: str) -> None:
        self.requests.append((endpoint, status))


@pytest.fixture
async def emulator() -> AsyncIterator[DingTalkEmulator]:
    emu = DingTalkEmulator([(ID, SECRET)], templates=[TEMPLATE], ping_interval=None)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def api(emulator: DingTalkEmulator, recorder: Recorder) -> AsyncIterator[DingTalkApi]:
    client = DingTalkApi(
        client_id=ID,
        client_secret=SECRET,
        api_base=emulator.url,
        robot_code=ID,
        timeout=2.0,
        on_request=recorder,
    )
    yield client
    await client.close()


async def _card(api: DingTalkApi, out_track_id: str = "card-1", *, group: bool = False) -> None:
    await api.create_and_deliver_card(
        template_id=TEMPLATE,
        out_track_id=out_track_id,
        card_data={"content": "", "flowStatus": "1"},
        conversation_type="2" if group else "1",
        conversation_id="cidGroup==" if group else "cidIgnoredForDirect==",
        sender_staff_id="staff-1",
        at_user_ids={"staff-1": "Alice"} if group else None,
    )


# -- tokens and the gateway ---------------------------------------------------------------------


async def test_token_is_cached_and_shared_by_concurrent_callers(
    api: DingTalkApi, emulator: DingTalkEmulator, recorder: Recorder
) -> None:
    tokens = await asyncio.gather(*(api.access_token() for _ in range(10)))
    assert len(set(tokens)) == 1
    await _card(api)
    await api.stream_card("card-1", "content", "hi")
    assert len(emulator.calls(TOKEN_PATH)) == 1
    assert recorder.requests == [
        ("oauth2.accessToken", "200"),
        ("card.createAndDeliver", "200"),
        ("card.streaming", "200"),
    ]


async def test_expired_token_is_refreshed_and_the_call_retried_once(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await _card(api)
    emulator.expire_tokens()
    await api.stream_card("card-1", "content", "after expiry")
    assert [c.status for c in emulator.calls(STREAM_PATH)] == [401, 200]
    assert len(emulator.calls(TOKEN_PATH)) == 2
    card = emulator.card("card-1")
    assert card is not None
    assert card.text == "after expiry"


async def test_token_is_refreshed_before_it_expires(emulator: DingTalkEmulator) -> None:
    now = [1000.0]
    api = DingTalkApi(
        client_id=ID,
        client_secret=SECRET,
        api_base=emulator.url,
        robot_code=ID,
        clock=lambda: now[0],
    )
    try:
        first = await api.access_token()
        now[0] += 7200 - 301
        assert await api.access_token() == first
        now[0] += 2  # inside the last five minutes of the token's life
        assert await api.access_token() != first
        assert len(emulator.calls(TOKEN_PATH)) == 2
    finally:
        await api.close()


async def test_wrong_secret_is_an_auth_error(emulator: DingTalkEmulator) -> None:
    api = DingTalkApi(
        client_id=ID, client_secret="not-the-secret", api_base=emulator.url, robot_code=ID
    )
    try:
        with pytest.raises(AuthError, match="invalidClientSecret"):
            await api.access_token()
        with pytest.raises(AuthError, match=r"gateway\.open: HTTP 401"):
            await api.open_connection([], "ua")
    finally:
        await api.close()


async def test_open_connection_returns_endpoint_and_ticket(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    subscriptions = [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    endpoint, ticket = await api.open_connection(subscriptions, "channeld-test")
    assert endpoint == emulator.url.replace("http://", "ws://") + "/connect"
    assert ticket
    body = emulator.calls("/v1.0/gateway/connections/open")[0].body
    assert body == {
        "clientId": ID,
        "clientSecret": "***",
        "subscriptions": subscriptions,
        "ua": "channeld-test",
        "localIp": "",
    }


# -- cards ----------------------------------------------------------------------------------------


async def test_card_create_deliver_stream_and_update(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await _card(api)
    body = emulator.calls("/v1.0/card/instances/createAndDeliver")[0].body
    assert body["openSpaceId"] == "dtv1.card//IM_ROBOT.staff-1"
    assert body["callbackType"] == "STREAM"
    assert body["imRobotOpenDeliverModel"] == {"spaceType": "IM_ROBOT", "robotCode": ID}
    await api.stream_card("card-1", "content", "Hel")
    await api.stream_card("card-1", "content", "Hello")
    card = emulator.card("card-1")
    assert card is not None
    assert (card.text, card.status) == ("Hello", "streaming")
    await api.stream_card("card-1", "content", "Hello world", finalize=True)
    await api.update_card("card-1", {"flowStatus": "3"})
    card = emulator.card("card-1")
    assert card is not None
    assert (card.text, card.status, card.flow_status) == ("Hello world", "finished", "3")
    assert card.card_data == {"content": "", "flowStatus": "3"}  # updated by key, not replaced
    assert [u.kind for u in card.history] == [
        "create",
        "deliver",
        "stream",
        "stream",
        "stream",
        "update",
    ]
    guids = {c.body["guid"] for c in emulator.calls(STREAM_PATH)}
    assert len(guids) == 3
    view = emulator.chat_view(emulator.state.direct_conversation_id(ID, "staff-1"))
    assert view is not None
    assert [(i["kind"], i["text"], i["status"]) for i in view["items"]] == [
        ("card", "Hello world", "finished")
    ]


async def test_group_card_and_error_state(api: DingTalkApi, emulator: DingTalkEmulator) -> None:
    await _card(api, "card-g", group=True)
    body = emulator.calls("/v1.0/card/instances/createAndDeliver")[0].body
    assert body["openSpaceId"] == "dtv1.card//IM_GROUP.cidGroup=="
    assert body["imGroupOpenDeliverModel"] == {"robotCode": ID, "atUserIds": {"staff-1": "Alice"}}
    await api.stream_card("card-g", "content", "partial", finalize=True, error=True)
    view = emulator.chat_view("cidGroup==")
    assert view is not None
    assert view["items"][0]["status"] == "failed"


async def test_failed_delivery_and_unknown_template_raise(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    emulator.fail_deliveries(error_msg="robot is not in the group")
    with pytest.raises(PermanentError, match="robot is not in the group"):
        await _card(api, "card-x", group=True)
    with pytest.raises(PermanentError, match=r"HTTP 400 param\.templateUnpublished"):
        await api.create_and_deliver_card(
            template_id="tpl.unknown",
            out_track_id="card-y",
            card_data={},
            conversation_type="1",
            conversation_id="",
            sender_staff_id="staff-1",
        )
    emulator.add_fault(STREAM_PATH, 200, body={"success": False, "code": "x", "message": "nope"})
    with pytest.raises(PermanentError, match="success false"):
        await api.stream_card("card-x", "content", "text")


# -- messages -------------------------------------------------------------------------------------


async def test_session_webhook_success_and_expiry(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    sent = await emulator.send_user_message(ID, text="hi", sender_staff_id="staff-9")
    await api.send_by_session(
        sent.session_webhook, markdown="**bold**", title="T", at_staff_id="staff-9"
    )
    # the emulator takes plain text too, as DingTalk does (channeld itself sends markdown)
    plain = {"msgtype": "text", "text": {"content": "plain"}}
    async with aiohttp.ClientSession() as http, http.post(sent.session_webhook, json=plain) as resp:
        assert (await resp.json())["errcode"] == 0
    view = emulator.chat_view(sent.conversation_id)
    assert view is not None
    assert [(i["kind"], i["msgtype"], i["text"]) for i in view["items"]] == [
        ("user", "text", "hi"),
        ("message", "markdown", "**bold**"),
        ("message", "text", "plain"),
    ]
    assert view["items"][1]["at_user_ids"] == ["staff-9"]
    emulator.expire_sessions()
    with pytest.raises(PermanentError, match="errcode 300001") as expired:
        await api.send_by_session(sent.session_webhook, markdown="too late", title="T")
    token = sent.session_webhook.rsplit("=", 1)[1]
    assert token not in str(expired.value)


async def test_batch_send_chunks_by_twenty(api: DingTalkApi, emulator: DingTalkEmulator) -> None:
    users = [f"user-{i}" for i in range(45)]
    await api.send_to_users(users, markdown="notice", title="Notice")
    batches = [c.body["userIds"] for c in emulator.calls("/v1.0/robot/oToMessages/batchSend")]
    assert [len(b) for b in batches] == [20, 20, 5]
    assert list(itertools.chain(*batches)) == users
    view = emulator.chat_view(emulator.state.direct_conversation_id(ID, "user-44"))
    assert view is not None
    assert view["items"][0]["text"] == "notice"


async def test_group_message(api: DingTalkApi, emulator: DingTalkEmulator) -> None:
    await api.send_to_group("cidTeam==", markdown="hello team", title="Hi")
    view = emulator.chat_view("cidTeam==")
    assert view is not None
    assert [(i["via"], i["title"], i["text"]) for i in view["items"]] == [
        ("robot", "Hi", "hello team")
    ]


# -- error classification --------------------------------------------------------------------------


async def test_a_rejected_token_is_retried_once_then_auth_error(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await _card(api)
    emulator.add_fault(STREAM_PATH, 401, times=1)
    await api.stream_card("card-1", "content", "ok after one retry")
    emulator.add_fault(STREAM_PATH, 401, times=2)
    with pytest.raises(AuthError, match="InvalidAuthentication"):
        await api.stream_card("card-1", "content", "refused twice")
    assert [c.status for c in emulator.calls(STREAM_PATH)] == [401, 200, 401, 401]


@pytest.mark.parametrize(
    ("status", "body", "error", "retry_after"),
    [
        (403, None, AuthError, None),  # Forbidden.AccessDenied.AccessTokenPermissionDenied
        (403, QPS_LIMIT_BODY, RateLimited, None),
        (429, None, RateLimited, 7.0),
        (500, None, TransientError, None),
        (503, None, TransientError, None),
        (400, None, PermanentError, None),
    ],
)
async def test_fault_classes(
    api: DingTalkApi,
    emulator: DingTalkEmulator,
    *,
    status: int,
    body: object,
    error: type[ChannelError],
    retry_after: float | None,
) -> None:
    await _card(api)
    emulator.add_fault(STREAM_PATH, status, body=body, retry_after=retry_after)
    with pytest.raises(error) as raised:
        await api.stream_card("card-1", "content", "x")
    assert type(raised.value) is error
    assert f"card.streaming: HTTP {status}" in str(raised.value)
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == retry_after


async def test_latency_beyond_the_timeout_is_transient(
    emulator: DingTalkEmulator, recorder: Recorder
) -> None:
    api = DingTalkApi(
        client_id=ID,
        client_secret=SECRET,
        api_base=emulator.url,
        robot_code=ID,
        timeout=0.2,
        on_request=recorder,
    )
    try:
        emulator.add_fault(TOKEN_PATH, latency=1.0)  # latency only: the answer would be fine
        with pytest.raises(TransientError, match=r"no answer within 0\.2s"):
            await api.access_token()
        assert recorder.requests == [("oauth2.accessToken", "timeout")]
    finally:
        await api.close()


async def test_unreachable_host_is_transient(emulator: DingTalkEmulator) -> None:
    closed = DingTalkEmulator(ping_interval=None)
    url = await closed.start()
    await closed.stop()
    api = DingTalkApi(client_id=ID, client_secret=SECRET, api_base=url, robot_code=ID)
    try:
        with pytest.raises(TransientError, match="ClientConnectorError"):
            await api.access_token()
    finally:
        await api.close()


async def test_session_throttle_errcode_is_rate_limited(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    sent = await emulator.send_user_message(ID, text="hi")
    emulator.add_fault(
        "/robot/sendBySession", 200, body={"errcode": 130101, "errmsg": "send too fast"}
    )
    with pytest.raises(RateLimited):
        await api.send_by_session(sent.session_webhook, markdown="x", title="T")


async def test_messages_never_carry_secret_token_ticket_or_session(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    _, ticket = await api.open_connection([], "ua")
    token = await api.access_token()
    sent = await emulator.send_user_message(ID, text="hi")
    session = sent.session_webhook.rsplit("=", 1)[1]
    # A platform that echoes credentials back must not get them into our messages.
    echo = {"code": "Echo", "message": f"{SECRET} {token} {ticket} session={session}"}
    errors: list[ChannelError] = []
    for status in (400, 401, 403, 429, 500):
        emulator.add_fault("*", status, body=echo, times=3)
        with pytest.raises(ChannelError) as raised:
            await api.stream_card("card-1", "content", "x")
        errors.append(raised.value)
        emulator.clear_faults()
    emulator.add_fault("/robot/sendBySession", 200, body={"errcode": 1, "errmsg": echo["message"]})
    with pytest.raises(PermanentError) as raised:
        await api.send_by_session(sent.session_webhook, markdown="x", title="T")
    errors.append(raised.value)
    broken = DingTalkApi(client_id=ID, client_secret=SECRET, api_base=emulator.url, robot_code=ID)
    with pytest.raises(TransientError) as raised:
        await broken.send_by_session(
            f"http://127.0.0.1:1/x?session={session}", markdown="x", title="T"
        )
    await broken.close()
    errors.append(raised.value)
    for error in errors:
        text = str(error)
        assert "dingtalk " in text
        for secret in (SECRET, token, ticket, session):
            assert secret not in text, text


async def test_close_leaves_a_borrowed_session_open(emulator: DingTalkEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        api = DingTalkApi(
            client_id=ID,
            client_secret=SECRET,
            api_base=emulator.url,
            robot_code=ID,
            session=session,
        )
        await api.access_token()
        await api.close()
        assert not session.closed


async def test_session_webhook_expires_with_its_stated_time() -> None:
    emulator = DingTalkEmulator([(ID, SECRET)], session_validity=0.0, ping_interval=None)
    await emulator.start()
    api = DingTalkApi(client_id=ID, client_secret=SECRET, api_base=emulator.url, robot_code=ID)
    try:
        sent = await emulator.send_user_message(ID, text="hi")
        with pytest.raises(PermanentError, match="300001"):
            await api.send_by_session(sent.session_webhook, markdown="too late", title="T")
    finally:
        await api.close()
        await emulator.stop()
