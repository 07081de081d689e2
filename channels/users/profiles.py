"""What the platforms say of senders (`enrich`): asked once per identity, remembered, and never
in the way of an answer.

A platform's user-info API (DingTalk's user/get, Feishu's contact users) gives a sender's
e-mail, mobile and employee number, which a directory can match on. An app without the permission
is named once per channel in the log, with what to grant; any other failure is logged at most
every few minutes per channel and only leaves the details empty for a while.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from channels.model import ChannelId, SenderProfile
from channels.provider import ProfileUnavailable
from channels.users.directory import Who
from common.errors import ChannelError

log = logging.getLogger(__name__)

# The longest a platform's profile ask may hold up an answer: its client's own timeout bounds each
# request, this bounds a token fetch and the ask together.
PROFILE_TIMEOUT = 15.0
KNOWN_PROFILES = 10_000  # identities remembered, least recently asked about forgotten first
ERROR_LOG_EVERY = timedelta(minutes=5)  # per channel, while a platform cannot answer

# Asks the platform who sent the message being resolved (ChannelProvider.sender_profile).
ProfileSource = Callable[[], Awaitable[SenderProfile]]


@dataclass(slots=True)
class _Answer:
    """A platform's answer about one identity (empty when it could not say)."""

    profile: SenderProfile
    fresh_until: datetime
    complete: bool  # False: the ask failed, and is repeated once this expires


class SenderProfiles:
    """The platforms' answers about senders, remembered per identity."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        keep: timedelta,
        retry_after_error: timedelta,
        timeout: float = PROFILE_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._keep = keep  # an answer (or a missing permission) is trusted this long
        self._retry_after_error = min(retry_after_error, keep)
        self._timeout = timeout
        self._answers: OrderedDict[tuple[str, str, str], _Answer] = OrderedDict()
        self._unpermitted: set[ChannelId] = set()  # channels whose missing permission was logged
        self._errors_logged: dict[ChannelId, datetime] = {}  # channel -> last error logged

    async def enrich(self, channel: ChannelId, who: Who, ask: ProfileSource) -> tuple[Who, bool]:
        """`who` with what the platform says of them (its values over the message's), and
        whether the platform could say (False: it failed, and is asked again in a while)."""
        key = (who.platform, who.tenant, who.user_id)
        now = self._clock()
        answer = self._answers.get(key)
        if answer is None or now >= answer.fresh_until:
            answer = await self._ask(channel, ask, now)
            self._answers[key] = answer
            if len(self._answers) > KNOWN_PROFILES:
                self._answers.popitem(last=False)
        self._answers.move_to_end(key)
        profile = answer.profile
        enriched = replace(
            who,
            email=profile.email or who.email,
            mobile=profile.mobile or who.mobile,
            employee_no=profile.employee_no or who.employee_no,
        )
        return enriched, answer.complete

    async def _ask(self, channel: ChannelId, ask: ProfileSource, now: datetime) -> _Answer:
        try:
            async with asyncio.timeout(self._timeout):
                return _Answer(await ask(), now + self._keep, complete=True)
        except ProfileUnavailable as exc:
            # nothing to learn until an operator grants the permission: as good as an answer
            if channel not in self._unpermitted:
                self._unpermitted.add(channel)
                answered = str(exc).replace(f"; grant the app {exc.permission}", "")
                log.warning(
                    "channel %s: grant the app %s for the platform to say who senders are "
                    "(e-mail, mobile, employee number); until then they are empty (%s)",
                    channel,
                    exc.permission,
                    answered,
                )
            return _Answer(SenderProfile(), now + self._keep, complete=True)
        except ChannelError as exc:
            self._failed(channel, str(exc), now)
        except TimeoutError:
            self._failed(channel, f"no answer within {self._timeout:g}s", now)
        except Exception as exc:  # noqa: BLE001 - a detail missing must not cost the answer
            # only the type: an unclassified error's text may carry a request's URL and token
            self._failed(channel, type(exc).__name__, now)
        return _Answer(SenderProfile(), now + self._retry_after_error, complete=False)

    def _failed(self, channel: ChannelId, why: str, now: datetime) -> None:
        last = self._errors_logged.get(channel)
        if last is None or now - last >= ERROR_LOG_EVERY:
            self._errors_logged[channel] = now
            log.warning("channel %s: the platform could not say who a sender is: %s", channel, why)
