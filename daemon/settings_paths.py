"""Paths into a channel's settings at any depth: where its secrets, sections and marks are.

A path is a tuple of keys (`("voice", "zego", "server_secret")`), shown dotted. A section is a
nested settings model (`[channels.voice]`, `[channels.voice.zego]`): a PATCH merges into it key
by key. Any other object (a provider's pass-through TTS object) is one value, replaced whole.
The walks over stored or received settings are iterative: a deep object cannot exhaust the stack.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from channels.config import sends_secrets

Path = tuple[str, ...]
MISSING: Any = object()  # what `get` answers for a path that leads nowhere


def dotted(path: Path) -> str:
    """`voice.zego.server_secret`."""
    return ".".join(path)


def _kinds(annotation: Any) -> Iterator[Any]:
    """The types a field may hold: Optional, unions and Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _kinds(get_args(annotation)[0])
    elif origin is Union or origin is types.UnionType:
        for arg in get_args(annotation):
            yield from _kinds(arg)
    else:
        yield annotation


def _nested(annotation: Any) -> type[BaseModel] | None:
    return next(
        (k for k in _kinds(annotation) if isinstance(k, type) and issubclass(k, BaseModel)), None
    )


@cache
def sections(model: type[BaseModel]) -> dict[Path, type[BaseModel]]:
    """Every settings model inside `model` by its path, `model` itself at `()`."""
    found: dict[Path, type[BaseModel]] = {(): model}
    for name, field in model.model_fields.items():
        if (inner := _nested(field.annotation)) is not None:
            found.update({(name, *p): m for p, m in sections(inner).items()})
    return found


@cache
def secret_paths(model: type[BaseModel]) -> frozenset[Path]:
    """Paths of the settings typed as secrets, in every section."""
    return frozenset(
        (*at, name)
        for at, section in sections(model).items()
        for name, field in section.model_fields.items()
        if any(kind is SecretStr for kind in _kinds(field.annotation))
    )


def marked(model: type[BaseModel]) -> dict[Path, tuple[str, ...]]:
    """Per section, the settings marked SENDS_SECRETS (where that section's secrets go)."""
    return {
        at: names for at, section in sections(model).items() if (names := sends_secrets(section))
    }


def get(data: Any, path: Path) -> Any:
    """The value at `path` in nested mappings or models; MISSING where the path leads nowhere."""
    node = data
    for key in path:
        if isinstance(node, Mapping):
            node = node.get(key, MISSING)
        elif isinstance(node, BaseModel):
            node = getattr(node, key, MISSING)
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def replaced(data: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `data` with `value` at `path` (the mappings along it copied, nothing else)."""
    out = dict(data)
    head, *rest = path
    if rest:
        inner = out.get(head)
        out[head] = replaced(inner if isinstance(inner, Mapping) else {}, tuple(rest), value)
    else:
        out[head] = value
    return out


def removed(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A copy of `data` without the key at `path`."""
    out = dict(data)
    head, *rest = path
    if not rest:
        out.pop(head, None)
    elif isinstance(inner := out.get(head), Mapping):
        out[head] = removed(inner, tuple(rest))
    return out


def leaves(data: Mapping[str, Any], found: Any) -> set[Path]:
    """Paths of the mappings nested in `data` (not in lists) for which `found(mapping)` holds;
    the walk does not enter them."""
    paths: set[Path] = set()
    stack: list[tuple[Path, Mapping[str, Any]]] = [((), data)]
    while stack:
        at, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, Mapping):
                if found(value):
                    paths.add((*at, key))
                else:
                    stack.append(((*at, key), value))
    return paths


def find_key(data: Any, key: str) -> Path | None:
    """Where `key` is used as a mapping key anywhere in `data` (lists included); None if nowhere."""
    stack: list[tuple[Path, Any]] = [((), data)]
    while stack:
        at, node = stack.pop()
        if isinstance(node, Mapping):
            for name, value in node.items():
                if name == key:
                    return (*at, str(name))
                stack.append(((*at, str(name)), value))
        elif isinstance(node, list):
            stack.extend(((*at, str(i)), value) for i, value in enumerate(node))
    return None


def find_value(data: Mapping[str, Any], value: str) -> Path | None:
    """Where a string equal to `value` sits in nested mappings (not in lists); None if nowhere."""
    stack: list[tuple[Path, Mapping[str, Any]]] = [((), data)]
    while stack:
        at, node = stack.pop()
        for name, item in node.items():
            if isinstance(item, Mapping):
                stack.append(((*at, str(name)), item))
            elif isinstance(item, str) and item == value:
                return (*at, str(name))
    return None


def present_secrets(config: BaseModel) -> dict[Path, SecretStr]:
    """The secrets a parsed config holds, by path (an unset optional one is left out)."""
    found = {}
    for path in secret_paths(type(config)):
        value = get(config, path)
        if isinstance(value, SecretStr):
            found[path] = value
    return found
