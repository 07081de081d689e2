"""The "http" directory: the organisation's own lookup service, asked with one POST per sender.

Request: `POST <http_url>` with `{"platform", "tenant", "user_id", "name", "email", "mobile",
"employee_no"}` (what is known; empty strings for the rest). Answers: 200
`{"user": {"id", "name", "email", "groups"}}` (id and name required), 404 for "not a person we
know". A 5xx, a 429, a timeout, a refused connection or a body that is not JSON is retried
`retries` times with a short backoff, then raises `DirectoryError`; any other answer (a redirect,
401, 403, a 200 of the wrong shape) raises at once, since asking again would get the same.
Redirects are never followed: the sender's details go only to the configured host.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from channels import normalize
from channels.users.directory import DirectoryError, Person, Who
from common.backoff import Backoff
from common.endpoint import http_base_url, is_loopback
from common.errors import ConfigError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024  # one person's record; a larger body is not an answer
RETRY_BACKOFF = Backoff(initial=0.2, maximum=2.0)  # short: a sender waits for the answer
MAX_GROUPS = 100


class _Retry(Exception):
    """One attempt failed in a way another attempt may not."""


class HttpDirectory:
    """People looked up in the organisation's HTTP service (`http_url`)."""

    source = "http"

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        retries: int = 1,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        try:
            self._url = http_base_url(url)  # scheme, host, port and path; nothing else
        except ValueError as exc:
            raise ConfigError(f"users http_url {exc}") from exc
        parts = urlsplit(self._url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ConfigError(
                "users http_url must be an https:// URL (http only for a loopback host): "
                "senders' names, e-mail addresses and mobile numbers travel on it"
            )
        if timeout <= 0 or retries < 0:
            raise ConfigError("users http_timeout must be positive and retries at least 0")
        self._host = parts.netloc  # errors name the host, never the path
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep

    async def lookup(self, who: Who) -> Person | None:
        """The person the service names for `who`; None on its 404."""
        body = {
            "platform": who.platform,
            "tenant": who.tenant,
            "user_id": who.user_id,
            "name": who.name,
            "email": who.email,
            "mobile": who.mobile,
            "employee_no": who.employee_no,
        }
        delays = RETRY_BACKOFF.delays(self._retries)
        while True:
            try:
                return await self._ask(body)
            except _Retry as exc:
                delay = next(delays, None)
                if delay is None:
                    raise DirectoryError(
                        f"the user directory at {self._host} did not answer after "
                        f"{self._retries + 1} attempts: {exc}"
                    ) from exc
                log.debug("user directory at %s: %s; asking again", self._host, exc)
                await self._sleep(delay)

    async def _ask(self, body: dict[str, str]) -> Person | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self._url, json=body, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        except TimeoutError as exc:
            raise _Retry("timed out") from exc
        except aiohttp.ClientError as exc:
            raise _Retry(type(exc).__name__) from exc
        if status == 404:
            return None
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status}")
        if status != 200:
            raise DirectoryError(f"the user directory at {self._host} answered HTTP {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise DirectoryError(
                f"the user directory at {self._host} answered more than {MAX_ANSWER_BYTES} bytes"
            )
        try:
            payload = json.loads(raw)
        except ValueError as exc:  # a proxy's error page, a cut body
            raise _Retry("the answer is not JSON") from exc
        return self._person(payload)

    def _person(self, payload: Any) -> Person:
        user = payload.get("user") if isinstance(payload, dict) else None
        if not isinstance(user, dict):
            raise self._bad('no "user" object')
        user_id, name = user.get("id"), user.get("name")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id.strip():
            raise self._bad('"user.id" is not a non-empty string')
        if not isinstance(name, str) or not name.strip():
            raise self._bad('"user.name" is not a non-empty string')
        email = user.get("email") or ""
        groups = user.get("groups") or []
        if not isinstance(email, str):
            raise self._bad('"user.email" is not a string')
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise self._bad('"user.groups" is not a list of strings')
        return Person(
            directory_id="http:" + normalize.platform_id(user_id.strip()),
            name=normalize.name(name.strip()),
            email=normalize.clean(email.strip())[:320],
            groups=tuple(dict.fromkeys(normalize.name(g) for g in groups if g.strip()))[
                :MAX_GROUPS
            ],
        )

    def _bad(self, what: str) -> DirectoryError:
        return DirectoryError(f"the user directory at {self._host} answered badly: {what}")

    async def aclose(self) -> None:
        """Closes the HTTP session it created (a borrowed one stays open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
