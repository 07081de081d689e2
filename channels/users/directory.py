"""The directory contract: what is asked about a sender (`Who`), what a directory answers
(`Person`), and how it says it could not answer (`DirectoryError`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from channels import normalize

_IDS = frozenset({"platform", "tenant", "user_id"})  # cleaned like the identity that stores them


@dataclass(frozen=True, slots=True)
class Who:
    """What is known of a sender when the directory is asked.

    Every field is cleaned on construction (lone surrogates replaced, NUL and other controls
    removed; ids as the journal stores them, other fields cut to a name's length): whatever a
    platform or its user-info API handed over, no directory request carries a character a
    directory could misread or refuse.
    """

    platform: str
    tenant: str
    user_id: str
    name: str = ""
    email: str = ""
    mobile: str = ""
    employee_no: str = ""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            cleaned = (normalize.platform_id if field.name in _IDS else normalize.name)(value)
            if cleaned != value:
                object.__setattr__(self, field.name, cleaned)


@dataclass(frozen=True, slots=True)
class Person:
    """What the directory answered: its own id for the person, and what it knows of them."""

    directory_id: str  # "<source>:<the directory's id>": unique across directories
    name: str
    email: str = ""
    groups: tuple[str, ...] = ()


class DirectoryError(Exception):
    """The directory could not answer (down, timeout, 5xx, bad answer)."""


class Directory(Protocol):
    """An organisation's directory, asked who a sender is."""

    source: str  # "file" | "http" | "ldap": the user's auth_source and the metric's mapper label

    async def lookup(self, who: Who) -> Person | None:
        """The person `who` is; None when the directory does not know them."""
        ...

    async def aclose(self) -> None:
        """Releases connections; the directory is not asked again."""
        ...
