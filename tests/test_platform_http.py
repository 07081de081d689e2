"""`channels.http.PlatformApi`: token caching, request counting and scrubbing, against a real
aiohttp server on port 0 that hands out tokens and checks them."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.http import REFRESH_FLOOR, Answer, PlatformApi
from common.errors import PermanentError, TransientError

SECRET = "example-secret-4b1d"
LIFETIME = 600.0
MARGIN = 60.0


class TokenServer:
    """A token endpoint and a protected one; it counts requests and can fail, stall or revoke."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.data_requests = 0
        self.valid: set[str] = set()
        self.lifetime = LIFETIME
        self.failures = 0  # token requests still to answer 503, echoing the secret
        self.refuse_all = False  # the protected endpoint refuses every token
        self.gate = asyncio.Event()  # token answers wait for it
        self.gate.set()
        self.token_asked = asyncio.Event()
        self.stopping = asyncio.Event()  # ends stalled answers
        self.stalled = False  # a request reached the stalling endpoint
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/data", self._data)
        app.router.add_get("/stall", self._stall)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self.token_asked.set()
        body = await request.json()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            return web.json_response({"error": f"busy, and {body['secret']} is fine"}, status=503)
        token = f"tok-{self.token_requests}"
        self.valid.add(token)
        return web.json_response({"token": token, "lifetime": self.lifetime})

    async def _data(self, request: web.Request) -> web.Response:
        self.data_requests += 1
        token = request.headers.get("X-Token", "")
        if token not in self.valid or self.refuse_all:
            return web.json_response({"error": "stale token"}, status=401)
        return web.json_response({"token": token})

    async def _stall(self, _request: web.Request) -> web.Response:
        self.stalled = True
        await self.stopping.wait()
        return web.json_response({})


class ExampleApi(PlatformApi):
    """The least a platform adds to the shared half."""

    platform = "example"
    token_margin = MARGIN

    async def _fetch_token(self) -> tuple[str, float]:
        name = "token"
        body = {"id": self.app_id, "secret": self._secret}
        answer = await self._send(name, "POST", self._base + "/token", body=body)
        if not answer.ok:
            error = str(answer.get("error") or "")
            raise TransientError(self._status_text(name, answer.status, "", error))
        return self._token_from(name, answer, "token", "lifetime")

    def _token_headers(self, token: str) -> dict[str, str]:
        return {"X-Token": token}

    def _token_rejected(self, answer: Answer) -> bool:
        return answer.status == 401

    async def data(self) -> Answer:
        return await self._send("data", "GET", self._base + "/data", authorized=True)

    async def stall(self) -> Answer:
        return await self._send("stall", "GET", self._base + "/stall")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[TokenServer]:
    server = TokenServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def requests() -> list[tuple[str, str]]:
    return []


@pytest.fixture
async def api(
    server: TokenServer, clock: Clock, requests: list[tuple[str, str]]
) -> AsyncIterator[ExampleApi]:
    client = ExampleApi(
        app_id="app",
        app_secret=SECRET,
        base_url=server.url + "/",
        timeout=2.0,
        on_request=lambda name, status: requests.append((name, status)),
        clock=clock,
    )
    yield client
    await client.close()


async def test_concurrent_callers_share_one_refresh(
    api: ExampleApi, server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    server.gate.clear()
    calls = asyncio.gather(*(api.data() for _ in range(20)))
    async with asyncio.timeout(5):
        await server.token_asked.wait()  # the first caller is fetching; the others queue behind
    server.gate.set()
    answers = await calls
    assert server.token_requests == 1
    assert {answer.get("token") for answer in answers} == {"tok-1"}
    assert requests.count(("token", "200")) == 1
    assert requests.count(("data", "200")) == 20


async def test_a_token_is_kept_until_the_margin_before_expiry(
    api: ExampleApi, server: TokenServer, clock: Clock
) -> None:
    assert (await api.data()).get("token") == "tok-1"
    clock.now += LIFETIME - MARGIN - 1
    assert (await api.data()).get("token") == "tok-1"
    assert server.token_requests == 1
    clock.now += 2  # inside the margin: refreshed before the platform would refuse it
    assert (await api.data()).get("token") == "tok-2"
    assert server.token_requests == 2


async def test_a_short_lived_token_keeps_half_its_life(
    api: ExampleApi, server: TokenServer, clock: Clock
) -> None:
    server.lifetime = 40.0  # shorter than the margin
    await api.data()
    clock.now += 19
    await api.data()
    assert server.token_requests == 1
    clock.now += 2
    await api.data()
    assert server.token_requests == 2


async def test_a_failed_refresh_is_not_cached(
    api: ExampleApi, server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    server.failures = 1
    with pytest.raises(TransientError, match="example token: HTTP 503") as caught:
        await api.data()
    assert SECRET not in str(caught.value)  # the server echoed it; the error masks it
    assert server.data_requests == 0
    answer = await api.data()  # asks again at once: nothing of the failure was kept
    assert answer.get("token") == "tok-2"
    assert requests == [("token", "503"), ("token", "200"), ("data", "200")]


async def test_a_rejected_token_is_refreshed_and_the_call_made_again_once(
    api: ExampleApi, server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    await api.data()
    server.valid.clear()  # the platform revoked tok-1 before its stated expiry
    answer = await api.data()
    assert answer.status == 200 and answer.get("token") == "tok-2"
    assert requests[2:] == [("data", "401"), ("token", "200"), ("data", "200")]
    server.refuse_all = True  # from now on every token is refused
    refused = await api.data()
    assert refused.status == 401
    assert requests[5:] == [("data", "401"), ("token", "200"), ("data", "401")]  # once, no loop


async def test_a_replacement_token_refused_again_is_not_replaced_at_each_call(
    api: ExampleApi, server: TokenServer, clock: Clock, requests: list[tuple[str, str]]
) -> None:
    """A credential problem, not a stale token: every message would ask for one otherwise."""
    server.refuse_all = True
    for _ in range(5):
        assert (await api.data()).status == 401
        clock.now += 1
    assert server.token_requests == 2  # the first, and one in place of the rejected one
    assert requests == [("token", "200"), ("data", "401"), ("token", "200")] + [("data", "401")] * 5
    clock.now += REFRESH_FLOOR  # later, a rejection may be a revoked token again
    assert (await api.data()).status == 401
    assert server.token_requests == 3


async def test_fetched_tokens_are_scrubbed_like_the_secret(api: ExampleApi) -> None:
    token = (await api.data()).get("token")
    assert isinstance(token, str)
    text = api.scrub(f"echo {token} and {SECRET} and ?ticket=t-1")
    assert token not in text and SECRET not in text and "t-1" not in text


async def test_no_answer_within_the_timeout_is_transient_and_counted(
    server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    api = ExampleApi(
        app_id="app",
        app_secret=SECRET,
        base_url=server.url,
        timeout=0.2,
        on_request=lambda name, status: requests.append((name, status)),
    )
    try:
        with pytest.raises(TransientError, match=r"example stall: no answer within 0\.2s"):
            await api.stall()
    finally:
        await api.close()
    assert requests == [("stall", "timeout")]


async def test_an_unreachable_host_is_transient_and_counted(
    server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    await server.stop()  # nothing listens on the port any more
    api = ExampleApi(
        app_id="app",
        app_secret=SECRET,
        base_url=server.url,
        on_request=lambda name, status: requests.append((name, status)),
    )
    try:
        with pytest.raises(TransientError, match="example token: ClientConnectorError"):
            await api.data()
    finally:
        await api.close()
    assert requests == [("token", "error")]


async def test_close_leaves_a_borrowed_session_open(server: TokenServer) -> None:
    async with aiohttp.ClientSession() as session:
        api = ExampleApi(app_id="app", app_secret=SECRET, base_url=server.url, session=session)
        await api.data()
        await api.close()
        assert not session.closed
    owned = ExampleApi(app_id="app", app_secret=SECRET, base_url=server.url)
    await owned.data()
    await owned.close()
    await owned.close()  # idempotent


async def test_a_closed_client_refuses_calls_and_opens_no_session(
    server: TokenServer, requests: list[tuple[str, str]]
) -> None:
    """A call after close() (an answer still streaming when its channel stopped) is refused with
    a permanent error, so the reply gives up at once, and no new session is left to leak."""
    api = ExampleApi(
        app_id="app",
        app_secret=SECRET,
        base_url=server.url,
        on_request=lambda name, status: requests.append((name, status)),
    )
    await api.data()
    await api.close()
    opened: list[aiohttp.ClientSession] = []
    real_init = aiohttp.ClientSession.__init__

    def spy(session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        opened.append(session)
        real_init(session, *args, **kwargs)

    with (
        warnings.catch_warnings(record=True) as caught,
        pytest.MonkeyPatch.context() as patch,
    ):
        warnings.simplefilter("always")
        patch.setattr(aiohttp.ClientSession, "__init__", spy)
        for call in (api.data, api.stall):
            with pytest.raises(PermanentError, match=r"^example (data|stall): client closed$"):
                await call()
        gc.collect()  # an abandoned session warns when collected
    assert opened == []
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert requests == [("token", "200"), ("data", "200")]  # nothing after close() was sent
    assert (server.token_requests, server.data_requests) == (1, 1)


async def test_a_call_cut_short_by_close_is_refused_like_one_made_after(
    server: TokenServer,
) -> None:
    """close() during a call: the call ends with the same permanent error, not a transient one
    that would be retried against a client that can never answer again."""
    api = ExampleApi(app_id="app", app_secret=SECRET, base_url=server.url, timeout=5.0)
    call = asyncio.ensure_future(api.stall())
    async with asyncio.timeout(5):
        while not server.stalled:
            await asyncio.sleep(0.01)
    await api.close()
    with pytest.raises(PermanentError, match=r"^example stall: client closed$"):
        await call


async def test_a_redirect_is_not_followed_and_nothing_reaches_the_other_host(
    clock: Clock, requests: list[tuple[str, str]]
) -> None:
    """A 307 would carry the token request's body (the secret) to a host nobody configured."""
    elsewhere = TokenServer()
    await elsewhere.start()
    redirector = web.Application()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(elsewhere.url + request.path)

    redirector.router.add_route("*", "/{tail:.*}", moved)
    runner = web.AppRunner(redirector, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = ExampleApi(
        app_id="app",
        app_secret=SECRET,
        base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/",
        timeout=2.0,
        on_request=lambda name, status: requests.append((name, status)),
        clock=clock,
    )
    try:
        with pytest.raises(TransientError):
            await client.data()  # the token fetch answers 307: classified, not followed
        assert elsewhere.token_requests == 0 and elsewhere.data_requests == 0
        assert requests == [("token", "307")]
    finally:
        await client.close()
        await runner.cleanup()
        await elsewhere.stop()
