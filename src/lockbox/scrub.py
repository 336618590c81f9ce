"""Removing references to the build environment from built files.

A package built from source can embed absolute paths of the machine that built it: its
unpacked source in the uv cache (``__FILE__``, DWARF ``DW_AT_comp_dir``, a ``getcwd()`` baked
into a string), temporary build directories, the interpreter's include directory. Such
bytes make a layer depend on where it was built and point at paths that will not exist
where it runs.

The scrubber is given the *roots* of the build environment, not a list of paths: every
occurrence of a root in a file's bytes, with the rest of the path that follows it, is
discovered while the file is read, and overwritten with a mangled string of the same
length, so that offsets inside binaries stay valid. The mangled string depends only on the
length, so two builds whose build paths have the same length give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_PATH_CHAR = rb"A-Za-z0-9._+\-/@~%"
_MANGLED = b"/lockbox-scrubbed"


def mangle(length: int) -> bytes:
    """The same-length stand-in for a scrubbed path: ``/lockbox-scrubbed---…``."""
    return (_MANGLED + b"-" * max(0, length - len(_MANGLED)))[:length]


@dataclass
class ScrubReport:
    """What was scrubbed, file by file."""

    found: dict[str, dict[str, int]] = field(default_factory=dict)
    """For each file (relative path) that held references: each path found, and how often."""

    def add(self, file: str, paths: dict[bytes, int]) -> None:
        entry = self.found.setdefault(file, {})
        for path, count in paths.items():
            text = path.decode("utf-8", "replace")
            entry[text] = entry.get(text, 0) + count

    @property
    def files(self) -> int:
        return len(self.found)

    @property
    def occurrences(self) -> int:
        return sum(sum(paths.values()) for paths in self.found.values())

    @property
    def paths(self) -> set[str]:
        return {path for paths in self.found.values() for path in paths}


class Scrubber:
    """Finds and mangles every path under a set of roots in a byte string."""

    def __init__(self, roots: Iterable[str | bytes]) -> None:
        encoded = {
            (root.encode() if isinstance(root, str) else root).rstrip(b"/") for root in roots
        }
        self.roots = tuple(sorted((root for root in encoded if root), key=len, reverse=True))
        if not self.roots:
            raise ValueError("a scrubber needs at least one root")
        alternatives = b"|".join(re.escape(root) for root in self.roots)
        # A root matches only as a whole path component: `/opt/py` is not in `/opt/python`.
        self._pattern = re.compile(
            b"(?:" + alternatives + b")(?:/[" + _PATH_CHAR + b"]*)?(?![" + _PATH_CHAR + b"])"
        )

    def scrub(self, data: bytes) -> tuple[bytes, dict[bytes, int]]:
        """``data`` with every path under a root mangled, and the paths found with counts."""
        # bytes.find is a fast scan; most files hold no root at all.
        if not any(root in data for root in self.roots):
            return data, {}
        found: dict[bytes, int] = {}

        def replace(match: re.Match[bytes]) -> bytes:
            path = match.group(0)
            found[path] = found.get(path, 0) + 1
            return mangle(len(path))

        return self._pattern.sub(replace, data), found
