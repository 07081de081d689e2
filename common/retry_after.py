"""One reader of a remote's wait hint (Retry-After and the headers that play its part)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime

RETRY_AFTER = ("Retry-After",)


def retry_after(
    headers: Mapping[str, str],
    names: Sequence[str] = RETRY_AFTER,
    *,
    now: Callable[[], float] = time.time,
) -> float | None:
    """The first usable hint among the headers `names`, in seconds; None when there is none.

    A value is delta-seconds or an HTTP date (RFC 9110 §10.2.3); a name ending in `-ms` holds
    milliseconds (OpenAI's `retry-after-ms`). A past date or a negative number means now. Huge
    values are returned as they are: `common.errors` bounds every hint where it enters the taxonomy.
    """
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        seconds = _seconds(value.strip(), millis=name.lower().endswith("-ms"), now=now)
        if seconds is not None:
            return seconds
    return None


def _seconds(value: str, *, millis: bool, now: Callable[[], float]) -> float | None:
    try:
        number = float(value)
    except ValueError:
        if millis:
            return None
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # "-0000" parses naive; HTTP dates are GMT
        number = when.timestamp() - now()
    else:
        if millis:
            number /= 1000
    if math.isnan(number):
        return None
    return max(number, 0.0)
