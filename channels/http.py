"""What every platform's OpenAPI client shares: one aiohttp session bounded by a timeout, every
request counted (`channeld_platform_requests_total`), an access token cached until shortly before
it expires, and error texts that never carry a credential.

A platform's `api.py` extends `PlatformApi` with what only it knows: how its token is asked for
and sent, which answer means the token went stale, and how a failed answer is classified.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

import aiohttp

from common.errors import ChannelError, PermanentError, TransientError
from common.redact import Scrubber

log = logging.getLogger(__name__)

MAX_PLATFORM_MESSAGE = 300  # characters of a platform's own error message kept in ours
# (endpoint name, HTTP status or "timeout" / "error"): the channel's request counter
RequestCounter = Callable[[str, str], None]


class HttpOptions(TypedDict, total=False):
    """What every platform client takes besides its credentials and base URL."""

    timeout: float  # seconds for one whole exchange
    session: aiohttp.ClientSession | None  # borrowed, left open by close(); else one is created
    on_request: RequestCounter | None
    clock: Callable[[], float]  # for token expiry


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP exchange: its status, its decoded JSON (None when not JSON), its headers."""

    status: int
    payload: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def get(self, key: str) -> Any:
        """A top-level field of a JSON object; None when absent or the answer is no object."""
        return self.payload.get(key) if isinstance(self.payload, dict) else None


# a token fetched in place of a rejected one and rejected in turn within this many seconds is
# not replaced again (see TokenCache.invalidate)
REFRESH_FLOOR = 60.0


class TokenCache:
    """A token kept until `margin` before it expires; concurrent callers share one refresh.

    A failed refresh leaves nothing behind: the next caller asks again.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        margin: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch  # a new token and its lifetime in seconds
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._deadline = 0.0
        self._fetched_at = 0.0
        self._rejected = False  # the last token was rejected: the next fetch replaces it
        self._replaces_rejected = False  # the current token was fetched in place of a rejected one
        self._lock = asyncio.Lock()

    def _valid(self) -> str | None:
        return self._token if self._clock() < self._deadline else None

    async def get(self) -> str:
        """A valid token, fetched first when there is none or it is about to expire."""
        if (token := self._valid()) is not None:
            return token
        async with self._lock:
            # whoever waited here finds the token fetched by the caller before it
            if (token := self._valid()) is not None:
                return token
            token, lifetime = await self._fetch()
            # Short-lived tokens (tests, odd tenants) keep half their life rather than none.
            self._token = token
            self._fetched_at = self._clock()
            self._replaces_rejected, self._rejected = self._rejected, False
            self._deadline = self._fetched_at + lifetime - min(self._margin, lifetime / 2)
            return token

    def accepted(self, token: str) -> None:
        """The platform took `token`: a later rejection of it is a stale token again."""
        if self._token == token:
            self._replaces_rejected = False

    def invalidate(self, token: str) -> bool:
        """Forgets `token`, which the platform rejected, unless a fresh one replaced it already;
        whether asking with a newer token may help.

        A token fetched because the one before was rejected, and rejected in turn within
        `REFRESH_FLOOR` seconds, is kept: that is a credential problem, not a stale token, and
        fetching again at the rate messages arrive is what gets an account banned (Easemob).
        """
        if self._token != token:
            return True  # a newer token is there already
        if self._replaces_rejected and self._clock() - self._fetched_at < REFRESH_FLOOR:
            return False
        self._token = None
        self._deadline = 0.0
        self._rejected = True
        return True


class PlatformApi(abc.ABC):
    """The platform-neutral half of one app's OpenAPI client; a channel shares one for all calls."""

    platform: ClassVar[str]  # names the platform in error texts and the User-Agent
    token_margin: ClassVar[float]  # refresh this long before a token's stated expiry

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        base_url: str,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        on_request: RequestCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self._secret = app_secret
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._on_request = on_request
        self._scrubber = Scrubber(app_secret)
        self._tokens = TokenCache(self._fetch_token, margin=self.token_margin, clock=clock)

    # -- what each platform says -------------------------------------------------------------------

    @abc.abstractmethod
    async def _fetch_token(self) -> tuple[str, float]:
        """Asks the platform for a token: (token, lifetime in seconds), or a classified error."""

    @abc.abstractmethod
    def _token_headers(self, token: str) -> dict[str, str]:
        """The request headers that carry `token`."""

    @abc.abstractmethod
    def _token_rejected(self, answer: Answer) -> bool:
        """Whether `answer` refused a stale token: refresh it and repeat the call once."""

    # -- shared ------------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """`text` with the secret, the tokens and tickets seen since, and credentials masked."""
        return self._scrubber(text)

    def _remember(self, credential: str) -> None:
        """Masks a credential the platform handed out (a ticket, a URL with one) from now on."""
        self._scrubber.remember(credential)

    def _text(self, name: str, text: str) -> str:
        """An error text naming the platform and the endpoint, credentials masked."""
        return self.scrub(f"{self.platform} {name}: {text}")

    def _status_text(self, name: str, status: int, code: str, message: str) -> str:
        """`HTTP status [code][: message]`, as `_text` writes it."""
        text = f"HTTP {status}"
        if code:
            text += f" {code}"
        if message:
            text += f": {message}"
        return self._text(name, text)

    def _token_from(
        self, name: str, answer: Answer, token_key: str, lifetime_key: str
    ) -> tuple[str, float]:
        """The token and its lifetime from a token endpoint's answer, the token remembered."""
        token, lifetime = answer.get(token_key), answer.get(lifetime_key)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise TransientError(self._text(name, f"answer without {token_key} or {lifetime_key}"))
        self._remember(token)
        log.debug("%s %s: token refreshed, valid %ss", self.platform, name, lifetime)
        return token, float(lifetime)

    def _count(self, name: str, status: str) -> None:
        if self._on_request is not None:
            self._on_request(name, status)

    def _closed_error(self, name: str) -> PermanentError:
        # Permanent: this client never answers again, so a reply gives up (or falls back) at
        # once instead of retrying its final text until the deadline.
        return PermanentError(self._text(name, "client closed"))

    def _http(self, name: str) -> aiohttp.ClientSession:
        if self._closed:
            # e.g. an answer still streaming when its channel stopped: a session opened now
            # would never be closed (and a borrowed one may be gone)
            raise self._closed_error(name)
        # Created on first use: a session must be born inside a running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _send(
        self,
        name: str,
        method: str,
        url: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authorized: bool = False,
    ) -> Answer:
        """One HTTP exchange, counted; a timeout or a transport failure is a TransientError, a
        call on (or cut short by) a closed client a PermanentError.

        `authorized` sends the access token; one the platform rejects as stale is refreshed and
        the exchange made again, once.
        """
        sent = {
            "Accept": "application/json",
            "User-Agent": f"channeld (+{self.platform})",
            **(headers or {}),
        }
        if not authorized:
            return await self._exchange(name, method, url, sent, json=body, params=params)
        token = await self._tokens.get()
        sent.update(self._token_headers(token))
        answer = await self._exchange(name, method, url, sent, json=body, params=params)
        if not self._token_rejected(answer):
            self._tokens.accepted(token)
            return answer
        # only the token that failed: a concurrent caller may hold a fresh one already
        if self._tokens.invalidate(token):
            fresh = await self._tokens.get()
            sent.update(self._token_headers(fresh))
            answer = await self._exchange(name, method, url, sent, json=body, params=params)
            if not self._token_rejected(answer):
                self._tokens.accepted(fresh)
        return answer

    async def _exchange(
        self, name: str, method: str, url: str, headers: dict[str, str], **request: Any
    ) -> Answer:
        try:
            # never followed: a redirect would carry the body and headers (secrets, tokens) to a
            # host the operator did not configure; a 3xx is classified like any other answer
            async with self._http(name).request(
                method,
                url,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                **request,
            ) as resp:
                raw = await resp.read()
                status, answer_headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._unanswered(name, exc) from exc
        self._count(name, str(status))
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None  # e.g. an HTML ban page; the status still classifies it
        return Answer(status, payload, answer_headers)

    def _unanswered(self, name: str, exc: TimeoutError | aiohttp.ClientError) -> ChannelError:
        """The classified error of an exchange that got no answer, counted."""
        timed_out = isinstance(exc, TimeoutError)
        self._count(name, "timeout" if timed_out else "error")
        if self._closed:
            return self._closed_error(name)  # close() cut it short
        if timed_out:
            total = self._timeout.total or 0.0
            return TransientError(self._text(name, f"no answer within {total:g}s"))
        return TransientError(self._text(name, f"{type(exc).__name__}: {exc}"))

    async def close(self) -> None:
        """Closes the HTTP session if this client created it; later calls are refused."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
