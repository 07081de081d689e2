"""Questions answered from the `[[faq]]` table before any model is asked: the matcher and an agent
that streams the fixed answer, so a FAQ reply takes the same path (card, journal, history) as any
other."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rapidfuzz import fuzz, process

from agents.base import AgentRequest

FAQ_AGENT = "faq"  # the agent name a FAQ answer is reported under
DEFAULT_THRESHOLD = 90.0

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols dropped, whitespace collapsed to one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # punctuation (P*) and symbols (S*) become spaces, so "hours?" and "hours" compare equal and
    # "9:00-18:00" keeps its numbers apart
    kept = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in folded)
    return _SPACE.sub(" ", kept).strip()


class FaqEntry(BaseModel):
    """One `[[faq]]` entry: questions that get `answer` without a model call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: list[str] = Field(min_length=1)
    answer: str = Field(min_length=1)
    match: Literal["exact", "fuzzy"] = "fuzzy"

    @field_validator("patterns")
    @classmethod
    def _matchable(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            if not normalise(pattern):
                raise ValueError(
                    f"pattern {index} ({pattern!r}) is empty once punctuation and spaces are"
                    " removed, so it can never match"
                )
        return value

    @field_validator("answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the answer is blank")
        return value


@dataclass(frozen=True, slots=True)
class FaqHit:
    """The entry that answers a question, and how well it matched (100 for equality)."""

    entry: FaqEntry
    score: float


@dataclass(frozen=True, slots=True)
class _Table:
    threshold: float
    exact: dict[str, FaqEntry]  # every entry's normalised patterns, the first entry's kept
    fuzzy_patterns: list[str]  # the fuzzy entries' normalised patterns, in entry order
    fuzzy_entries: list[FaqEntry]  # the entry of each pattern above


def _table(entries: Sequence[FaqEntry], threshold: float) -> _Table:
    table = _Table(threshold, {}, [], [])
    for entry in entries:
        for pattern in entry.patterns:
            key = normalise(pattern)
            table.exact.setdefault(key, entry)  # the first entry keeps a repeated pattern
            if entry.match == "fuzzy":
                table.fuzzy_patterns.append(key)
                table.fuzzy_entries.append(entry)
    return table


class FaqMatcher:
    """Finds the FAQ entry for a question: equality with a normalised pattern of any entry first,
    then the best WRatio score against the fuzzy entries' patterns at or above the threshold; the
    earlier entry wins a tie."""

    def __init__(
        self, entries: Sequence[FaqEntry], *, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        self._table = _table(entries, threshold)

    def __bool__(self) -> bool:
        return bool(self._table.exact)

    def replace(self, entries: Sequence[FaqEntry], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Match against new entries from now on (a reload); a match in progress is not torn."""
        self._table = _table(entries, threshold)

    def match(self, question: str) -> FaqHit | None:
        """The entry answering `question`, or None when the model should be asked."""
        table = self._table
        key = normalise(question)
        if not key:
            return None
        if (entry := table.exact.get(key)) is not None:
            return FaqHit(entry, 100.0)
        if not table.fuzzy_patterns:
            return None
        # WRatio rather than token_set_ratio: Chinese has no spaces to split tokens on, where
        # WRatio's partial comparison still finds a pattern inside a longer question (scaled down
        # by how much longer it is); and token_set_ratio scores 100 for any question that merely
        # contains all of a pattern's words, whatever else it asks. extractOne scans the
        # patterns in C and keeps the first of equal scores.
        found = process.extractOne(
            key,
            table.fuzzy_patterns,
            scorer=fuzz.WRatio,
            processor=None,
            score_cutoff=table.threshold,
        )
        if found is None:
            return None
        _, score, index = found
        return FaqHit(table.fuzzy_entries[index], float(score))


class FaqAgent:
    """Streams one fixed answer; no model, no network."""

    name = FAQ_AGENT

    def __init__(self, answer: str) -> None:
        self._answer = answer

    def __repr__(self) -> str:
        return "FaqAgent()"

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the whole answer at once."""
        del request  # the answer does not depend on the question once matched
        yield self._answer

    async def aclose(self) -> None:
        """Nothing to release."""
