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

from lockbox import fs


@dataclass(frozen=True)
class FileChange:
    path: str
    """Relative to the layer root."""
    change: str
    """``added``, ``removed``, ``changed`` (contents or kind) or ``mode`` (only the
    executable bit)."""
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
    for directory, directories, others in fs.walk(root):
        for name in sorted(directories + others):
            path = os.path.join(directory, name)
            result[os.path.relpath(path, root)] = _describe(path)
    return result


def dist_info_owner(path: str) -> str | None:
    """``name version`` of the ``*.dist-info`` directory ``path`` is in (or is), if any."""
    for part in Path(path).parts:
        if part.endswith(".dist-info"):
            name, _, version = part.removesuffix(".dist-info").partition("-")
            return f"{name} {version}"
    return None


def _distributions(files: dict[str, tuple[str, str, int]]) -> set[str]:
    return {owner for path in files if (owner := dist_info_owner(path)) is not None}


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
            (kind_a, digest_a, size_a), (kind_b, digest_b, size_b) = before[path], after[path]
            if {kind_a, kind_b} == {"file", "executable"} and digest_a == digest_b:
                changes.append(FileChange(path, "mode", f"{kind_a} → {kind_b}"))
                continue
            detail = f"{kind_a} → {kind_b}" if kind_a != kind_b else f"{size_a} → {size_b} bytes"
            changes.append(FileChange(path, "changed", detail))
    return TreeDiff(
        added_dists=tuple(sorted(dists_after - dists_before)),
        removed_dists=tuple(sorted(dists_before - dists_after)),
        files=tuple(changes),
    )


def owners(root: Path) -> dict[str, str]:
    """Path (relative to ``root``) → ``name version`` of the distribution whose RECORD
    lists it, for every ``*.dist-info/RECORD`` under ``root``."""
    found: dict[str, str] = {}
    for record in sorted(root.glob("**/*.dist-info/RECORD")):
        owner = dist_info_owner(record.parent.name)
        assert owner is not None
        base = record.parent.parent
        for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
            listed = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            if not listed:
                continue
            path = os.path.normpath(os.path.join(base, listed))
            found[os.path.relpath(path, root)] = owner
    return found


def source_of_bytecode(path: str) -> str | None:
    """The ``.py`` file a ``__pycache__/name.tag.pyc`` file was compiled from."""
    parts = Path(path)
    if parts.parent.name != "__pycache__" or parts.suffix != ".pyc":
        return None
    return os.path.join(parts.parent.parent, parts.name.split(".", 1)[0] + ".py")


DIFFOSCOPE_LINES = 40
"""At most this many lines of diffoscope's report per file."""


def explain(old: Path, new: Path, *, context: int = 16) -> str:
    """A short account of how two files differ: ``diffoscope``'s report when it is
    installed (cut to :data:`DIFFOSCOPE_LINES` lines), else a line diff of text or the first
    differing bytes of binary files."""
    import shutil

    from lockbox.tools.run import run

    diffoscope = shutil.which("diffoscope")
    if diffoscope is not None:
        process = run(
            [
                diffoscope,
                "--no-progress",
                "--text",
                "-",
                "--max-text-report-size",
                "20000",
                "--exclude-directory-metadata=yes",
                old,
                new,
            ],
            check=False,
            timeout=120,
        )
        if process.returncode == 1 and process.stdout.strip():
            lines = process.stdout.splitlines()
            cut = lines[:DIFFOSCOPE_LINES]
            if len(lines) > len(cut):
                cut.append(f"… {len(lines) - len(cut)} more lines (diffoscope)")
            return "\n".join(cut)
    return builtin_explain(old, new, context=context)


def builtin_explain(old: Path, new: Path, *, context: int = 16, lines: int = 12) -> str:
    """The first lines of a unified diff of two text files, or for binary files the
    first differing offset with ``context`` bytes of each side in hex."""
    import difflib

    before, after = old.read_bytes(), new.read_bytes()
    try:
        text_before, text_after = before.decode("utf-8"), after.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if "\0" not in text_before and "\0" not in text_after:
            diff = list(
                difflib.unified_diff(
                    text_before.splitlines(),
                    text_after.splitlines(),
                    "registered",
                    "rebuilt",
                    n=1,
                    lineterm="",
                )
            )
            shown = diff[:lines]
            if len(diff) > len(shown):
                shown.append(f"… {len(diff) - len(shown)} more diff lines")
            return "\n".join(shown)
    offset = next(
        (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b),
        min(len(before), len(after)),
    )
    count = sum(a != b for a, b in zip(before, after, strict=False)) + abs(len(before) - len(after))
    start = max(0, offset - context // 2)
    return (
        f"binary: {count} bytes differ, the first at offset {offset:#x} "
        f"(sizes {len(before)} and {len(after)})\n"
        f"  registered {start:#08x}: {before[start : start + context].hex(' ')}\n"
        f"  rebuilt    {start:#08x}: {after[start : start + context].hex(' ')}"
    )
