"""`pattern` strings: a value that matches, built from Python's own regular-expression parser.

A string slot with a `pattern` is valid when `re.search(pattern, text)` finds a match (JSON Schema's
semantics: unanchored unless the pattern says `^`/`$`), its length is within bounds and it is JSON
text without escapes. The model writes the slot; when it has not written a match by the last
round, the slot is set to `example(...)`, a match built by walking the parsed pattern (fewest
repetitions, first alternative, a plain printable character from each class), checked with `re`.
A pattern no example can be built for (back-references, look-arounds that refuse every attempt)
is refused when the schema compiles.
"""

from __future__ import annotations

import re
from functools import lru_cache

try:  # Python 3.11+
    from re import _constants as C
    from re import _parser as parser
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse as parser  # type: ignore[no-redef]

MAX_PATTERN_LENGTH = 1000  # characters of one pattern
PREFERRED = "a0A-_.b1B"  # characters tried first for a class (safe inside a JSON string)


class Unsupported(Exception):
    pass


def compiled(pattern: str) -> re.Pattern:
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"`pattern` must be a string of at most {MAX_PATTERN_LENGTH} characters")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"`pattern` {pattern[:60]!r} is not a regular expression: {err}") from None


def matches(pattern: str, text: str) -> bool:
    return compiled(pattern).search(text) is not None


@lru_cache(maxsize=512)
def example(pattern: str, min_length: int = 0, max_length: int | None = None) -> str | None:
    """A string of `min_length`..`max_length` characters that `pattern` matches, safe in JSON
    without escapes; None when none is found this way."""
    regex = compiled(pattern)
    try:
        tree = parser.parse(pattern)
    except re.error:
        return None
    tries = []
    for extra in (0, 1, 2, 4, 8, 16, 32):
        try:
            tries.append(_build(tree, extra))
        except Unsupported:
            return None
    pad = "a" * max(0, min_length - min(map(len, tries), default=0))
    candidates = [t for t in tries] + [t + pad for t in tries] + [pad + t for t in tries]
    for text in sorted(dict.fromkeys(candidates), key=len):
        fits = len(text) >= min_length and (max_length is None or len(text) <= max_length)
        if fits and _json_safe(text) and regex.search(text):
            return text
    return None


def _json_safe(text: str) -> bool:
    return all(c not in '"\\' and ord(c) >= 0x20 for c in text)


def _build(tree, extra: int) -> str:
    """The text of a parsed (sub)pattern; unbounded repeats run `extra` more times than needed."""
    out = []
    for op, arg in tree:
        if op is C.LITERAL:
            out.append(chr(arg))
        elif op is C.NOT_LITERAL:
            out.append(next(c for c in PREFERRED if ord(c) != arg))
        elif op is C.ANY:
            out.append("a")
        elif op is C.IN:
            out.append(_pick(arg))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT)):
            low, high, sub = arg
            count = low + extra if high is C.MAXREPEAT else min(high, low + extra)
            out.append(_build(sub, extra) * count)
        elif op is C.SUBPATTERN:
            out.append(_build(arg[-1], extra))
        elif op is getattr(C, "ATOMIC_GROUP", None):
            out.append(_build(arg, extra))
        elif op is C.BRANCH:
            out.append(_build(arg[1][0], extra))
        elif op is C.AT:
            continue  # anchors and boundaries: checked by re.search on the result
        elif op in (C.ASSERT, C.ASSERT_NOT):
            continue  # look-arounds: likewise checked on the result
        else:  # back-references, conditionals
            raise Unsupported(str(op))
    return "".join(out)


def _pick(items) -> str:
    """A character of a class `[...]`: the first preferred one inside it (outside it if negated)."""
    negate = any(op is C.NEGATE for op, _ in items)
    members = [(op, arg) for op, arg in items if op is not C.NEGATE]

    def inside(ch: str) -> bool:
        code = ord(ch)
        for op, arg in members:
            if op is C.LITERAL and arg == code:
                return True
            if op is C.RANGE and arg[0] <= code <= arg[1]:
                return True
            if op is C.CATEGORY and re.fullmatch(_category_regex(arg), ch):
                return True
        return False

    for ch in PREFERRED + "".join(chr(c) for c in range(0x21, 0x7F)):
        if inside(ch) != negate and _json_safe(ch):
            return ch
    if not negate:
        for op, arg in members:  # a class of only non-ASCII characters
            if op is C.LITERAL:
                return chr(arg)
            if op is C.RANGE:
                return chr(arg[0])
    raise Unsupported("character class")


def _category_regex(category) -> str:
    return {
        C.CATEGORY_DIGIT: r"\d",
        C.CATEGORY_NOT_DIGIT: r"\D",
        C.CATEGORY_WORD: r"\w",
        C.CATEGORY_NOT_WORD: r"\W",
        C.CATEGORY_SPACE: r"\s",
        C.CATEGORY_NOT_SPACE: r"\S",
    }.get(category, r"(?!)")
