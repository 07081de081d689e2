"""`[[routes]]`: which agent answers a message, chosen per message after the FAQ; the first route
whose filters all match wins, and no match leaves the channel's own agent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.faq import normalise

# What a message can carry, as the providers name their attachment kinds, plus "text" for a
# message with words of its own; "image" is read as "picture", the word the example uses.
CONTENT_TYPES = frozenset({"text", "picture", "file", "video", "audio", "sticker", "location"})
_ALIASES = {"image": "picture", "voice": "audio"}


class Route(BaseModel):
    """One `[[routes]]` entry: `agent` answers the messages every given filter matches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field(min_length=1)
    channels: tuple[str, ...] | None = None
    platforms: tuple[str, ...] | None = None
    user_groups: tuple[str, ...] | None = None
    min_chars: int | None = Field(default=None, ge=1)
    keywords: tuple[str, ...] | None = None  # any of them, normalised like the FAQ
    content_types: tuple[str, ...] | None = None  # any of them

    @field_validator("channels", "platforms", "user_groups", "keywords", "content_types")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # an empty list would match nothing, silently: leave the key out to match everything
        if value is not None and not value:
            raise ValueError("must not be empty (leave the key out to match any)")
        return value

    @field_validator("keywords")
    @classmethod
    def _matchable(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for index, keyword in enumerate(value or ()):
            if not normalise(keyword):
                raise ValueError(
                    f"keyword {index} ({keyword!r}) is empty once punctuation and spaces are"
                    " removed, so it can never match"
                )
        return value

    @field_validator("content_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        kinds = tuple(_ALIASES.get(kind.lower(), kind.lower()) for kind in value)
        unknown = [kind for kind in kinds if kind not in CONTENT_TYPES]
        if unknown:
            raise ValueError(
                f"unknown content type {unknown[0]!r} (known: {', '.join(sorted(CONTENT_TYPES))})"
            )
        return kinds


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What routes look at in one message."""

    channel: str
    platform: str
    groups: tuple[str, ...] = ()  # the sender's groups from the user mapper
    text: str = ""  # the user's own words, without the command word or attachment notes
    content_types: frozenset[str] = frozenset()


def _matches(route: Route, facts: MessageFacts, normalised_text: str) -> bool:
    if route.channels is not None and facts.channel not in route.channels:
        return False
    if route.platforms is not None and facts.platform not in route.platforms:
        return False
    if route.user_groups is not None and not set(route.user_groups) & set(facts.groups):
        return False
    if route.min_chars is not None and len(facts.text.strip()) < route.min_chars:
        return False
    if route.content_types is not None and not facts.content_types & set(route.content_types):
        return False
    # substring on normalised text: Chinese keywords have no word boundaries to look for
    return route.keywords is None or any(
        normalise(keyword) in normalised_text for keyword in route.keywords
    )


def choose(routes: Sequence[Route], facts: MessageFacts) -> Route | None:
    """The first route whose every filter matches `facts`; None: the channel's agent answers."""
    normalised_text = normalise(facts.text)
    for route in routes:
        if _matches(route, facts, normalised_text):
            return route
    return None


class RouteTable:
    """The routes every channel consults, replaced whole on a reload."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(routes)

    def __bool__(self) -> bool:
        return bool(self._routes)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes, in the order they are tried."""
        return self._routes

    def replace(self, routes: Sequence[Route]) -> None:
        """Route with new entries from now on (a reload); a choice in progress is not torn."""
        self._routes = tuple(routes)

    def choose(self, facts: MessageFacts) -> Route | None:
        """The first matching route, or None."""
        return choose(self._routes, facts)
