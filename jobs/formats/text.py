"""Reading a model's text before any call format is parsed: think blocks, tagged
blocks, code fences and bracket nesting.

Responses and training answers come from models gone wrong as often as not, so
every scan here is linear in the length of the text: a text with a million
openers and no closer is read once, never once per opener.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What is read of one text (about 250k tokens, far beyond any eval's
# max_tokens); the rest is ignored as if generation had stopped there.
MAX_RESPONSE_CHARS = 1_000_000
# Brackets nested deeper than this are not handed to a parser (Python's and
# JSON's both recurse per level).
MAX_NESTING = 100


# --------------------------------------------------------------------------- think


def split_think(text: str) -> tuple[str, str]:
    """Split a response into (thinking, the rest), in one pass over the text."""
    thoughts: list[str] = []
    # Qwen3 chat templates may put `<think>` in the prompt, so the response starts
    # inside the block and only the closing tag is generated.
    close, open_ = text.find("</think>"), text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        thoughts.append(text[:close])
        text = text[close + len("</think>") :]
    rest: list[str] = []
    pos = 0
    while (open_ := text.find("<think>", pos)) != -1:
        close = text.find("</think>", open_ + len("<think>"))
        if close == -1:
            # An unclosed block runs to the end: generation stopped while thinking.
            thoughts.append(text[open_ + len("<think>") :])
            break
        thoughts.append(text[open_ + len("<think>") : close])
        rest.append(text[pos:open_])
        pos = close + len("</think>")
    else:
        open_ = len(text)
    rest.append(text[pos:open_])
    return "\n".join(thoughts), "\n".join(rest)


# --------------------------------------------------------------------------- tagged blocks


class _Finder:
    """Next occurrence of a needle at or after a position, for non-decreasing positions.

    The last answer is kept, so a text with many openers and no closer is
    scanned once instead of once per opener.
    """

    def __init__(self, text: str, needle: str | re.Pattern[str]) -> None:
        self._text = text
        self._needle = needle
        self._at = -2  # not searched yet

    def find(self, pos: int) -> int:
        if self._at == -2 or (self._at != -1 and self._at < pos):
            if isinstance(self._needle, str):
                self._at = self._text.find(self._needle, pos)
            else:
                match = self._needle.search(self._text, pos)
                self._at = match.start() if match else -1
        return self._at


@dataclass(frozen=True)
class Segment:
    """One tagged block: `<tool_call>…`, `<function=NAME>…`, `<parameter=NAME>…` or a fence."""

    start: int  # where the opening tag starts
    end: int  # after the closing tag (or where the block stops when the tag is missing)
    name: str | None  # NAME of `<function=NAME>` / `<parameter=NAME>`, else None
    content: str


_NAME_END_RE = re.compile(r"[>\s]")


def segments(text: str, opener: str, close: str, stops: tuple[str, ...]) -> list[Segment]:
    """Blocks opened by `opener` and ended by `close`, by one of `stops` or by the end.

    A block ends at the first of these after its opening tag; `close` is part of
    the block, a stop is not (it opens what follows). An opener ending in "=" takes
    a name up to ">" (`<function=NAME>`); one whose name is not closed by ">" is
    not an opening tag.
    """
    opens, closes = _Finder(text, opener), _Finder(text, close)
    stop_finders = [_Finder(text, stop) for stop in stops]
    name_ends = _Finder(text, _NAME_END_RE)
    found: list[Segment] = []
    pos = 0
    while (start := opens.find(pos)) != -1:
        body, name = start + len(opener), None
        if opener.endswith("="):
            name_end = name_ends.find(body)
            if name_end in (-1, body) or text[name_end] != ">":
                pos = start + 1
                continue
            name, body = text[body:name_end], name_end + 1
        content_end = block_end = len(text)
        closed_at = closes.find(body)
        if closed_at != -1:
            content_end, block_end = closed_at, closed_at + len(close)
        for finder in stop_finders:
            stop = finder.find(body)
            if stop != -1 and stop < content_end:
                content_end = block_end = stop
        found.append(Segment(start, block_end, name, text[body:content_end]))
        pos = block_end
    return found


def cut_out(text: str, blocks: list[Segment]) -> str:
    """`text` with each block replaced by a newline (what is left outside the tags)."""
    parts, pos = [], 0
    for block in blocks:
        parts.append(text[pos : block.start])
        pos = block.end
    parts.append(text[pos:])
    return "\n".join(parts)


# --------------------------------------------------------------------------- fences


def fence_blocks(text: str) -> list[Segment]:
    """Markdown code fences: "```lang\\n…```", the closing fence optional at the end."""
    found: list[Segment] = []
    opens, closes, newlines = _Finder(text, "```"), _Finder(text, "```"), _Finder(text, "\n")
    pos = 0
    while (start := opens.find(pos)) != -1:
        line_end = newlines.find(start + 3)
        if line_end == -1:
            break  # no line after the opening fence, here or further on
        closed_at = closes.find(line_end + 1)
        end = len(text) if closed_at == -1 else closed_at + 3
        content_end = len(text) if closed_at == -1 else closed_at
        found.append(Segment(start, end, None, text[line_end + 1 : content_end]))
        pos = end
    return found


def fenced_pieces(text: str) -> list[str]:
    """The text as bare calls are read from it: each fenced block's code, then
    the text around the fences."""
    fences = fence_blocks(text)
    return [*(f.content for f in fences), cut_out(text, fences)]


def fence_body(text: str) -> str | None:
    """What a text that is one fenced block ("```lang\\n…```") holds, else None."""
    if not text.startswith("```") or (line_end := text.find("\n", 3)) == -1:
        return None
    body = text[line_end + 1 :].rstrip()
    return body.removesuffix("```")


def strip_fence(text: str) -> str:
    """The code inside a text that is one fenced block, else the text itself."""
    body = fence_body(text)
    return text if body is None else body.strip()


# --------------------------------------------------------------------------- nesting

_BRACKET_RE = re.compile(r"[\[\](){}]")
_OPENERS = frozenset("([{")


def nesting(text: str) -> int:
    """Deepest bracket nesting in `text`, counted plainly (brackets in strings count too)."""
    depth = deepest = 0
    for match in _BRACKET_RE.finditer(text):
        if match.group() in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def too_deep_starts(text: str, limit: int = MAX_NESTING) -> set[int]:
    """Positions of the brackets with more than `limit` levels open inside them.

    One pass with a stack of open brackets; each bracket is marked at most once,
    so the pass stays linear however deep the text goes.
    """
    stack: list[int] = []
    marked = 0  # stack[:marked] are marked already
    deep: set[int] = set()
    for match in _BRACKET_RE.finditer(text):
        if match.group() in _OPENERS:
            stack.append(match.start())
            if len(stack) - limit > marked:
                deep.update(stack[marked : len(stack) - limit])
                marked = len(stack) - limit
        elif stack:
            stack.pop()
            marked = min(marked, len(stack))
    return deep
