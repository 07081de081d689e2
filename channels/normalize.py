"""What every inbound string becomes before anything stores it: the one place the rule lives.

Platforms hand over whatever their users (or a hostile client) typed. Some of it no database
can hold: a lone surrogate (U+D800..U+DFFF) has no UTF-8 form, so SQLite's driver and asyncpg
both refuse it; PostgreSQL refuses NUL in any text and anything longer than a `String(n)`
column, where SQLite takes both. Normalised here, at the provider boundary, the same value
reaches either backend and both store exactly the same thing:

- lone surrogates become U+FFFD (a surrogate pair in a str is joined into its character);
- C0 control characters other than tab, line feed and carriage return are removed (NUL,
  escape sequences that would drive a terminal showing the text);
- ids (message, frame, chat, sender, tenant, extra ids) that are too long or had to be
  changed keep a readable prefix and get a hash of the original, so two distinct ids never
  merge and a redelivery maps to the same id (dedupe holds);
- names are cut to `MAX_NAME_CHARS`; text is cut to `MAX_TEXT_CHARS`, saying so at its end.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# Ids land in String(255) columns (journal message and frame ids, identity user id and tenant);
# the group conversation key "group:<chat id>:<sender id>" lands in String(512), so two ids and
# seven characters must fit: 7 + 2 * 250 = 507. tests/test_normalize.py checks both against the
# schema. Real platform ids are under 64 characters.
MAX_ID_CHARS = 250
MAX_NAME_CHARS = 250  # display names: String(255) in user_account and platform_identity
# Text is stored in Text columns (no limit on either backend) and sent to the agent; a message
# this long (about 30 printed pages) is already far beyond what a chat user types.
MAX_TEXT_CHARS = 65_536
TEXT_CUT_NOTE = "\n[The message was cut here: it was longer than {limit} characters.]"
_HASH_CHARS = 16  # hex digits of sha256 appended to a changed id: 64 bits against collisions

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def clean(value: str) -> str:
    """`value` with lone surrogates replaced by U+FFFD and C0 controls (but tab, LF, CR) removed."""
    if _UNSAFE.search(value) is None:
        return value  # the common case costs one scan
    if _SURROGATE.search(value) is not None:
        # UTF-16 round trip: a valid pair becomes its character, a lone half becomes U+FFFD
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _CONTROL.sub("", value)


def platform_id(value: str) -> str:
    """An id safe for every column it lands in; unchanged when it already was."""
    cleaned = clean(value)
    if cleaned == value and len(value) <= MAX_ID_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[: MAX_ID_CHARS - _HASH_CHARS - 1]}~{digest}"


def name(value: str) -> str:
    """A display name safe for its column: cleaned, at most `MAX_NAME_CHARS` characters."""
    return clean(value)[:MAX_NAME_CHARS]


def text(value: str) -> str:
    """Message text: cleaned, at most `MAX_TEXT_CHARS` characters, a cut one saying so."""
    cleaned = clean(value)
    if len(cleaned) <= MAX_TEXT_CHARS:
        return cleaned
    note = TEXT_CUT_NOTE.format(limit=MAX_TEXT_CHARS)
    return cleaned[: MAX_TEXT_CHARS - len(note)] + note


def deep(value: Any) -> Any:
    """Every string in a JSON-like value cleaned (keys included); lengths are left alone."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [deep(v) for v in value]
    return value
