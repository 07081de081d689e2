"""split_text: boundaries in order of preference, fenced code that still renders, nothing lost."""

from __future__ import annotations

import random
import re

import pytest

from channels.splitting import split_text

FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,}).*$", re.MULTILINE)
WHITESPACE = re.compile(r"\s+")


def utf8_len(text: str) -> int:
    return len(text.encode())


def content(text: str, *, drop_fences: bool) -> str:
    """What must survive splitting: the text without whitespace (and without fence lines)."""
    if drop_fences:
        text = FENCE_LINE.sub("", text)
    return WHITESPACE.sub("", text)


def letters(text: str) -> str:
    """The text without whitespace, fence markers and the info strings random_markdown uses."""
    return re.sub(r"\s+|[`~]|python|js", "", text)


def assert_in_order(text: str, chunks: list[str]) -> None:
    """Each chunk is a verbatim stretch of `text`, in order, with only whitespace between them."""
    pos = 0
    for chunk in chunks:
        found = text.find(chunk, pos)
        assert found >= 0, f"{chunk!r} is not verbatim in the text after {pos}"
        assert not text[pos:found].strip(), f"content skipped: {text[pos:found]!r}"
        pos = found + len(chunk)
    assert not text[pos:].strip(), f"content dropped at the end: {text[pos:]!r}"


def fence_lines(chunk: str) -> list[str]:
    return [m.group(0).strip() for m in FENCE_LINE.finditer(chunk)]


def paragraph(words: int, seed: str) -> str:
    return " ".join(f"{seed}{i}" for i in range(words)) + "."


def test_short_text_is_returned_as_is() -> None:
    assert split_text("  hello\n\nworld  \n", 100) == ["  hello\n\nworld  \n"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, 10) == []


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", 0)


def test_whole_paragraphs_are_packed_together() -> None:
    first, second, third = paragraph(8, "a"), paragraph(8, "b"), paragraph(8, "c")
    text = f"{first}\n\n{second}\n\n\n{third}"
    limit = len(first) + 2 + len(second)
    assert split_text(text, limit) == [f"{first}\n\n{second}", third]


def test_a_long_paragraph_splits_at_line_ends_first() -> None:
    lines = [f"- item number {i} with some words" for i in range(6)]
    text = "\n".join(lines)
    chunks = split_text(text, 2 * len(lines[0]) + 1)
    assert chunks == ["\n".join(lines[0:2]), "\n".join(lines[2:4]), "\n".join(lines[4:6])]


def test_a_long_line_splits_at_sentence_ends_then_spaces() -> None:
    text = "First sentence is here. Second one follows! Is this the third? Yes"
    assert split_text(text, 30) == [
        "First sentence is here.",
        "Second one follows!",
        "Is this the third? Yes",
    ]
    assert split_text("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]


def test_cjk_sentences_split_without_spaces() -> None:
    assert split_text("第一句话。第二句话！第三句话？", 6) == [
        "第一句话。",
        "第二句话！",
        "第三句话？",
    ]


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_text("abcdefghij kl", 4) == ["abcd", "efgh", "ij", "kl"]
    assert split_text("abc", 1) == ["a", "b", "c"]


def test_a_code_block_that_fits_is_never_split() -> None:
    prose = paragraph(6, "p")
    code = "```python\nprint('hello')\nprint('world')\n```"
    text = f"{prose}\n\n{code}\n\nAfter."
    # The block would fit partly after the prose; it moves to its own chunk instead.
    chunks = split_text(text, len(code) + 8)
    assert chunks == [prose, f"{code}\n\nAfter."]


def test_an_oversize_code_block_is_closed_and_reopened_with_its_info_string() -> None:
    body = [f"value_{i} = compute({i})  # step {i}" for i in range(20)]
    text = "Here is the code:\n\n```python\n" + "\n".join(body) + "\n```\n\nDone."
    chunks = split_text(text, 150)
    assert chunks[0] == "Here is the code:"
    assert chunks[-1] == "Done."
    code_chunks = chunks[1:-1]
    assert len(code_chunks) > 2
    for chunk in code_chunks:
        assert len(chunk) <= 150
        assert chunk.startswith("```python\n")
        assert chunk.endswith("\n```")
        assert fence_lines(chunk) == ["```python", "```"]
    inner = [line for chunk in code_chunks for line in chunk.splitlines()[1:-1]]
    assert inner == body


def test_a_single_code_line_longer_than_the_limit_leaves_no_empty_block() -> None:
    blob = '{"data": [' + ", ".join(str(i) for i in range(200)) + "]}"
    text = f"```json\n{blob}\n```"
    chunks = split_text(text, 120)
    for chunk in chunks:
        assert len(chunk) <= 120
        assert fence_lines(chunk) == ["```json", "```"]
        assert chunk.splitlines()[1].strip(), "a chunk holds an empty code block"
    assert "".join(chunk.splitlines()[1] for chunk in chunks) == blob


def test_tilde_and_longer_fences_close_with_the_same_marker() -> None:
    body = "\n".join(f"line {i} ``` not a fence" for i in range(12))
    text = f"~~~~ text\n{body}\n~~~~"
    chunks = split_text(text, 80)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.startswith("~~~~ text\n")
        assert chunk.endswith("\n~~~~")
        assert len(chunk) <= 80


def test_an_unclosed_fence_runs_to_the_end_and_is_closed_between_chunks() -> None:
    text = "```sh\n" + "\n".join(f"echo {i}" for i in range(30))
    chunks = split_text(text, 60)
    assert all(chunk.startswith("```sh\n") for chunk in chunks)
    assert all(chunk.endswith("\n```") for chunk in chunks[:-1])
    assert not chunks[-1].endswith("```")  # the original left it open; so does the last chunk
    assert content("\n".join(chunks), drop_fences=True) == content(text, drop_fences=True)


def test_a_limit_too_small_for_fences_cuts_the_code_raw() -> None:
    text = "```python\nx = 1\ny = 2\n```"
    chunks = split_text(text, 20)  # the fences alone would take 14 of every 20
    assert chunks == ["```python\nx = 1", "y = 2\n```"]
    assert content("".join(chunks), drop_fences=False) == content(text, drop_fences=False)


def test_inline_triple_backticks_are_not_a_fence() -> None:
    text = "Use ```code``` inline.\n\n" + paragraph(10, "w")
    assert split_text(text, 40)[0] == "Use ```code``` inline."


def test_measure_counts_bytes_when_asked() -> None:
    text = "这是一个很长的句子。" * 20
    chunks = split_text(text, 100, measure=utf8_len)
    assert all(utf8_len(chunk) <= 100 for chunk in chunks)
    assert "".join(chunks) == text
    # Counted in characters the same limit needs far fewer chunks.
    assert len(split_text(text, 100)) < len(chunks)


def random_markdown(seed: int) -> str:
    """A messy answer: prose, lists, CJK, very long words and fenced blocks of every size."""
    rng = random.Random(seed)

    def words(n: int) -> str:
        out = []
        for _ in range(n):
            word = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12)))
            if rng.random() < 0.03:
                word *= 12  # longer than most limits
            out.append(word + rng.choice(["", "", "", ".", ",", "!", "?"]))
        return " ".join(out)

    blocks = []
    for _ in range(rng.randint(3, 12)):
        kind = rng.random()
        if kind < 0.45:
            blocks.append(words(rng.randint(1, 60)))
        elif kind < 0.6:
            blocks.append("\n".join(f"- {words(rng.randint(1, 10))}" for _ in range(5)))
        elif kind < 0.7:
            blocks.append("这是中文句子。" * rng.randint(1, 12))
        else:
            fence = rng.choice(["```", "```python", "~~~", "````js"])
            lines = [
                "    " * rng.randint(0, 2) + words(rng.randint(0, 15))
                for _ in range(rng.randint(1, 25))
            ]
            marker = fence.rstrip("pythonjs")
            blocks.append(f"{fence}\n" + "\n".join(lines) + "\n" + marker)
    return rng.choice(["\n\n", "\n\n\n", "\n \n"]).join(blocks) + rng.choice(["", "\n"])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("limit", [1, 9, 25, 64, 200, 1000])
def test_chunks_fit_and_keep_every_character(seed: int, limit: int) -> None:
    text = random_markdown(seed)
    chunks = split_text(text, limit)
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    assert letters("".join(chunks)) == letters(text)
    if limit >= 64:  # fences are repaired: added ones are whole lines, and every chunk renders
        assert content("\n".join(chunks), drop_fences=True) == content(text, drop_fences=True)
        for chunk in chunks:
            assert len(fence_lines(chunk)) % 2 == 0, f"unbalanced fences in {chunk!r}"
            assert FENCE_LINE.sub("", chunk).strip(), f"a chunk of bare fences: {chunk!r}"


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("limit", [1, 9, 64, 500])
def test_prose_chunks_are_verbatim_stretches_in_order(seed: int, limit: int) -> None:
    text = FENCE_LINE.sub("", random_markdown(seed))
    assert_in_order(text, split_text(text, limit))
