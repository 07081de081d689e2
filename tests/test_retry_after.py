"""`common.retry_after`: the one reader of a remote's wait hint, for platforms and agents alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from common.errors import MAX_RETRY_AFTER, RateLimited
from common.retry_after import retry_after

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def at_now() -> float:
    return NOW


def hint(value: str, name: str = "Retry-After") -> float | None:
    return retry_after({name: value}, (name,), now=at_now)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("-5", 0.0), ("120", 120.0)],
)
def test_delta_seconds(value: str, seconds: float) -> None:
    assert hint(value) == seconds


def test_http_dates_count_from_now() -> None:
    assert hint("Sat, 01 Mar 2025 12:00:30 GMT") == 30.0
    assert hint("Sat, 01 Mar 2025 12:00:30 -0000") == 30.0  # parses without a zone: still GMT
    assert hint("Sat, 01 Mar 2025 14:00:30 +0200") == 30.0
    assert hint("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    later = datetime(2025, 3, 1, 12, 5, tzinfo=UTC)
    assert hint(format_datetime(later, usegmt=True)) == 300.0


@pytest.mark.parametrize("value", ["soon", "", "nan", "3 seconds", "Mon, 99 Foo 2025", "0x10"])
def test_garbage_is_no_hint(value: str) -> None:
    assert hint(value) is None


def test_huge_values_pass_through_and_the_taxonomy_clamps_them() -> None:
    for value in ("999999", "1e308", "inf", "Fri, 31 Dec 9999 23:59:59 GMT"):
        seconds = hint(value)
        assert seconds is not None and seconds > MAX_RETRY_AFTER
        assert RateLimited("slow down", seconds).retry_after == MAX_RETRY_AFTER
    assert hint("1e999") == math.inf


def test_milliseconds_and_the_order_of_names() -> None:
    openai = ("retry-after-ms", "retry-after")
    assert retry_after({"retry-after-ms": "250"}, openai) == 0.25
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}, openai) == 0.25
    # a name whose value is unusable yields to the next one
    assert retry_after({"retry-after-ms": "later", "retry-after": "9"}, openai) == 9.0
    assert hint("Sat, 01 Mar 2025 12:00:30 GMT", "retry-after-ms") is None  # ms are numbers
    feishu = ("x-ogw-ratelimit-reset", "Retry-After")
    assert retry_after({"x-ogw-ratelimit-reset": "4", "Retry-After": "9"}, feishu) == 4.0
    assert retry_after({"Retry-After": "9"}, feishu) == 9.0
    assert retry_after({}, feishu) is None


def test_header_names_match_in_any_case_on_real_header_maps() -> None:
    headers = CIMultiDict({"retry-after": "11"})  # what aiohttp answers carry
    assert retry_after(headers) == 11.0
