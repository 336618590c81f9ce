"""Nix Archive (NAR) serialisation of a file tree, and its SHA-256.

The NAR format is Nix's canonical, deterministic serialisation of a path: only file type,
the executable bit, contents and symlink targets count; names are sorted bytewise. Hashing
a tree's NAR gives the same result as ``nix-hash --type sha256``, so any Nix user can check
the hashes lockbox declares.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
_ENTRY = _string(b"entry") + _OPEN + _string(b"name")
_NODE = _string(b"node")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class NarInfo:
    """The hash and size of a path's NAR serialisation."""

    sha256: Sha256
    """SHA-256 of the NAR bytes."""
    size: int
    """Length of the NAR in bytes."""


def iter_nar(path: Path) -> Iterator[bytes]:
    """Yield the NAR serialisation of ``path`` in chunks."""
    yield _MAGIC
    yield from _node(os.fsencode(path))


def _node(path: bytes) -> Iterator[bytes]:
    try:
        info = os.lstat(path)
    except OSError as error:
        raise NarError(f"cannot read {os.fsdecode(path)}: {error.strerror}") from None
    mode = info.st_mode
    if stat.S_ISREG(mode):
        header = _REGULAR + (_EXECUTABLE if mode & stat.S_IXUSR else b"") + _CONTENTS
        yield header + struct.pack("<Q", info.st_size)
        written = 0
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                written += len(chunk)
                yield chunk
        if written != info.st_size:
            raise NarError(f"{os.fsdecode(path)} changed size while it was being read")
        yield b"\0" * (-written % 8) + _CLOSE
    elif stat.S_ISLNK(mode):
        yield _SYMLINK + _string(os.readlink(path)) + _CLOSE
    elif stat.S_ISDIR(mode):
        yield _DIRECTORY
        for name in sorted(os.listdir(path)):
            yield _ENTRY + _string(name) + _NODE
            yield from _node(path + b"/" + name)
            yield _CLOSE
        yield _CLOSE
    else:
        raise NarError(
            f"{os.fsdecode(path)} is neither a regular file, a directory nor a symlink; "
            "a NAR cannot hold sockets, FIFOs or device files"
        )


def nar_hash(path: Path) -> NarInfo:
    """SHA-256 and size of the NAR serialisation of ``path``."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in iter_nar(path):
        hasher.update(chunk)
        size += len(chunk)
    return NarInfo(Sha256(hasher.digest()), size)


def write_nar(path: Path, out: BinaryIO) -> NarInfo:
    """Write the NAR serialisation of ``path`` to ``out``; return its hash and size."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in iter_nar(path):
        out.write(chunk)
        hasher.update(chunk)
        size += len(chunk)
    return NarInfo(Sha256(hasher.digest()), size)
