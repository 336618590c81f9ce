"""The file-system helpers of lockbox: one for each idea, used wherever that idea is.

- :func:`walk`: a tree, top-down and sorted, never through a symbolic link;
- :func:`copy_tree`: a file, link or tree copied (or hardlinked), links copied as links;
- :func:`replacing` and :func:`write_atomically`: a file put in place of another in one
  step, written beside it first and removed if writing fails;
- :func:`replace_tree` and :func:`work_beside`: the same for whole trees;
- :func:`remove_tree`: a (read-only) tree removed without following a link;
- :func:`make_directory` and :func:`open_for_writing`: writing that never goes through a
  link; :func:`sync_directory` and :func:`sync_file_system`: making it durable.

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

Two modules keep walks of their own, for reasons given where they are:
:mod:`lockbox.store.nar` (the archive's order is that of the names' bytes) and
:mod:`lockbox.store.records` (imported by the shortcut, which imports nothing it can avoid).
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
import shutil
import signal
import stat
from collections.abc import Callable, Container, Iterator
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
    global _steps  # noqa: PLW0603 the process's count of steps, which the tests number
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
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = _libc()
        if libc is None:
            return None
        function = libc.renameat2
    except AttributeError:
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
        if names_file(work, descriptor):
            break
        os.close(descriptor)
    try:
        step(f"work {target.name}")
        yield work
    finally:
        try:
            remove_tree(work)
        finally:
            os.close(descriptor)


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the work directories of ``target``'s writers that died: those beside it named
    exactly as :func:`work_beside` names them, real directories owned by this user, whose
    lock is free. Returns what was removed."""
    target = target.absolute()
    pattern = _work_pattern(target)
    removed: list[Path] = []
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
            if names_file(path, descriptor):
                step(f"remove leftover {target.name}")
                remove_tree(path)
                removed.append(path)
        finally:
            os.close(descriptor)
    return removed


def names_file(path: str | os.PathLike[str], descriptor: int) -> bool:
    """Whether ``path`` still names the file open as ``descriptor`` (nothing took its place)."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.lstat(path))
    except FileNotFoundError:
        return False


def is_plain_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


# Walking ------------------------------------------------------------------------------------
def walk(
    top: str | os.PathLike[str], *, skip_unreadable: bool = False
) -> Iterator[tuple[str, list[str], list[str]]]:
    """Every directory of the tree ``top`` (a directory), top-down: its path, the names of
    the directories in it and the names of everything else in it (files, symbolic links —
    to directories too —, anything else), each list sorted.

    As :func:`os.walk` without ``followlinks`` but that a link is never among the
    directories, so no caller need test for one, and that errors are raised, not skipped:
    a tree lockbox reads or writes is read whole. Only with ``skip_unreadable`` is a
    directory this user may not read left out, for a host tree (``/usr`` has some). The
    directories a caller removes from the list it was given are not entered. A stack, not
    recursion: a tree may be deeper than Python's recursion limit."""
    pending = [os.fspath(top)]
    while pending:
        directory = pending.pop()
        directories: list[str] = []
        others: list[str] = []
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    kind = directories if entry.is_dir(follow_symlinks=False) else others
                    kind.append(entry.name)
        except PermissionError:
            if not skip_unreadable:
                raise
            continue
        directories.sort()
        others.sort()
        yield directory, directories, others
        pending.extend(os.path.join(directory, name) for name in reversed(directories))


# Copying ------------------------------------------------------------------------------------
Ignore = Callable[[str, list[str]], Container[str]]
"""Which of the names in a directory a copy leaves out, as :func:`shutil.copytree` asks."""


def copy_tree(
    source: Path,
    target: Path,
    *,
    link: bool = False,
    ignore: Ignore | None = None,
    preserve: bool = False,
) -> None:
    """Copy the file, symbolic link or tree ``source`` to ``target``, whose parent exists.

    Links are copied as links, never followed. A regular file is copied with mode 0755 if
    its owner may run it, 0644 otherwise — or, with ``link``, hardlinked (what a store entry
    holds never changes) — and with ``preserve`` keeps its mode and times, as directories
    do (:func:`shutil.copystat`): a copy a build reads looks as the original does.
    ``ignore`` leaves names out below ``source``, as in :func:`shutil.copytree`.

    What is there already is merged into, never written through: a directory is made
    unless it is one, a link or file in its place is refused (:func:`make_directory`), a
    file is never opened through a link (:func:`open_for_writing`). Anything but a file,
    directory or link (a socket, a pipe, a device) is refused with
    :class:`shutil.SpecialFileError`, naming it in its ``filename``."""
    info = os.lstat(source)
    if not stat.S_ISDIR(info.st_mode):
        _copy_entry(os.fspath(source), os.fspath(target), info, link, preserve)
        return
    made: list[tuple[str, str]] = []
    for directory, directories, others in walk(source):
        relative = os.path.relpath(directory, source)
        destination = os.path.normpath(os.path.join(target, relative))
        make_directory(destination)
        left_out = ignore(directory, [*directories, *others]) if ignore is not None else ()
        directories[:] = [name for name in directories if name not in left_out]
        for name in others:
            if name in left_out:
                continue
            path = os.path.join(directory, name)
            _copy_entry(path, os.path.join(destination, name), os.lstat(path), link, preserve)
        made.append((directory, destination))
    if preserve:  # after what is in them: writing there changed their times
        for directory, destination in reversed(made):
            shutil.copystat(directory, destination)


def _copy_entry(source: str, target: str, info: os.stat_result, link: bool, preserve: bool) -> None:
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
        if preserve:
            shutil.copystat(source, target, follow_symlinks=False)
    elif not stat.S_ISREG(info.st_mode):
        raise shutil.SpecialFileError(
            errno.EINVAL, "only regular files, directories and symbolic links are copied", source
        )
    elif link:
        os.link(source, target)
    else:
        mode = 0o755 if info.st_mode & stat.S_IXUSR else 0o644
        with (
            open(source, "rb") as reading,
            os.fdopen(open_for_writing(target, mode), "wb") as writing,
        ):
            shutil.copyfileobj(reading, writing, 1 << 20)
            os.fchmod(writing.fileno(), mode)
        if preserve:
            shutil.copystat(source, target)


def make_directory(path: str | os.PathLike[str]) -> None:
    """Make the directory ``path`` unless it is one; a link or a file there is refused
    (``NotADirectoryError``), so nothing written below it can land elsewhere."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotADirectoryError(
                errno.ENOTDIR, "it exists and is not a directory", os.fspath(path)
            ) from None


def open_for_writing(path: str | os.PathLike[str], mode: int = 0o644) -> int:
    """A descriptor of ``path`` opened for writing (created or truncated), refusing to
    write through a symbolic link at ``path`` (``O_NOFOLLOW``)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


# Writing in one step ------------------------------------------------------------------------
@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A free name beside ``path`` (on its file system) for the caller to make its
    replacement at — write a file, copy one, link one; when the block ends it is renamed
    over ``path``, in one step, and if the block fails it is removed. A reader sees the old
    ``path`` or the new one, never a part of it; a link at ``path`` is replaced, never
    written through."""
    temporary = path.with_name(f".{path.name}{_WORK_MARK}{secrets.token_hex(8)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_atomically(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Put ``data`` (text is written as UTF-8) at ``path`` in one step (:func:`replacing`).
    The file keeps the mode of the one it replaces; a new one gets ``mode``."""
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode & 0o7777
    if isinstance(data, str):
        data = data.encode("utf-8")
    with replacing(path) as temporary:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(temporary, flags, 0o600), "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), mode)


# Removing -----------------------------------------------------------------------------------
def remove_tree(path: Path) -> None:
    """Delete a (possibly read-only) tree, or a single file or symlink.

    Symbolic links are removed, never followed, at every level: the walk goes through
    directory descriptors opened with ``O_NOFOLLOW``, so even a directory swapped for a link
    while the tree is being removed takes nothing outside the tree with it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _remove_at(parent, path.name)
    finally:
        os.close(parent)


def _remove_at(parent: int, name: str) -> None:
    """Remove the entry ``name`` of the directory open as ``parent``, depth first, with a
    stack instead of recursion (a tree may be deeper than Python's recursion limit)."""
    top = _open_directory(parent, name)
    if top is None:
        return
    stack: list[tuple[int, str, list[str]]] = [(top, name, sorted(os.listdir(top)))]
    try:
        while stack:
            fd, own_name, children = stack[-1]
            if not children:
                stack.pop()
                os.close(fd)
                os.rmdir(own_name, dir_fd=stack[-1][0] if stack else parent)
                continue
            child = children.pop()
            opened = _open_directory(fd, child)
            if opened is not None:
                stack.append((opened, child, sorted(os.listdir(opened))))
    except BaseException:
        for fd, _name, _children in stack:
            os.close(fd)
        raise


def _open_directory(parent: int, name: str) -> int | None:
    """Open ``name`` in ``parent`` if it is a real directory, made writable so that its
    contents can go; otherwise unlink it (a file, a symlink) and return None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent)
        return None
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, 0o700)  # not its owner: removing fails below if it is not writable
    return fd


# Making it durable --------------------------------------------------------------------------
def sync_directory(path: Path) -> None:
    """Flush ``path``'s directory entries to disk: what was renamed or created in it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file_system(path: Path) -> None:
    """Flush every file of the file system holding ``path`` to disk: one ``syncfs`` call
    instead of an ``fsync`` per file, which costs seconds on a tree of 30 000 files."""
    fd = os.open(path if path.is_dir() else path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is not None:
            syncfs.argtypes = [ctypes.c_int]
            if syncfs(fd) == 0:
                return
        os.sync()
    finally:
        os.close(fd)
