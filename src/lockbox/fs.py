"""File-system steps that a crash cannot leave half done, and the kill points that test it.

Every step that makes something visible — a rename into place, a database commit — goes
through :func:`step` first. In normal use it does nothing. With ``LOCKBOX_KILL_AFTER_STEP=N``
in the environment the process kills itself with SIGKILL at its N-th step, which is how the
crash tests stop a command at each of its steps in turn; ``LOCKBOX_STEPS_LOG=FILE`` appends
each step's name to ``FILE``, so that a test knows how many steps a command takes;
``LOCKBOX_STOP_AT_STEP`` stops the process (SIGSTOP) at its N-th step, or at the first step
whose name matches it as a glob pattern, for a test to do something meanwhile and then let it
continue (SIGCONT).

:func:`replace_tree` puts a new tree in place of an old one in one system call
(``renameat2(RENAME_EXCHANGE)``): at every instant the target is either the old tree or the
new one, never missing.

:func:`work_beside` gives the directory a new tree is written in before it replaces its
target: beside the target (so on its file system), named ``.NAME.lockbox-TOKEN`` with a
random 32-digit token, and locked (``flock``) while its writer lives. A writer killed
midway leaves it behind; the next writer for the same target removes every such leftover
whose lock is free, and nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import fnmatch
import functools
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

KILL_AFTER_STEP = "LOCKBOX_KILL_AFTER_STEP"
"""Environment variable: kill the process (SIGKILL) at its N-th step (1-based)."""

STEPS_LOG = "LOCKBOX_STEPS_LOG"
"""Environment variable: a file each step's name is appended to."""

STOP_AT_STEP = "LOCKBOX_STOP_AT_STEP"
"""Environment variable: stop the process (SIGSTOP) at its N-th step (1-based), or at the
first step whose name matches it (a glob pattern)."""

_steps = 0

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def step(what: str) -> None:
    """Mark one step that makes something visible (a rename, a commit) as about to happen."""
    global _steps
    from lockbox.environment import forget_stop_point, kill_point_settings

    kill_at, log, stop_at = kill_point_settings()
    if not kill_at and not log and not stop_at:
        return
    _steps += 1
    if log:
        with open(log, "a", encoding="utf-8") as sink:
            sink.write(f"{os.getpid()} {_steps} {what}\n")
    if kill_at and _steps == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    if stop_at and (
        _steps == int(stop_at) if stop_at.isdigit() else fnmatch.fnmatchcase(what, stop_at)
    ):
        forget_stop_point()  # once: the first match
        os.kill(os.getpid(), signal.SIGSTOP)


def rename(source: Path, target: Path) -> None:
    """``os.rename`` as one step: fails if ``target`` is a non-empty directory."""
    step(f"rename {target.name}")
    os.rename(source, target)


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def exchange(first: Path, second: Path) -> None:
    """Swap two existing paths atomically (``renameat2(RENAME_EXCHANGE)``); both must be on
    one file system. Raises OSError where the kernel or file system cannot."""
    function = _renameat2()
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(first))
    step(f"exchange {second.name}")
    if (
        function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
        != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_tree(new: Path, target: Path) -> Path | None:
    """Put ``new`` where ``target`` is, in one atomic step whether or not ``target`` exists.

    Returns where the old tree now is (``new``'s path) for the caller to remove, or None if
    there was none. The caller decides whether ``target`` may be replaced before calling."""
    if os.path.lexists(target):
        exchange(new, target)
        return new
    rename(new, target)
    return None


_WORK_MARK = ".lockbox-"
_TOKEN_DIGITS = 32


def _work_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(
        rf"\.{re.escape(target.name)}{re.escape(_WORK_MARK)}[0-9a-f]{{{_TOKEN_DIGITS}}}"
    )


@contextlib.contextmanager
def work_beside(target: Path) -> Iterator[Path]:
    """A new, empty, private directory beside ``target`` to write its replacement in,
    locked while the ``with`` block runs and removed (with whatever is left in it) after.

    The trees that replace ``target`` go in it as subdirectories, so that after
    :func:`replace_tree` the old tree is inside it too, under the same lock. Leftovers of
    writers for the same target that were killed are removed first (:func:`remove_leftovers`)."""
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    while True:
        work = target.parent / f".{target.name}{_WORK_MARK}{secrets.token_hex(_TOKEN_DIGITS // 2)}"
        os.mkdir(work, 0o700)
        descriptor = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        # Between mkdir and flock another writer's sweep may have taken it for a leftover.
        if _same(descriptor, work):
            break
        os.close(descriptor)
    try:
        step(f"work {target.name}")
        yield work
    finally:
        from lockbox.store.store import remove_tree

        try:
            remove_tree(work)
        finally:
            os.close(descriptor)


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the work directories of ``target``'s writers that died: those beside it named
    exactly as :func:`work_beside` names them, real directories owned by this user, whose
    lock is free. Returns what was removed."""
    from lockbox.store.store import remove_tree

    target = target.absolute()
    pattern = _work_pattern(target)
    removed = []
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        path = target.parent / name
        try:
            descriptor = os.open(
                path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            )
        except OSError:  # a symlink, a file, or gone
            continue
        try:
            if os.fstat(descriptor).st_uid != os.geteuid():
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if _same(descriptor, path):
                step(f"remove leftover {target.name}")
                remove_tree(path)
                removed.append(path)
        finally:
            os.close(descriptor)
    return removed


def _same(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.lstat(path))
    except FileNotFoundError:
        return False
