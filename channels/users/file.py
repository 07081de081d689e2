"""The "file" directory: a TOML list of people, each with the platform identities that are them.

```toml
[[users]]
name = "Ada Lovelace"
email = "ada@example.com"
groups = ["engineering"]
identities = [{platform = "dingtalk", user_id = "0612345"},
              {platform = "feishu", user_id = "ou_7d8a6e", tenant = "2ed263bf32cf1651"}]
```

A sender is the entry that lists their identity (an identity without `tenant` matches every
tenant of its platform), else the entry with their e-mail (when the platform told it). The file is
read at start and by `reload()` (SIGHUP); a file that does not parse or contradicts itself is
refused whole and the directory keeps answering from the one before.
"""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from channels.users.directory import Person, Who
from common.errors import ConfigError

log = logging.getLogger(__name__)

_Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=250)]
_Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=250)]
_ENTRY = re.compile(r"^[ \t]*\[\[[ \t]*users[ \t]*\]\]", re.MULTILINE)


class _Identity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: _Id
    user_id: _Id
    tenant: _Text = ""  # empty: any tenant of the platform


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Id
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=320)] = ""
    groups: tuple[_Id, ...] = ()
    identities: tuple[_Identity, ...] = ()


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[_Entry, ...] = Field(default=())


class _Index:
    """One parsed file: people by identity and by e-mail."""

    def __init__(self, entries: tuple[_Entry, ...], lines: list[int]) -> None:
        self.by_identity: dict[tuple[str, str, str], Person] = {}
        self.by_email: dict[str, Person] = {}
        seen: set[str] = set()
        for number, entry in enumerate(entries):
            where = _where(number, entry.name, lines)
            person = Person(
                directory_id="file:" + (entry.email or entry.name),
                name=entry.name,
                email=entry.email,
                groups=entry.groups,
            )
            if person.directory_id in seen:
                raise ConfigError(f"{where}: {person.directory_id[5:]!r} is listed twice")
            seen.add(person.directory_id)
            if entry.email:
                self.by_email[entry.email.casefold()] = person
            for identity in entry.identities:
                key = (identity.platform, identity.tenant, identity.user_id)
                if key in self.by_identity:
                    raise ConfigError(
                        f"{where}: identity {identity.platform}:{identity.user_id} already "
                        f"belongs to {self.by_identity[key].name!r}"
                    )
                self.by_identity[key] = person

    def find(self, who: Who) -> Person | None:
        for tenant in (who.tenant, ""):
            if (person := self.by_identity.get((who.platform, tenant, who.user_id))) is not None:
                return person
        return self.by_email.get(who.email.casefold()) if who.email else None


def _where(number: int, name: str, lines: list[int]) -> str:
    line = f" (line {lines[number]})" if number < len(lines) else ""
    return f"users entry {number + 1}{line}, {name!r}"


def _parse(path: Path) -> _Index:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)"
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    lines = [text.count("\n", 0, m.start()) + 1 for m in _ENTRY.finditer(text)]
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = error["loc"]
        where = "top level"
        if len(location) >= 2 and location[0] == "users" and isinstance(location[1], int):
            number = location[1]
            raw = data["users"][number] if isinstance(data.get("users"), list) else {}
            name = raw.get("name", "") if isinstance(raw, dict) else ""
            field = ".".join(str(part) for part in location[2:])
            where = _where(number, str(name), lines) + (f", {field}" if field else "")
        raise ConfigError(f"{path}: {where}: {error['msg']}") from exc
    try:
        return _Index(parsed.users, lines)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


class FileDirectory:
    """People listed in a TOML file (`users_file`), re-read on `reload()`."""

    source = "file"

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._index = _parse(self._path)

    def reload(self) -> None:
        """Reads the file again; a bad one raises ConfigError and the previous one stays."""
        self._index = _parse(self._path)
        log.info("users file %s reloaded", self._path)

    async def lookup(self, who: Who) -> Person | None:
        """The entry listing `who`'s identity, else the one with their e-mail; None otherwise."""
        return self._index.find(who)

    async def aclose(self) -> None:
        """Nothing to release."""
