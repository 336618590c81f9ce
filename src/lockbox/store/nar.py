"""Nix Archive (NAR) serialisation of a file tree, and its SHA-256.

The NAR format is Nix's canonical, deterministic serialisation of a path: only file type,
the executable bit, contents and symlink targets count; names are sorted bytewise. Hashing
a tree's NAR gives the same result as ``nix-hash --type sha256``, so any Nix user can check
the hashes lockbox declares.

The store hashes every tree it adds, so this is on the hot path. One mechanism serves all
three entry points: a reader thread walks the tree and writes the NAR into a few large,
reused buffers (file contents are read straight into them), and the calling thread hashes
or writes each buffer as it fills. ``hashlib`` and ``write`` release the GIL on big buffers,
so walking and hashing overlap.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from queue import SimpleQueue
from typing import BinaryIO

from lockbox.errors import NarError
from lockbox.hashes import Sha256


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


_MAGIC = _string(b"nix-archive-1")
_OPEN = _string(b"(")
_CLOSE = _string(b")")
_REGULAR = _OPEN + _string(b"type") + _string(b"regular")
_EXECUTABLE = _string(b"executable") + _string(b"")
_CONTENTS = _string(b"contents")
_SYMLINK = _OPEN + _string(b"type") + _string(b"symlink") + _string(b"target")
_DIRECTORY = _OPEN + _string(b"type") + _string(b"directory")
_REGULAR_HEADER = _REGULAR + _CONTENTS
_EXECUTABLE_HEADER = _REGULAR + _EXECUTABLE + _CONTENTS
_ENTRY = _string(b"entry") + _OPEN + _string(b"name")
_NODE = _string(b"node")
_PADDING = (b"", b"\0", b"\0" * 2, b"\0" * 3, b"\0" * 4, b"\0" * 5, b"\0" * 6, b"\0" * 7)

_BUFFER_SIZE = 1 << 20
_MAX_BUFFERS = 16
"""The reader may run this far ahead of the hasher: big files read faster than they hash,
small ones slower, and the slack lets the two even out."""
# O_NONBLOCK: a file swapped for a FIFO after the directory was listed must not hang open().
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class NarInfo:
    """The hash and size of a path's NAR serialisation."""

    sha256: Sha256
    """SHA-256 of the NAR bytes."""
    size: int
    """Length of the NAR in bytes."""


def iter_nar(path: Path) -> Iterator[bytes]:
    """Yield the NAR serialisation of ``path`` in chunks."""
    with _serialised(path) as chunks:
        for chunk in chunks:
            yield bytes(chunk)


def nar_hash(path: Path) -> NarInfo:
    """SHA-256 and size of the NAR serialisation of ``path``."""
    return _hash_nar(path, None)


def write_nar(path: Path, out: BinaryIO) -> NarInfo:
    """Write the NAR serialisation of ``path`` to ``out``; return its hash and size."""
    return _hash_nar(path, out.write)


def _hash_nar(path: Path, write: Callable[[memoryview], object] | None) -> NarInfo:
    hasher = hashlib.sha256()
    size = 0
    with _serialised(path) as chunks:
        for chunk in chunks:
            if write is not None:
                write(chunk)
            hasher.update(chunk)
            size += len(chunk)
    return NarInfo(Sha256(hasher.digest()), size)


@contextmanager
def _serialised(path: Path) -> Iterator[Iterator[memoryview]]:
    """The NAR of ``path`` as a series of buffers, each valid until the next one is taken.

    A reader thread fills the buffers; leaving the context early stops it.
    """
    buffers = _Buffers()

    def read() -> None:
        try:
            _serialise(os.fsencode(path), buffers)
            buffers.finish()
        except _Stopped:
            pass
        except RecursionError:
            buffers.fail(NarError(f"{path} is nested too deeply to serialise"))
        except BaseException as error:  # the consumer raises it in its own thread
            buffers.fail(error)

    reader = threading.Thread(target=read, name="nar-reader", daemon=True)
    reader.start()
    try:
        yield buffers.filled()
    finally:
        buffers.stop()
        reader.join()


# The tree, as NAR bytes --------------------------------------------------------------------


def _serialise(path: bytes, out: _Buffers) -> None:
    out.write(_MAGIC)
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise _unreadable(path, error) from None
    if stat.S_ISREG(mode):
        _regular(path, out, b"", b"")
    elif stat.S_ISDIR(mode):
        _directory(path, out)
    elif stat.S_ISLNK(mode):
        out.write(_symlink(path))
    else:
        raise _unsupported(path)


def _directory(path: bytes, out: _Buffers) -> None:
    out.write(_DIRECTORY)
    for entry in _sorted_entries(path):
        child = entry.path
        framing = _ENTRY + _string(entry.name) + _NODE
        # The type comes from the directory listing, without a stat; files come first
        # because most entries are files.
        try:
            is_file = entry.is_file(follow_symlinks=False)
            is_dir = not is_file and entry.is_dir(follow_symlinks=False)
            is_symlink = not (is_file or is_dir) and entry.is_symlink()
        except OSError as error:
            raise _unreadable(child, error) from None
        if is_file:
            _regular(child, out, framing, _CLOSE)
        elif is_dir:
            out.write(framing)
            _directory(child, out)
            out.write(_CLOSE)
        elif is_symlink:
            out.write(framing + _symlink(child) + _CLOSE)
        else:
            raise _unsupported(child)
    out.write(_CLOSE)


def _sorted_entries(path: bytes) -> list[os.DirEntry[bytes]]:
    # Not lockbox.fs.walk: the archive sorts names as bytes (str order differs for names
    # that are not UTF-8), and keeps each entry's type from the listing, without a stat.
    try:
        with os.scandir(path) as scan:
            return sorted(scan, key=_name)
    except OSError as error:
        raise _unreadable(path, error) from None


_name = attrgetter("name")


def _regular(path: bytes, out: _Buffers, before: bytes, after: bytes) -> None:
    """Write a regular file's node, with ``before`` and ``after`` it (the framing of its
    directory entry, if any) in the same writes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise _unreadable(path, error) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced since its directory was listed
            raise _unsupported(path)
        size = info.st_size
        header = _EXECUTABLE_HEADER if info.st_mode & stat.S_IXUSR else _REGULAR_HEADER
        out.write(before + header + struct.pack("<Q", size))
        # One byte more than expected is asked for, so that a file that grew is noticed
        # without an extra read.
        read = out.read_from(fd, size + 1)
    except OSError as error:
        raise _unreadable(path, error) from None
    finally:
        os.close(fd)
    if read != size:
        raise NarError(f"{os.fsdecode(path)} changed size while it was being read")
    out.write(_PADDING[-size % 8] + _CLOSE + after)


def _symlink(path: bytes) -> bytes:
    try:
        target = os.readlink(path)
    except OSError as error:
        raise _unreadable(path, error) from None
    return _SYMLINK + _string(target) + _CLOSE


def _unreadable(path: bytes, error: OSError) -> NarError:
    return NarError(f"cannot read {os.fsdecode(path)}: {error.strerror}")


def _unsupported(path: bytes) -> NarError:
    return NarError(
        f"{os.fsdecode(path)} is neither a regular file, a directory nor a symlink; "
        "a NAR cannot hold sockets, FIFOs or device files"
    )


# The buffers between the reader thread and the consumer ------------------------------------


class _Stopped(Exception):
    """The consumer went away; the reader thread unwinds quietly."""


class _Buffers:
    """A ring of fixed-size buffers: the reader thread fills them, the consumer empties them.

    Hand-offs go through two queues, so each side blocks only when the other is behind.
    """

    def __init__(self) -> None:
        self._free: SimpleQueue[bytearray] = SimpleQueue()
        # Filled buffers with their length, the reader's error, or None once it is done.
        self._full: SimpleQueue[tuple[bytearray, int] | BaseException | None] = SimpleQueue()
        self._allocated = 1
        self._buffer = bytearray(_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._used = 0
        self._stopped = False

    # The reading side --------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        # Nothing written is longer than a buffer: a name has at most 255 bytes, a symlink
        # target at most 4095; file contents go through read_from.
        end = self._used + len(data)
        if end > _BUFFER_SIZE:
            self._flush()
            end = len(data)
        self._buffer[self._used : end] = data
        self._used = end

    def read_from(self, fd: int, limit: int) -> int:
        """Read ``fd`` straight into the buffers, up to ``limit`` bytes or its end."""
        total = 0
        while total < limit:
            if self._used == _BUFFER_SIZE:
                self._flush()
            wanted = min(limit - total, _BUFFER_SIZE - self._used)
            got = os.readv(fd, [self._view[self._used : self._used + wanted]])
            self._used += got
            total += got
            if got < wanted:  # a regular file reads short only at its end
                break
        return total

    def finish(self) -> None:
        self._full.put((self._buffer, self._used))
        self._full.put(None)

    def fail(self, error: BaseException) -> None:
        self._full.put(error)

    def _flush(self) -> None:
        self._full.put((self._buffer, self._used))
        if self._allocated < _MAX_BUFFERS and self._free.empty():
            self._allocated += 1
            self._buffer = bytearray(_BUFFER_SIZE)
        else:
            self._buffer = self._free.get()
        if self._stopped:
            raise _Stopped
        self._view = memoryview(self._buffer)
        self._used = 0

    # The consuming side ------------------------------------------------------------------
    def filled(self) -> Iterator[memoryview]:
        while (item := self._full.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buffer, used = item
            yield memoryview(buffer)[:used]
            self._free.put(buffer)

    def stop(self) -> None:
        """Make the reader give up at its next hand-off, and wake it if it waits for one."""
        self._stopped = True
        self._free.put(bytearray())
