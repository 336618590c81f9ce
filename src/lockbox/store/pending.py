"""Pending records: the proof that a directory in the store's root is lockbox's own while
it is not registered.

A writer writes ``pending/<path name>`` (durably, under the entry's lock) before it renames
its staged tree into place, and drops it once the row is committed; a collector writes it
before the row goes and drops it once the directory is gone. So a directory of the root
without a row is removed only if its record is there and its entry lock is free: its writer
or collector died (:func:`remove_dead`). A record never names a path: only a name that is
a store path name, in this one directory, is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lockbox import fs
from lockbox.progress import Progress
from lockbox.store.entries import is_path_name
from lockbox.store.layout import Layout
from lockbox.store.locks import entry_lock


def write(paths: Layout, path_name: str) -> None:
    """Record, durably, that ``ROOT/<path_name>`` may soon be on disk unregistered: the
    proof that lockbox made it, should its writer die. Called with the entry lock held."""
    fs.step(f"pending {path_name}")
    fd = os.open(paths.pending_record(path_name), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.close(fd)
    fs.sync_directory(paths.pending)


def drop(paths: Layout, path_name: str) -> None:
    fs.step(f"settled {path_name}")
    paths.pending_record(path_name).unlink(missing_ok=True)


def recorded(paths: Layout, path_name: str) -> bool:
    """Whether the record of ``path_name`` is there."""
    return os.path.isfile(paths.pending_record(path_name))


def placing(paths: Layout) -> set[str]:
    """The path names whose records are there: entries being placed or collected."""
    pending = paths.pending
    return {
        name
        for name in os.listdir(pending)
        if is_path_name(name) and fs.is_plain_file(pending / name)
    }


def remove_dead(
    paths: Layout,
    registered: Callable[[str], bool],
    remove: Callable[[Path], None],
    progress: Progress,
) -> None:
    """Remove the entry directories whose record is there, whose lock is free and that
    have no row (``registered``), and drop the records of writers that died."""
    pending = paths.pending
    for path_name in sorted(os.listdir(pending)):
        if not is_path_name(path_name) or not fs.is_plain_file(pending / path_name):
            continue
        with entry_lock(paths, path_name, blocking=False) as got:
            # Under the lock: its writer is gone, and has committed or never will.
            if got:
                leftover = paths.entry(path_name)
                if not registered(path_name) and os.path.lexists(leftover):
                    progress.debug(f"removing unregistered leftover {leftover}")
                    remove(leftover)
                drop(paths, path_name)


def unknown(paths: Layout, placing: set[str]) -> list[Path]:
    """What is in ``pending`` that is not the record of an entry being placed."""
    return [
        paths.pending / name for name in sorted(os.listdir(paths.pending)) if name not in placing
    ]
