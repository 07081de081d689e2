"""`common.backoff.Backoff`: the one retry schedule of supervisor, emitter, handler and agent."""

from __future__ import annotations

import random

import pytest

from agents.openai_agent import RETRY_BACKOFF
from channels.answering import SETTLE_BACKOFF, SETTLE_RETRIES
from channels.emitter import FINAL_RETRY_BACKOFF
from common.backoff import Backoff


class FixedRng:
    """Jitter pinned to one point of its range."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_ceilings_grow_by_the_factor_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=10.0)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.ceiling(0) == backoff.ceiling(-3) == 0.5  # no retry yet counts as the first
    assert Backoff(initial=0.1, factor=3.0, maximum=3.0).ceiling(3) == pytest.approx(0.9)
    assert Backoff(initial=2.0, factor=1.0, maximum=9.0).ceiling(50) == 2.0


def test_a_channel_down_for_days_neither_overflows_nor_exceeds_the_cap() -> None:
    # 2.0 ** 1024 overflows a float; a supervisor counts an attempt per failed connect
    backoff = Backoff(initial=1.0, maximum=60.0)
    for attempt in (1_025, 100_000, 10**9):
        assert backoff.ceiling(attempt) == 60.0
        assert 30.0 <= backoff.delay(attempt, random.Random(attempt)) <= 60.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 7, 40])
def test_equal_jitter_keeps_every_wait_in_the_upper_half(attempt: int) -> None:
    backoff = Backoff(initial=0.5, maximum=10.0)
    ceiling = backoff.ceiling(attempt)
    waits = [backoff.delay(attempt, random.Random(seed)) for seed in range(200)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert len(set(waits)) == len(waits)  # spread out, never synchronised
    assert backoff.delay(attempt, FixedRng(0.0)) == ceiling / 2
    assert backoff.delay(attempt, FixedRng(1.0)) == ceiling


def test_a_seeded_rng_replays_the_same_schedule() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0)
    first = list(backoff.delays(12, rng=random.Random(7)))
    assert first == list(backoff.delays(12, rng=random.Random(7)))
    assert first != list(backoff.delays(12, rng=random.Random(8)))
    # the supervisor's former formula, ceiling/2 + uniform(0, ceiling/2), from the same seed
    rng = random.Random(7)
    former = [
        min(30.0, 2.0 ** (n - 1)) / 2 + rng.uniform(0, min(30.0, 2.0 ** (n - 1)) / 2)
        for n in range(1, 13)
    ]
    assert first == former


def test_without_jitter_the_schedule_is_exact_and_can_be_counted() -> None:
    backoff = Backoff(initial=0.5, maximum=5.0, jitter=0.0)
    endless = backoff.delays(rng=FixedRng(0.7))  # the rng does not matter without jitter
    assert [next(endless) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert list(backoff.delays(3)) == [0.5, 1.0, 2.0]
    assert list(backoff.delays(0)) == []


def test_the_configured_uses_keep_their_schedules() -> None:
    # the emitter's final text: 0.5 s doubling to 5 s, as before the one Backoff
    assert list(FINAL_RETRY_BACKOFF.delays(6)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    # the handler's settle retries: four, from 0.1 s to under 3 s (formerly 0.1, 0.3, 1, 3)
    settle = list(SETTLE_BACKOFF.delays(SETTLE_RETRIES))
    assert settle == pytest.approx([0.1, 0.3, 0.9, 2.7])
    # the agent: equal jitter from 0.25-0.5 s up to 4-8 s
    assert RETRY_BACKOFF.delay(1, FixedRng(0.0)) == 0.25
    assert RETRY_BACKOFF.delay(10, FixedRng(1.0)) == 8.0


@pytest.mark.parametrize(
    "settings",
    [
        {"initial": 0.0},
        {"initial": 5.0, "maximum": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**settings)
