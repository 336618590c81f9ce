"""Confining the paths a recipe, a project or a patch names to the tree they belong to.

Every relative path lockbox takes from its input — a recipe's copies, deletions,
substitutions and patches, the files a patch changes — names something inside one root:
the project for what is read, the output for what is written or removed. Such a path is
hostile until checked: ``../`` or an absolute name leaves the root outright, and a
symbolic link among its components (``hostetc -> /etc`` in a project, a link planted in
``site-packages`` by a dependency) leaves it silently, so that reading copies a host file
into the store and writing edits one. :func:`confined` walks a path component by
component with ``lstat`` and refuses all three; :func:`confined_glob` matches a pattern
the same way, never descending through a link. Links are not followed even when they
stay inside the root: the recipe can always name the real path, and one rule is easier to
trust than a resolver. The last component may be a link where the caller acts on the
link itself (copies or removes it), never on what it points to.

The trees checked here do not change while lockbox works on them (nothing runs between
the check and the use), so a checked path stays safe; writes into the output also open
their file with ``O_NOFOLLOW`` (:func:`lockbox.fs.open_for_writing`).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

from lockbox import fs
from lockbox.errors import PathError


def relative_parts(relative: str, key: str, *, within: str) -> tuple[str, ...]:
    """The components of ``relative``, refused when it is empty, absolute or climbs out
    with ``..``; ``.`` and empty components are dropped."""
    if "\0" in relative:
        raise PathError(key, relative, "contains a NUL byte")
    if relative.startswith("/"):
        raise PathError(key, relative, f"is absolute; give a path relative to {within}")
    parts = tuple(part for part in relative.split("/") if part not in ("", "."))
    if ".." in parts:
        raise PathError(key, relative, f"leads out of {within} ('..' is not allowed)")
    if not parts:
        raise PathError(key, relative, f"names {within} itself, not a path inside it")
    return parts


def confined(root: Path, relative: str, key: str, *, within: str, link_ok: bool = False) -> Path:
    """``root / relative``, once checked to stay inside ``root``.

    ``relative`` must be relative, without ``..``, and none of its existing components may
    be a symbolic link — except the last one with ``link_ok``, for a caller that acts on
    the link itself. Components that do not exist yet are allowed (a target to create);
    an existing one before the last must be a directory. ``key`` names where the path
    comes from in errors (``recipe app.delete[0]``), ``within`` what ``root`` is (``the
    project``). ``root`` itself is trusted, links and all."""
    parts = relative_parts(relative, key, within=within)
    path = root
    for index, part in enumerate(parts):
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            break
        except OSError as error:
            raise PathError(
                key, relative, f"cannot be read in {within}: {error.strerror}"
            ) from None
        last = index == len(parts) - 1
        shown = "/".join(parts[: index + 1])
        if stat.S_ISLNK(info.st_mode) and not (last and link_ok):
            raise PathError(key, relative, _through_link(path, shown, root, within))
        if not last and not stat.S_ISDIR(info.st_mode):
            raise PathError(key, relative, f"goes through {shown}, which is not a directory")
    return root.joinpath(*parts)


def confined_glob(root: Path, pattern: str, key: str, *, within: str) -> list[Path]:
    """The paths under ``root`` that ``pattern`` matches, sorted: ``*``, ``?`` and ``[…]``
    within a component, ``**`` for any number of directories (as :meth:`Path.glob`).

    Matching never descends through a symbolic link: a link is matched only as the last
    component (and then means the link itself). A literal component before the last that
    is a link is an error, as in :func:`confined`. ``root`` itself is never matched."""
    parts = relative_parts(pattern, key, within=within)
    current: list[Path] = [root]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        found: list[Path] = []
        for directory in current:
            if part == "**":
                found += _directories(directory)
            elif _magic(part):
                found += _matches(directory, part, directories_only=not last)
            else:
                path = directory / part
                try:
                    info = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if not last and stat.S_ISLNK(info.st_mode):
                    shown = os.path.relpath(path, root)
                    raise PathError(key, pattern, _through_link(path, shown, root, within))
                if last or stat.S_ISDIR(info.st_mode):
                    found.append(path)
        current = list(dict.fromkeys(found))
    return sorted(path for path in current if path != root)  # "**" alone: not the root


def _through_link(path: Path, shown: str, root: Path, within: str) -> str:
    target = os.readlink(path)
    resolved = Path(os.path.normpath(path.parent / target))
    leaves = "" if resolved.is_relative_to(root) else f", which leads out of {within}"
    return (
        f"goes through {shown}, a symbolic link to {target}{leaves}; lockbox follows "
        "no symbolic link in the paths it is given"
    )


def _magic(part: str) -> bool:
    return any(char in part for char in "*?[")


def _matches(directory: Path, pattern: str, *, directories_only: bool) -> list[Path]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        directory / entry.name
        for entry in entries
        if fnmatch.fnmatchcase(entry.name, pattern)
        and (not directories_only or entry.is_dir(follow_symlinks=False))
    ]


def _directories(top: Path) -> list[Path]:
    """``top`` and every directory below it, links to directories not followed."""
    found = [top]
    for directory, directories, _ in fs.walk(top):
        found += [Path(directory, name) for name in directories]
    return found
