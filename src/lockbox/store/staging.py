"""Staging directories: where a writer makes a tree before it becomes an entry.

Each is ``tmp/<token>`` beside the lock file ``tmp/<token>.lock`` its writer holds for as
long as it exists, so that only the staging directory of a writer that died is ever removed
by another (:func:`remove_dead`). Anything else in ``tmp`` is not lockbox's: it is left
alone and reported (:func:`unknown`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from lockbox import fs
from lockbox.progress import Progress
from lockbox.store import layout
from lockbox.store.layout import Layout
from lockbox.store.locks import flock

_TOKEN = re.compile(r"[0-9a-f]{32}")
"""The name of a staging directory (its lock file adds ``.lock``)."""


@contextlib.contextmanager
def staging(paths: Layout, remove: Callable[[Path], None]) -> Iterator[Path]:
    """A fresh, empty staging directory, locked while the block runs and removed (with
    ``remove``) after, unless it was moved into place meanwhile."""
    while True:
        token = uuid.uuid4().hex
        lock_path = paths.staging_lock(token)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Between the open and the flock, another process may have taken the fresh lock
        # file for a dead writer's and removed it: then this lock protects nothing.
        if fs.names_file(lock_path, fd):
            break
        os.close(fd)
    stage = paths.staging(token)
    try:
        stage.mkdir()
        yield stage
    finally:
        try:
            remove(stage)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def remove_dead(paths: Layout, remove: Callable[[Path], None], progress: Progress) -> None:
    """Remove the staging directories (and lock files) whose lock is free: their writers
    died."""
    tokens = {name.removesuffix(layout.LOCK_SUFFIX) for name in os.listdir(paths.tmp)}
    for token in sorted(t for t in tokens if _TOKEN.fullmatch(t)):
        lock_path = paths.staging_lock(token)
        if os.path.lexists(lock_path) and not fs.is_plain_file(lock_path):
            continue  # not a lock lockbox made: unknown
        with flock(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
            if got:
                stage = paths.staging(token)
                if os.path.lexists(stage):
                    progress.debug(f"removing unfinished staging directory {stage}")
                remove(stage)
                lock_path.unlink(missing_ok=True)


def unknown(paths: Layout) -> list[Path]:
    """What is in ``tmp`` that is named neither as a staging directory nor as its lock."""
    tmp = paths.tmp
    return [
        tmp / name
        for name in sorted(os.listdir(tmp))
        if not _TOKEN.fullmatch(name.removesuffix(layout.LOCK_SUFFIX))
        or (name.endswith(layout.LOCK_SUFFIX) and not fs.is_plain_file(tmp / name))
    ]
