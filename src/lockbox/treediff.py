"""How two layers differ: which distributions, and which files.

Used when a dependency layer does not hash to the declared value: the rejected layer is
compared with the last good one, so the user sees whether a version moved, a build is not
deterministic, or a file appeared.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileChange:
    path: str
    """Relative to the layer root."""
    change: str
    """``added``, ``removed`` or ``changed``."""
    detail: str = ""


@dataclass(frozen=True)
class TreeDiff:
    added_dists: tuple[str, ...]
    """``name version`` of distributions only in the new tree."""
    removed_dists: tuple[str, ...]
    """``name version`` of distributions only in the old tree."""
    files: tuple[FileChange, ...]

    @property
    def same(self) -> bool:
        return not (self.added_dists or self.removed_dists or self.files)


def _describe(path: str) -> tuple[str, str, int]:
    """(kind, digest or target, size) of one file system object."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", os.readlink(path), 0)
    if stat.S_ISDIR(info.st_mode):
        return ("directory", "", 0)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    kind = "executable" if info.st_mode & stat.S_IXUSR else "file"
    return (kind, digest.hexdigest(), info.st_size)


def _index(root: Path) -> dict[str, tuple[str, str, int]]:
    result = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            path = os.path.join(directory, name)
            result[os.path.relpath(path, root)] = _describe(path)
    return result


def _distributions(files: dict[str, tuple[str, str, int]]) -> set[str]:
    found = set()
    for path in files:
        parts = Path(path).parts
        for part in parts:
            if part.endswith(".dist-info"):
                name, _, version = part.removesuffix(".dist-info").partition("-")
                found.add(f"{name} {version}")
                break
    return found


def diff_trees(old: Path, new: Path) -> TreeDiff:
    """What changed from ``old`` to ``new``."""
    before, after = _index(old), _index(new)
    dists_before, dists_after = _distributions(before), _distributions(after)
    changes = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            changes.append(FileChange(path, "removed"))
        elif path not in before:
            changes.append(FileChange(path, "added"))
        elif before[path] != after[path]:
            (kind_a, _, size_a), (kind_b, _, size_b) = before[path], after[path]
            detail = f"{kind_a} → {kind_b}" if kind_a != kind_b else f"{size_a} → {size_b} bytes"
            changes.append(FileChange(path, "changed", detail))
    return TreeDiff(
        added_dists=tuple(sorted(dists_after - dists_before)),
        removed_dists=tuple(sorted(dists_before - dists_after)),
        files=tuple(changes),
    )
