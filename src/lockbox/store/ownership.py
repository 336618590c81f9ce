"""What makes a directory a store lockbox owns: its marker, and its owner.

A store is a directory with the marker ``.lockbox/store.toml``, made by lockbox in a missing
or empty directory (:func:`claim`); a non-empty directory without one is refused, never
touched. A store, and its working directory, must belong to the user running lockbox and be
writable by no one else: another user could otherwise change what lockbox builds and runs.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tomllib
import uuid
from pathlib import Path

from lockbox import fs
from lockbox.errors import StoreError
from lockbox.store import layout
from lockbox.store.layout import Layout

_FORMAT = 1
_MARKER_TEXT = f"""\
# A lockbox store: lockbox made this directory and alone changes what is in it.
format = {_FORMAT}
"""
_CREATING = re.compile(re.escape(layout.META + layout.CREATING_SUFFIX) + "[0-9a-f]{32}")
"""A store being created: its metadata directory before it is renamed into place."""


def claim(root: Path) -> None:
    """Make sure ``root`` is a store: one with a marker, or a missing or empty directory,
    made a store here. Refuses any other directory without touching it. Two processes
    creating one store take turns through an flock on ``root`` itself."""
    paths = Layout(root)
    try:
        if not os.path.lexists(root):
            root.mkdir(parents=True)
            os.chmod(root, 0o755)  # whatever the umask: no one else may write a store
        _check_owner(root)
        if os.path.isdir(paths.meta) and not os.path.islink(paths.meta):
            _check_owner(paths.meta)
        if _read_marker(root):
            return
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise StoreError(
            f"cannot create the store at {root}: {error.strerror}; "
            "choose another place with --store or LOCKBOX_STORE"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _read_marker(root):
            return
        names = sorted(os.listdir(root))
        meta = paths.meta
        if (
            layout.META in names
            and not meta.is_symlink()
            and meta.is_dir()
            and fs.is_plain_file(paths.database)
        ):
            # A store made before stores had a marker: its database says it is one. Taking
            # it over removes nothing: only what a pending record proves is ever removed.
            # Not lockbox.fs.write_atomically: the rename is one of the store's steps.
            staged = meta / f".{layout.MARKER}.{uuid.uuid4().hex}"
            staged.write_text(_MARKER_TEXT, encoding="utf-8")
            fs.rename(staged, paths.marker)
            return
        for name in names:
            if _CREATING.fullmatch(name):  # a creation that died (the flock is ours)
                fs.remove_tree(root / name)
        if any(not _CREATING.fullmatch(name) for name in names):
            raise StoreError(
                f"{root} is not a lockbox store (it has no {layout.META}/{layout.MARKER}) and is not "
                "empty; lockbox makes a store only in a new or empty directory, and never "
                "touches files it did not make: choose another place with --store or "
                "LOCKBOX_STORE"
            )
        creating = paths.creating(uuid.uuid4().hex)
        creating.mkdir(0o755)
        os.chmod(creating, 0o755)
        (creating / layout.MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        fs.sync_directory(creating)
        fs.rename(creating, meta)
        fs.sync_directory(root)
    except OSError as error:
        raise StoreError(
            f"cannot create the store at {root}: {error.strerror}; "
            "choose another place with --store or LOCKBOX_STORE"
        ) from None
    finally:
        os.close(fd)


def _check_owner(path: Path) -> None:
    """Refuse a store another user could change: ``path`` (the store or its working
    directory) must be a directory of the user running lockbox that no one else may write."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(
            f"{path} is not a directory; choose another place for the store "
            "with --store or LOCKBOX_STORE"
        )
    if info.st_uid != os.geteuid():
        raise StoreError(
            f"{path} belongs to user {info.st_uid}, not to the user running lockbox "
            f"({os.geteuid()}): another user could change what lockbox builds and runs; "
            "use a store of your own with --store or LOCKBOX_STORE"
        )
    if info.st_mode & 0o022:
        raise StoreError(
            f"{path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}), who "
            f"could change what lockbox builds and runs; make it yours alone "
            f"(chmod go-w {path}) or choose another store"
        )


def _read_marker(root: Path) -> bool:
    """Whether ``root`` has a store marker of the format this lockbox knows."""
    paths = Layout(root)
    meta, marker = paths.meta, paths.marker
    if meta.is_symlink() or not fs.is_plain_file(marker):
        return False
    try:
        found = tomllib.loads(marker.read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StoreError(f"cannot read the store marker {marker}: {error}") from None
    if found != _FORMAT:
        raise StoreError(
            f"the store at {root} has format {found!r}, this lockbox knows {_FORMAT}; "
            "use a matching lockbox or another --store"
        )
    return True
