"""Garbage-collection roots, and what they keep alive.

A root is a symbolic link ``roots/<name>`` to an entry; it keeps that entry and every entry
it references, transitively (:func:`live`). A build roots what it made under the
application's name, so that ``lockbox gc`` keeps the latest build of each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from lockbox import fs
from lockbox.errors import StoreError
from lockbox.store.entries import Entry
from lockbox.store.layout import Layout


def add(paths: Layout, root_name: str, entry: Entry, stage: Path) -> Path:
    """Make (or move) the root ``root_name`` (a checked name:
    :func:`lockbox.store.entries.check_name`) to
    ``entry``, the new link made in ``stage`` (a staging directory) and renamed over the old
    in one step."""
    link = paths.gc_root(root_name)
    # Made in a staging directory, not beside the link (lockbox.fs.replacing): what a
    # writer killed here leaves is swept with its staging directory.
    os.symlink(entry.path, stage / "root")
    fs.step(f"root {root_name}")
    os.replace(stage / "root", link)
    return link


def remove(paths: Layout, root_name: str) -> None:
    link = paths.gc_root(root_name)
    if not link.is_symlink():
        raise StoreError(f"there is no root named {root_name!r} in {paths.root}")
    fs.step(f"unroot {root_name}")
    link.unlink()


def read(paths: Layout) -> dict[str, str]:
    """Root name -> path name of the entry it protects (which may be gone)."""
    result = {}
    for link in sorted(paths.roots.iterdir()):
        if link.is_symlink() and not link.name.startswith("."):
            result[link.name] = Path(os.readlink(link)).name
    return result


def live(entries: Iterable[Entry], roots: Mapping[str, str]) -> set[str]:
    """Path names of ``entries`` reachable from ``roots`` through references."""
    by_name = {entry.path_name: entry for entry in entries}
    stack = [name for name in roots.values() if name in by_name]
    reachable: set[str] = set()
    while stack:
        name = stack.pop()
        if name in reachable:
            continue
        reachable.add(name)
        stack.extend(ref for ref in by_name[name].references if ref in by_name)
    return reachable
