"""Find the line on which a key of a TOML document is set.

``tomllib`` returns plain values without positions, but a recipe error must name its line.
This scanner follows table headers, arrays of tables and key/value lines (bare, quoted and
dotted keys) well enough to place a key path; a key inside an inline table or a multi-line
value is placed on the line of the nearest enclosing key it can see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyPath = Sequence[str | int]

_KEY_PART = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')


def _split_keys(text: str) -> list[str] | None:
    """Split a (possibly dotted, possibly quoted) TOML key; None if it is not one."""
    parts: list[str] = []
    position = 0
    while True:
        match = _KEY_PART.match(text, position)
        if not match:
            return None
        parts.append(next(group for group in match.groups() if group is not None))
        position = match.end()
        if position == len(text):
            return parts
        if text[position] != ".":
            return None
        position += 1


def _key_of_assignment(line: str) -> list[str] | None:
    """The key of a ``key = value`` line, honouring quotes that contain ``=``."""
    in_quote: str | None = None
    for index, char in enumerate(line):
        if in_quote:
            if char == in_quote:
                in_quote = None
        elif char in "\"'":
            in_quote = char
        elif char == "=":
            return _split_keys(line[:index].strip())
    return None


def locate(text: str, path: KeyPath) -> int | None:
    """1-based line where ``path`` (keys and array indexes) is set, or the line of its
    deepest located ancestor; None if not even the first key can be placed."""
    target = tuple(path)
    best_line: int | None = None
    best_depth = 0
    table: tuple[str | int, ...] = ()
    array_counts: dict[tuple[str | int, ...], int] = {}
    multiline: str | None = None

    def consider(candidate: tuple[str | int, ...], number: int) -> None:
        nonlocal best_line, best_depth
        depth = 0
        for have, want in zip(candidate, target, strict=False):
            if have != want:
                break
            depth += 1
        if depth == len(candidate) and depth > best_depth:
            best_line, best_depth = number, depth

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if multiline:
            if line.count(multiline) % 2 == 1:
                multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            keys = _split_keys(line[2 : line.find("]]")])
            if keys is not None:
                base, index = _next_element(tuple(keys), array_counts)
                table = base + (index,)
                consider(base, number)
                consider(table, number)
            continue
        if line.startswith("["):
            keys = _split_keys(line[1 : line.find("]")])
            if keys is not None:
                table = _with_array_indexes(tuple(keys), array_counts)
                consider(table, number)
            continue
        keys = _key_of_assignment(line)
        if keys is not None:
            consider(table + tuple(keys), number)
            multiline = _open_quote(line.split("=", 1)[1])
    return best_line


def _open_quote(value: str) -> str | None:
    """The quote of the multi-line string ``value`` begins and does not end, if any."""
    opened = None
    for quote in ('"""', "'''"):
        if value.count(quote) % 2 == 1:
            opened = quote
    return opened


def _next_element(
    keys: tuple[str, ...], array_counts: dict[tuple[str | int, ...], int]
) -> tuple[tuple[str | int, ...], int]:
    """``[[keys]]``: the array it adds an element to, and that element's index."""
    base = _with_array_indexes(keys, array_counts)
    index = array_counts.get(base, -1) + 1
    array_counts[base] = index
    # Nested tables restart their counters under a new array element.
    for key in [k for k in array_counts if len(k) > len(base) and k[: len(base)] == base]:
        del array_counts[key]
    return base, index


def _with_array_indexes(
    keys: tuple[str, ...], array_counts: dict[tuple[str | int, ...], int]
) -> tuple[str | int, ...]:
    """``[a.b]`` after ``[[a]]`` names a table inside the last element of array ``a``."""
    result: list[str | int] = []
    for key in keys:
        result.append(key)
        prefix = tuple(result)
        if prefix in array_counts and len(result) < len(keys):
            result.append(array_counts[prefix])
    return tuple(result)
