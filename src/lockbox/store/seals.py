"""Sealing entries, and checking that they are still as they were sealed.

A staged tree is sealed before it is renamed into place (:func:`seal_tree`): read-only,
mtimes fixed, flushed to disk. Once it is in place, the status of every path of it is
recorded (:func:`remember`, :func:`lockbox.store.records.tree_seal`), so that before lockbox
uses an entry it can tell cheaply whether anything changed since (:func:`check`): only an
entry whose status changed is hashed again.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lockbox import fs
from lockbox.errors import StoreCorrupted
from lockbox.hashes import Sha256
from lockbox.progress import Progress
from lockbox.store import records
from lockbox.store.database import Database
from lockbox.store.entries import Entry
from lockbox.store.nar import nar_hash

SEALED_MTIME = 1
"""The modification time (seconds after the epoch) of every path of a sealed tree."""


def seal_tree(top: Path) -> None:
    """Make a staged tree immutable and durable: files 0444 (0555 if executable), mtimes
    fixed at 1 s past the epoch, then everything on its file system flushed to disk at once.
    The top directory stays writable until it is renamed, because moving a directory
    rewrites its ``..``."""
    times = (SEALED_MTIME, SEALED_MTIME)
    if stat.S_ISDIR(os.lstat(top).st_mode):
        # Bottom-up: a directory's mtime is fixed after what is in it.
        for directory, _, others in reversed(list(fs.walk(top))):
            for name in others:
                path = os.path.join(directory, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    mode = 0o555 if info.st_mode & stat.S_IXUSR else 0o444
                    if stat.S_IMODE(info.st_mode) != mode:
                        os.chmod(path, mode)
                if info.st_mtime != SEALED_MTIME:
                    os.utime(path, times, follow_symlinks=False)
            os.utime(directory, times)
            if directory != os.fspath(top):
                os.chmod(directory, 0o555)
    elif top.is_file() or top.is_symlink():
        if top.is_file() and not top.is_symlink():
            info = os.stat(top)
            os.chmod(top, 0o555 if info.st_mode & stat.S_IXUSR else 0o444)
        os.utime(top, times, follow_symlinks=False)
    fs.sync_file_system(top)


def remember(database: Database, entry: Entry) -> None:
    """Record what ``entry``'s tree looks like now that it is sealed and in place."""
    database.remember_seal(entry.path_name, records.tree_seal(str(entry.path)))


def check(database: Database, entries: tuple[Entry, ...], progress: Progress) -> None:
    """Fail unless each of ``entries`` is as it was registered, before lockbox uses it.

    The cheap check first: the status of every path of the entry (name, inode, size,
    mtime, mode: :func:`lockbox.store.records.tree_seal`) against the seal recorded when it
    was registered. Only when they differ — a file written, replaced, added, removed or
    made writable, or the store copied elsewhere (new inodes) — is the entry re-hashed:
    the same NAR hash makes the new status the seal, another raises
    :class:`~lockbox.errors.StoreCorrupted`. An entry registered before seals were kept
    is re-hashed once. A file rewritten with its size kept and its mtime and mode put
    back is not noticed here; ``lockbox store verify`` re-hashes everything."""
    for entry in entries:
        try:
            found = records.tree_seal(str(entry.path))
        except OSError:
            raise StoreCorrupted(
                f"the store entry {entry.path} is registered but missing; run "
                f"`lockbox store verify` and `lockbox store verify --repair` to remove "
                "it and what needs it, then build again"
            ) from None
        recorded = database.seal(entry.path_name)
        if recorded == found:
            continue
        progress.debug(
            f"re-hashing {entry.path_name}: its files changed status since it was registered"
            if recorded
            else f"re-hashing {entry.path_name}, registered without a seal"
        )
        nar = nar_hash(entry.path).sha256
        if nar != entry.nar_hash:
            raise StoreCorrupted(_corruption(entry, nar))
        remember(database, entry)


def _corruption(entry: Entry, found: Sha256) -> str:
    """What to say of ``entry``, whose content hashes to ``found`` now."""
    changed = unsealed_files(entry.path)
    if changed:
        shown = ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        )
        which = f"changed since: {shown}"
    else:
        which = "no file shows which changed (its mtime and mode were put back)"
    return (
        f"the store entry {entry.path} is corrupted: it was registered with NAR hash "
        f"{entry.nar_hash}, its content now hashes to {found}; {which}. Nothing was "
        "used from it. Run `lockbox store verify` to check the whole store, then "
        "`lockbox store verify --repair` to remove the corrupted entries and what needs "
        "them, and build again"
    )


def unsealed_files(top: Path) -> list[str]:
    """The paths under ``top`` (a store entry) that no longer look sealed: writable, or
    with another mtime than :func:`seal_tree` gives them. A guess at what changed: a file
    rewritten with its mtime and mode put back does not show."""
    if not stat.S_ISDIR(os.lstat(top).st_mode):
        return []
    found = []
    for directory, directories, others in fs.walk(top):
        for name in directories + others:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if info.st_mtime_ns != SEALED_MTIME * 1_000_000_000 or info.st_mode & 0o222:
                found.append(os.path.relpath(path, top))
    return sorted(found)
