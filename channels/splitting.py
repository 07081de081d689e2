"""Split a long answer into chunks that fit a platform's message limit and still render.

A chunk ends at the strongest boundary that fits: a blank line, then a line end, a sentence end,
a space, and only then anywhere (a word longer than the limit). A fenced code block that fits is
never split; one that does not is cut at line ends, each chunk closing the fence and the next
reopening it with the same info string (unless the fences would fill half the limit: then it is
cut raw). Joining the chunks, minus added fence lines, gives the text back up to whitespace at
the cuts. Sizes are counted by `measure`, Python characters (`len`) by default: DingTalk and
Feishu state their limits in characters; pass a byte counter where a platform counts bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Measure = Callable[[str], int]

# CommonMark fences: up to three spaces of indent, three or more backticks or tildes, and an info
# string (a backtick fence's info string may not contain a backtick, or it is inline code).
_FENCE = re.compile(r"(?P<indent> {0,3})(?P<marker>`{3,}|~{3,})(?P<info>.*)")

# Separators, strongest first: group 1 is the separator proper. Pieces never include it; a chunk
# keeps those between its pieces, so only whitespace at chunk boundaries is lost.
_PARAGRAPH = re.compile(r"([ \t]*\n(?:[ \t]*\n)+)")
_LOWER_LEVELS = (
    re.compile(r"([ \t]*\n)"),  # lines
    # Sentences: the stop stays with its sentence; CJK ones need no space after them. Written
    # without lookbehind so the engine can skip ahead to the next stop character.
    re.compile(r"(?:[.!?](?=\s)|[。！？])(\s*)"),
    re.compile(r"(\s+)"),  # words
)
_BLANK_LINES = re.compile(r"(?:[ \t]*\n)*")


@dataclass(frozen=True, slots=True)
class _Fence:
    start: int  # the opening fence line's first character
    body: int  # the first character after the opening fence line's newline
    end: int  # after the closing fence line (or the text) with no trailing newline
    opening: str  # the opening fence line verbatim, info string included, to reopen the block
    closing: str  # a fence that closes it, added when the block is split


Span = tuple[int, int]
_Piece = tuple[int, int, _Fence | None]


def split_text(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Split `text` into chunks of at most `limit` by `measure`, on the strongest boundary."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if not text.strip():
        return []
    if measure(text) <= limit:
        return [text]
    return _Splitter(text, limit, measure).split()


@dataclass(frozen=True, slots=True)
class _Splitter:
    text: str
    limit: int
    measure: Measure

    def split(self) -> list[str]:
        return self._pack(_top_pieces(self.text), self._oversize_top)

    def _oversize_top(self, piece: _Piece) -> list[str]:
        start, end, fence = piece
        if fence is not None:
            return self._split_code(fence)
        return self._split_prose(start, end, 0)

    def _fits(self, chunk: str) -> bool:
        return self.measure(chunk) <= self.limit

    def _slice(self, start: int, stop: int) -> str:
        return self.text[start:stop]

    def _pack(self, pieces: Sequence[_Piece], oversize: Callable[[_Piece], list[str]]) -> list[str]:
        """Greedily join neighbouring pieces that fit; one too big alone goes to `oversize`."""
        ends = [end for _, end, _ in pieces]
        chunks: list[str] = []
        i = 0
        while i < len(pieces):
            start, end, _ = pieces[i]
            if self._fits(self.text[start:end]):
                last = self._furthest(_Prefix(self._slice, start, ends), i, len(pieces) - 1)
                chunks.append(self.text[start : ends[last]])
                i = last + 1
            else:
                chunks.extend(oversize(pieces[i]))
                i += 1
        return chunks

    def _split_prose(self, start: int, end: int, level: int) -> list[str]:
        """Split at the given separator level, descending to weaker ones for oversize pieces."""
        if level == len(_LOWER_LEVELS):
            return self._hard_cut(start, end)
        pieces = [(a, b, None) for a, b in _pieces(self.text, start, end, _LOWER_LEVELS[level])]
        return self._pack(pieces, lambda piece: self._split_prose(piece[0], piece[1], level + 1))

    def _hard_cut(self, start: int, end: int) -> list[str]:
        """Cut where the limit falls: no boundary is left (a word longer than the limit)."""
        chunks: list[str] = []
        stops = range(len(self.text) + 1)
        while start < end:
            cut = self._furthest(_Prefix(self._slice, start, stops), start + 1, end)
            chunks.append(self.text[start:cut])
            start = cut
        return chunks

    def _furthest(self, render: Callable[[int], str], low: int, high: int) -> int:
        """The largest k in [low, high] whose rendering fits, else `low` so that cuts advance."""
        # A longer rendering never measures less, so the fitting k come first. Probes gallop out
        # from `low` before bisecting: a chunk costs a few measures of about its own size however
        # long the rest of the text is. Falling back to `low` emits a single character that
        # measures more than the limit (in bytes, say): it cannot be split further.
        good, bad, step = low - 1, high + 1, 1
        while bad - good > 1:
            k = min(good + step, bad - 1) if step else (good + bad) // 2
            if self._fits(render(k)):
                good, step = k, step * 2
            else:
                bad, step = k, 0
        return max(good, low)

    def _split_code(self, fence: _Fence) -> list[str]:
        """Split an oversize fenced block at line ends, closing and reopening its fence."""
        reopen = fence.opening + "\n"
        close = "\n" + fence.closing
        if 2 * self.measure(reopen + close) > self.limit:
            # Fences would eat most of every chunk (or not fit at all): cut the block raw instead.
            return self._split_prose(fence.start, fence.end, 0)

        def render(start: int, stop: int) -> str:
            head = "" if start == fence.start else reopen
            tail = "" if stop == fence.end else close
            return head + self.text[start:stop] + tail

        lines = _lines(self.text, fence.body, fence.end)
        line_ends = [end for _, end in lines]
        chunks: list[str] = []
        start, stop = fence.start, fence.body - 1  # the current chunk: just the opening line so far
        i = 0
        while i < len(lines):
            line_start, line_end = lines[i]
            if self._fits(render(start, line_end)):
                i = self._furthest(_Prefix(render, start, line_ends), i, len(lines) - 1)
                stop = line_ends[i]
                i += 1
                continue
            if stop > fence.body - 1 or start != fence.start:  # flush unless only the opening
                chunks.append(render(start, stop))
                start = line_start
            # A line longer than the room left: cut it, its first piece joining what the chunk has.
            while not self._fits(render(start, line_end)):
                low = max(start, line_start) + 1
                cut = self._furthest(functools.partial(render, start), low, line_end - 1)
                chunks.append(render(start, cut))
                start = cut
            stop = line_end
            i += 1
        chunks.append(render(start, stop))
        return chunks


@dataclass(frozen=True, slots=True)
class _Prefix:
    """render(start, stops[k]) as a function of k: the candidate chunk reaching the k-th stop."""

    render: Callable[[int, int], str]
    start: int
    stops: Sequence[int]

    def __call__(self, k: int) -> str:
        return self.render(self.start, self.stops[k])


def _top_pieces(text: str) -> list[_Piece]:
    """Paragraphs of prose and whole fenced code blocks, in order."""
    pieces: list[_Piece] = []
    prose_start = 0
    pos = 0
    while pos < len(text):
        line_end = _line_end(text, pos)
        fence = _fence_at(text, pos, line_end)
        if fence is None:
            pos = line_end + 1
            continue
        pieces.extend((a, b, None) for a, b in _pieces(text, prose_start, pos, _PARAGRAPH))
        pieces.append((fence.start, fence.end, fence))
        pos = prose_start = fence.end + 1
    pieces.extend((a, b, None) for a, b in _pieces(text, prose_start, len(text), _PARAGRAPH))
    return pieces


def _fence_at(text: str, pos: int, line_end: int) -> _Fence | None:
    """The fenced block opening at `pos`, if that line opens one; unclosed blocks run to the end."""
    match = _FENCE.fullmatch(text, pos, line_end)
    if match is None:
        return None
    marker, info = match["marker"], match["info"]
    if marker[0] == "`" and "`" in info:
        return None
    closing = re.compile(rf" {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*")
    end = len(text.rstrip())
    line = line_end + 1
    while line < len(text):
        next_end = _line_end(text, line)
        if closing.fullmatch(text, line, next_end):
            end = next_end
            break
        line = next_end + 1
    return _Fence(
        start=pos,
        body=min(line_end + 1, len(text)),
        end=max(end, line_end),
        opening=text[pos:line_end],
        closing=match["indent"] + marker,
    )


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[Span]:
    """The non-blank stretches of text[start:end] between matches of `separator`."""
    spans: list[Span] = []
    pos = start
    for match in separator.finditer(text, start, end):
        _add_trimmed(spans, text, pos, match.start(1))
        pos = max(pos, match.end(1))
    _add_trimmed(spans, text, pos, end)
    return spans


def _add_trimmed(spans: list[Span], text: str, start: int, end: int) -> None:
    if end <= start:
        return
    if not text[start].isspace() and not text[end - 1].isspace():
        spans.append((start, end))  # the common case, kept cheap: one piece per word at worst
        return
    # Blank lines go, but the first line keeps its indent: it may be markdown (a list, code).
    blank = _BLANK_LINES.match(text, start, end)  # it matches the empty string too: never None
    if blank is not None:
        start = blank.end()
    end = start + len(text[start:end].rstrip())
    if end > start:
        spans.append((start, end))


def _lines(text: str, start: int, end: int) -> list[Span]:
    """Line spans (newline excluded) of text[start:end]."""
    spans: list[Span] = []
    while start < end:
        stop = min(_line_end(text, start), end)
        spans.append((start, stop))
        start = stop + 1
    return spans


def _line_end(text: str, pos: int) -> int:
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline
