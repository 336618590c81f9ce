"""Applying unified-diff patch files to a directory tree, strictly and in pure Python.

The assembly phase applies the recipe's ``app.patches`` with :func:`apply_patch` (``-p1``,
in recipe order) to its copy of the project source, before the substitutions. Builds must
be reproducible, so unlike GNU patch there is no fuzz: every context line must match
exactly, only the position may move. A patch applies whole or not at all — all new file
contents are computed in memory first, and the tree is written only if every hunk applies.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lockbox import fs
from lockbox.errors import PatchError, PathError
from lockbox.inputs.paths import confined

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_REGENERATE = (
    "the patch was written for a different version of this file; "
    "regenerate it against the current source"
)


@dataclass(frozen=True)
class PatchReport:
    """What :func:`apply_patch` changed."""

    files: tuple[str, ...]
    """Relative posix paths changed, created or deleted, in patch order."""
    hunks: int
    """Number of hunks applied."""
    offsets: tuple[str, ...]
    """Notes for hunks applied away from the line their header states."""


@dataclass(frozen=True)
class _Hunk:
    header: str  # "@@ -10,6 +10,7 @@", without the section text
    line: int  # 1-based line of the header in the patch file
    old_start: int
    old: tuple[bytes, ...]  # context and '-' lines, each with its line ending (if any)
    new: tuple[bytes, ...]  # context and '+' lines


@dataclass(frozen=True)
class _FilePatch:
    old_path: str | None  # None for /dev/null
    new_path: str | None
    create: bool
    delete: bool
    line: int  # 1-based line of the "--- " header
    hunks: tuple[_Hunk, ...]


def apply_patch(
    patch_file: Path, tree: Path, *, strip: int = 1, label: str | None = None
) -> PatchReport:
    """Apply ``patch_file`` to ``tree``, stripping ``strip`` leading path components."""
    label = str(patch_file) if label is None else label
    try:
        data = patch_file.read_bytes()
    except OSError as error:
        raise PatchError(f"{label}: cannot read the patch: {error.strerror}") from None
    root = tree.resolve()
    pending: dict[str, bytes | None] = {}  # new content by path; None = deleted
    offsets: list[str] = []
    hunks = 0

    def exists(path: str) -> bool:
        # Earlier sections of the same patch may have created or deleted the file.
        return pending[path] is not None if path in pending else (root / path).is_file()

    for section in _parse(data, label, strip):
        where = f"{label}: patch line {section.line}"
        if section.create:
            assert section.new_path is not None
            path = section.new_path
            if exists(path) or (root / path).is_symlink():
                raise PatchError(f"{where}: cannot create {path}: it already exists")
        else:
            names = [name for name in (section.new_path, section.old_path) if name is not None]
            if section.delete:
                names = names[-1:]
            names = list(dict.fromkeys(names))
            found = [name for name in names if exists(name)]
            if not found:
                raise PatchError(f"{where}: {' or '.join(names)} does not exist in the tree")
            path = found[0]
        try:
            target = confined(root, path, where, within="the tree")
        except PathError as error:
            raise PatchError(
                f"{where}: {path} is a symbolic link or leads out of the tree: {error.reason}"
            ) from None
        known = pending.get(path)
        original = b"" if section.create else known if known is not None else _read(target, where)
        result = _apply_hunks(original, section, path, label, offsets)
        if section.delete and result:
            raise PatchError(
                f"{where}: cannot delete {path}: it has content the patch does not "
                f"remove\n{_REGENERATE}"
            )
        pending[path] = None if section.delete else result
        hunks += len(section.hunks)
    for path, content in pending.items():
        _write(root, path, content, label)
    return PatchReport(files=tuple(pending), hunks=hunks, offsets=tuple(offsets))


def _parse(data: bytes, label: str, strip: int) -> list[_FilePatch]:
    lines = _split(data)
    sections: list[_FilePatch] = []
    git: tuple[str, int] | None = None  # a "diff --git" header not yet followed by ---/+++
    index = 0
    while index < len(lines):
        text, where = lines[index], f"{label}: patch line {index + 1}"
        if text.startswith(b"GIT binary patch") or re.match(rb"Binary files .* differ", text):
            raise PatchError(f"{where}: binary patches are not supported")
        if text.startswith(b"diff --git "):
            if git is not None:
                raise _no_hunks(label, *git)
            git = (text.rstrip(b"\r\n").decode("utf-8", "replace"), index + 1)
        elif git is not None and text.startswith((b"rename from ", b"copy from ", b"old mode ")):
            raise PatchError(f"{where}: renames, copies and mode changes are not supported")
        elif text.startswith(b"--- ") and b"".join(lines[index + 1 : index + 2]).startswith(
            b"+++ "
        ):
            old, old_epoch = _name(text[4:], label, index + 1, strip)
            new, new_epoch = _name(lines[index + 1][4:], label, index + 2, strip)
            if old is None and new is None:
                raise PatchError(f"{where}: both sides are /dev/null")
            start, index = index + 1, index + 2
            hunks: list[_Hunk] = []
            while index < len(lines) and lines[index].startswith(b"@@ "):
                hunk, index = _parse_hunk(lines, index, label)
                hunks.append(hunk)
            if not hunks:
                raise PatchError(f"{label}: patch line {start}: no hunks for {new or old}")
            # diff -N writes a missing side as the epoch rather than /dev/null.
            from_nothing = old is None or (old_epoch and all(not h.old for h in hunks))
            to_nothing = new is None or (new_epoch and all(not h.new for h in hunks))
            create = new is not None and from_nothing
            delete = to_nothing and not create
            sections.append(_FilePatch(old, new, create, delete, start, tuple(hunks)))
            git = None
            continue
        index += 1
    if git is not None:
        raise _no_hunks(label, *git)
    if not sections:
        raise PatchError(f"{label}: no file changes found; is it a unified diff?")
    return sections


def _parse_hunk(lines: list[bytes], index: int, label: str) -> tuple[_Hunk, int]:
    head = _HUNK.match(lines[index])
    if head is None:
        raise PatchError(f"{label}: patch line {index + 1}: malformed hunk header")
    old_start = int(head[1])  # positions come from the old side; the new side follows
    old_count, new_count = (1 if n is None else int(n) for n in (head[2], head[4]))
    header, line = head[0].decode("ascii"), index + 1
    old: list[bytes] = []
    new: list[bytes] = []
    last: list[list[bytes]] = []  # the side(s) the previous patch line went to
    index += 1
    while index < len(lines):
        text = lines[index]
        if text.startswith(b"\\"):
            _no_newline(last, label, index)
            last = []
        elif len(old) == old_count and len(new) == new_count:
            # More hunk lines than the header counts; "--- " starts the next file and
            # "-- " is the signature line git format-patch ends with.
            if text[:1] in (b" ", b"+") or (
                text[:1] == b"-" and text[:4] != b"--- " and text[:3] != b"-- "
            ):
                raise _miscount(label, index + 1, header, old_count, new_count)
            break
        elif text[:1] == b" " or text in (b"\n", b"\r\n"):  # an empty line: context, space trimmed
            old.append(text[1:] if text[:1] == b" " else text)
            new.append(old[-1])
            last = [old, new]
        elif text[:1] == b"-":
            old.append(text[1:])
            last = [old]
        elif text[:1] == b"+":
            new.append(text[1:])
            last = [new]
        else:
            raise _miscount(label, index + 1, header, old_count, new_count)
        if len(old) > old_count or len(new) > new_count:
            raise _miscount(label, index + 1, header, old_count, new_count)
        index += 1
    if len(old) != old_count or len(new) != new_count:  # cut short; at end of patch name the header
        at = index + 1 if index < len(lines) else line
        raise _miscount(label, at, header, old_count, new_count)
    return _Hunk(header, line, old_start, tuple(old), tuple(new)), index


def _no_newline(last: list[list[bytes]], label: str, index: int) -> None:
    """``\\ No newline at end of file`` at ``index``: drop the ``\\n`` diff added to the
    previous patch line, on the side(s) ``last`` it went to."""
    if not last:
        raise PatchError(f"{label}: patch line {index + 1}: '\\' marker without a line")
    for side in last:
        side[-1] = side[-1].removesuffix(b"\n")


def _name(raw: bytes, label: str, line: int, strip: int) -> tuple[str | None, bool]:
    """The stripped path of a ---/+++ line (None for /dev/null); whether its stamp is the epoch."""
    name, _, stamp = raw.rstrip(b"\r\n").partition(b"\t")
    epoch = _is_epoch(stamp.decode("ascii", "replace").strip())
    if name.startswith(b'"'):  # git C-quotes names with unusual bytes: "a/t\303\251st.py"
        try:
            name = ast.literal_eval("b" + name.decode("ascii"))
        except (ValueError, SyntaxError, UnicodeDecodeError):
            raise PatchError(f"{label}: patch line {line}: malformed quoted file name") from None
    if name == b"/dev/null":
        return None, epoch
    text = name.decode("utf-8", "surrogateescape")
    parts = text.split("/")
    if len(parts) <= strip:
        raise PatchError(f"{label}: patch line {line}: cannot strip {strip} components from {text}")
    parts = [part for part in parts[strip:] if part not in ("", ".")]
    if not parts or (strip == 0 and text.startswith("/")) or ".." in parts:
        raise PatchError(f"{label}: patch line {line}: {text} leads out of the tree")
    return "/".join(parts), epoch


def _is_epoch(stamp: str) -> bool:
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)? ([+-]\d{4})", stamp)
    if match is None:
        return False
    return datetime.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H:%M:%S %z").timestamp() == 0


def _apply_hunks(
    original: bytes, section: _FilePatch, path: str, label: str, offsets: list[str]
) -> bytes:
    lines = tuple(_split(original))
    out: list[bytes] = []
    done = shift = 0  # lines of the original consumed; offset of the previous hunk
    for number, hunk in enumerate(section.hunks, 1):
        # "-l,0" means "after line l"; otherwise the hunk starts at line l.
        stated = hunk.old_start - 1 if hunk.old else hunk.old_start
        at = _find(lines, hunk.old, stated + shift, done)
        if at is None:
            raise _mismatch(lines, hunk, stated + shift, number, path, label)
        if at != stated:
            moved = abs(at - stated)
            later = "later" if at > stated else "earlier"
            offsets.append(f"{path} hunk {number} applied {moved} line{'s' * (moved != 1)} {later}")
        out += lines[done:at]
        out += hunk.new
        done, shift = at + len(hunk.old), at - stated
    out += lines[done:]
    return b"".join(out)


def _find(lines: tuple[bytes, ...], old: tuple[bytes, ...], want: int, floor: int) -> int | None:
    """The start nearest ``want`` (later first, as GNU patch) where ``old`` matches exactly."""
    last = len(lines) - len(old)
    for delta in range(max(want - floor, last - want) + 1):
        for at in (want + delta, want - delta) if delta else (want,):
            if floor <= at <= last and lines[at : at + len(old)] == old:
                return at
    return None


def _mismatch(
    lines: tuple[bytes, ...], hunk: _Hunk, want: int, number: int, path: str, label: str
) -> PatchError:
    """The error for a hunk that matches nowhere: its first line that differs at ``want``."""
    want = min(max(want, 0), len(lines))
    where = (
        f"{label}: hunk {number} of {path} ({hunk.header}, patch line {hunk.line}) does not apply"
    )
    differs = next(
        (i for i, line in enumerate(hunk.old) if lines[want + i : want + i + 1] != (line,)), None
    )
    if differs is None:  # it matches only where an earlier hunk of the file already applied
        return PatchError(f"{where}: its lines overlap hunk {number - 1}\n{_REGENERATE}")
    expected = hunk.old[differs]
    actual = lines[want + differs] if want + differs < len(lines) else None
    shown = _show(expected), "<end of file>" if actual is None else _show(actual)
    if shown[0] == shown[1]:  # they differ only in line endings or invisible bytes
        shown = repr(expected), repr(actual)
    return PatchError(
        f"{where}: expected at line {want + differs + 1}:\n    {shown[0]}\n"
        f"  found:\n    {shown[1]}\n{_REGENERATE}"
    )


def _show(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\n")


def _miscount(label: str, line: int, header: str, old: int, new: int) -> PatchError:
    return PatchError(
        f"{label}: patch line {line}: hunk does not match its header {header} "
        f"({old} old and {new} new lines); the patch is malformed or was edited "
        "by hand"
    )


def _no_hunks(label: str, header: str, line: int) -> PatchError:
    return PatchError(
        f"{label}: patch line {line}: {header} changes no content; "
        "renames, copies, mode changes and empty files are not supported"
    )


def _split(data: bytes) -> list[bytes]:
    """Lines with their endings; only "\\n" ends a line (a lone "\\r" is content)."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _read(target: Path, where: str) -> bytes:
    try:
        return target.read_bytes()
    except OSError as error:
        raise PatchError(f"{where}: cannot read {target}: {error.strerror}") from None


def _write(root: Path, path: str, content: bytes | None, label: str) -> None:
    target = root / path
    try:
        if content is None:
            target.unlink(missing_ok=True)  # missing: created and deleted by the same patch
            for parent in target.parents:  # like GNU patch, drop directories left empty
                if parent == root or any(parent.iterdir()):
                    break
                parent.rmdir()
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.write_atomically(target, content)
    except OSError as error:
        raise PatchError(f"{label}: writing {path} failed: {error}") from None
