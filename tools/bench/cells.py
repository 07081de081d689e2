"""Pure formatting: table cells, markdown tables and lookups into a results dictionary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MB = 1024 * 1024


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a table cell."""
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def num(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A number for a table cell."""
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def times(value: float | None) -> str:
    """A ratio for a table cell."""
    return "–" if value is None else f"{value:.2f}×"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def step_at(steps: Sequence[Mapping[str, Any]], rate: float) -> Mapping[str, Any] | None:
    """The step run at `rate`, if any."""
    return next((s for s in steps if float(s["rate"]) == rate), None)


def get(step: Mapping[str, Any] | None, *path: str) -> float | None:
    """The number at `path` inside `step`; None when any part is missing."""
    node: Any = step
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return None if node is None else float(node)
