"""The store's locks: the garbage-collection lock every open store holds, and the flocks
on entries and staging directories.

Every command holds the gc lock shared for as long as it has the store open, so an entry a
lookup found stays until the command ends; a collection turns its own shared lock into an
exclusive one and so waits for every other command to finish. An entry's lock is held while
it is placed or collected; a staging directory's while its writer lives. They are flocks:
the kernel drops them when the process dies, even by SIGKILL, which is how a leftover is
told from work in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from lockbox.errors import StoreError
from lockbox.progress import Progress
from lockbox.store.layout import Layout

_open_stores: dict[tuple[int, int], int] = {}
"""How many gc locks this process holds on each store, by the device and inode of the lock
file: a collection must not wait for a lock its own process holds."""


class GcLock:
    """The shared gc lock of one open store, taken (waiting while a collection runs) when it
    is made and held until :meth:`release`."""

    def __init__(self, paths: Layout, progress: Progress) -> None:
        self._root = paths.root
        self._progress = progress
        fd = os.open(paths.gc_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                progress.info(f"waiting for the garbage collection of {paths.root} to finish")
                fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        info = os.fstat(fd)
        self._key = (info.st_dev, info.st_ino)
        _open_stores[self._key] = _open_stores.get(self._key, 0) + 1
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        count = _open_stores.get(self._key, 0) - 1
        if count > 0:
            _open_stores[self._key] = count
        else:
            _open_stores.pop(self._key, None)

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None) -> Iterator[None]:
        """Turn the shared lock into an exclusive one until the block ends: wait (saying for
        how many, at most ``timeout`` seconds if given) until no other command has the store
        open."""
        fd = self._fd
        assert fd is not None, "the store is closed"
        if _open_stores.get(self._key, 0) > 1:
            raise StoreError(
                f"this process has the store at {self._root} open more than once; "
                "collect garbage only through its one open store"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A refused conversion has dropped the shared lock: nothing is held meanwhile.
            self._wait_exclusive(fd, timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)

    def _wait_exclusive(self, fd: int, timeout: float | None) -> None:
        others = _lock_holders(fd)
        what = (
            f"{others} other lockbox command{'s' if others != 1 else ''}"
            if others
            else "other lockbox commands"
        )
        self._progress.info(f"waiting for {what} using the store at {self._root} to finish")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    raise StoreError(
                        f"{what} still have the store at {self._root} open after "
                        f"{timeout:g} s; collect garbage when they have finished"
                    ) from None
                time.sleep(0.1)


@contextlib.contextmanager
def flock(path: Path, operation: int) -> Iterator[bool]:
    """Hold an flock on ``path``; yields False if a non-blocking attempt failed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise StoreError(
            f"cannot lock {path}: {error.strerror}; lockbox made no such "
            "file there: move it out of the store"
        ) from None
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def entry_lock(
    paths: Layout, path_name: str, blocking: bool = True
) -> contextlib.AbstractContextManager[bool]:
    """The lock of the entry ``path_name``, held while it is placed or collected."""
    flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
    return flock(paths.entry_lock(path_name), flags)


def _lock_holders(fd: int) -> int:
    """How many flocks are held on the file open as ``fd``, as ``/proc/locks`` lists them;
    0 where it cannot tell."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.readlines()
    except OSError:
        return 0
    return sum(
        1 for line in lines if "->" not in line and "FLOCK" in line and wanted in line.split()
    )
