"""Layers: one per part of the closure, written as a tar, compressed, hashed on the way.

:mod:`lockbox.image.oci` writes one layer for each store entry of the closure (the
interpreter, the dependency layer, its bytecode, the bundled libraries: each its tree at its
own path, :func:`entry_members`) and one for the application (:func:`application_members`),
whose files hardlinked from those entries become symbolic links to them. The base layer's
members come from :mod:`lockbox.image.base`.

:func:`write_layer` writes a layer's tar (:mod:`lockbox.image.tar`) through gzip without a
file name or time, and hashes both the tar (the layer's diff id) and the compressed blob
(its digest) as the bytes go by: each file of the closure is read once.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from isal import isal_zlib

from lockbox.image.tar import Member, walk, with_parents, write_tar
from lockbox.store.store import Entry

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
GZIP_LEVEL = 2
"""ISA-L's default level (of 0–3). ISA-L's deflate (python-isal) compresses the example's
dependency layer about 4 times as fast as zlib at its fastest level, into a slightly
smaller stream; and being a pinned dependency of lockbox, not the system's zlib, it gives
the same bytes on every machine that runs the same lockbox."""


@dataclass(frozen=True)
class Layer:
    """One layer of an image, as its manifest and config refer to it."""

    name: str
    """What the layer holds (``base``, ``python``, ``deps``, …), for messages and history."""
    digest: str
    """``sha256:…`` of the blob as stored (compressed)."""
    diff_id: str
    """``sha256:…`` of the uncompressed tar."""
    size: int
    """Bytes of the blob as stored."""
    media_type: str
    files: int
    """Entries of the tar; 0 for a base image's layer, which lockbox does not unpack."""


def entry_members(entry: Entry) -> list[Member]:
    """A store entry as a layer: its tree at its own path."""
    return [Member(path.lstrip("/"), path, info) for path, info in walk(entry.path)]


def application_members(app: Entry, linked: Sequence[Entry]) -> list[Member]:
    """The ``app`` layer: the application, where each file that is one of the ``linked``
    entries' (hardlinked from it in the store: the dependency layer, its bytecode, the
    bundled libraries) becomes a symbolic link to that entry's file, which its own layer
    holds."""
    origins = {
        (info.st_dev, info.st_ino): path
        for entry in linked
        for path, info in walk(entry.path)
        if stat.S_ISREG(info.st_mode)
    }
    members = []
    for path, info in walk(app.path):
        origin = origins.get((info.st_dev, info.st_ino)) if stat.S_ISREG(info.st_mode) else None
        if origin is not None:
            members.append(Member(path.lstrip("/"), link=origin))
        else:
            members.append(Member(path.lstrip("/"), path, info))
    return members


class _Sink:
    """Hashes the tar as it is written, compresses it, hashes and writes the blob."""

    def __init__(self, out: BinaryIO, compress: bool) -> None:
        self.out = out
        self.diff = hashlib.sha256()
        # Uncompressed, the blob is the tar: one hash serves as both digests.
        self.blob = hashlib.sha256() if compress else self.diff
        self.size = 0
        # wbits 31: a gzip stream whose header is written with time 0 and no name.
        self.compressor = (
            isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31) if compress else None
        )

    def write(self, data: bytes | bytearray) -> None:
        self.diff.update(data)
        self._emit(self.compressor.compress(data) if self.compressor else data)

    def _emit(self, data: bytes | bytearray) -> None:
        if data:
            if self.compressor is not None:
                self.blob.update(data)
            self.out.write(data)
            self.size += len(data)

    def finish(self) -> None:
        if self.compressor is not None:
            self._emit(self.compressor.flush())


def write_layer(
    members: Iterable[Member], out: BinaryIO, compress: bool
) -> tuple[str, str, int, int]:
    """Write one layer; returns its blob digest, diff id, blob size and entry count."""
    sink = _Sink(out, compress)
    entries = with_parents(members)
    write_tar(entries, sink.write)
    sink.finish()
    return (
        f"sha256:{sink.blob.hexdigest()}",
        f"sha256:{sink.diff.hexdigest()}",
        sink.size,
        len(entries),
    )
