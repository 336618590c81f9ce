"""Deterministic tar streams: the plan of a tar as members, and the bytes written from it.

Each layer of an image (:mod:`lockbox.image.layers`) and the archive of an image layout
(:mod:`lockbox.image.oci`) is a tar written here: entries sorted, every parent directory
present, owner and group 0 with no names, one fixed modification time
(``SOURCE_DATE_EPOCH``), modes as the store has them, no device numbers, no extended
attributes. The same members give the same bytes on every machine.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import ImageError
from lockbox.tools.sandbox import SOURCE_DATE_EPOCH

MTIME = int(SOURCE_DATE_EPOCH)
"""The modification time of every entry."""
CHUNK = 1 << 20
"""How many bytes are read, buffered and written at a time."""


@dataclass(frozen=True)
class Member:
    """One tar entry: where it goes in the image and where its bytes are."""

    name: str
    source: str | Path | None = None
    """The file, directory or symlink copied; None for what lockbox makes up."""
    info: os.stat_result | None = None
    data: bytes | None = None
    """Contents of a file lockbox writes itself (``/etc/passwd``)."""
    link: str | None = None
    """Target of a symlink lockbox makes up (``/lib -> usr/lib``)."""
    mode: int | None = None
    """Mode to record instead of the file's own."""


def walk(top: Path | str) -> Iterator[tuple[str, os.stat_result]]:
    """``top`` and everything below it, depth first, names sorted; symlinks not followed."""
    top = os.fspath(top)
    yield top, os.lstat(top)
    stack = [top]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as scan:
            found = sorted(
                (entry.name, entry.path, entry.stat(follow_symlinks=False)) for entry in scan
            )
        below = []
        for _, path, info in found:
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                below.append(path)
        stack.extend(reversed(below))


def with_parents(members: Iterable[Member]) -> dict[str, Member]:
    """``members`` by name, with a directory entry for each parent none of them is."""
    entries: dict[str, Member] = {}
    for member in members:
        entries[member.name] = member
        parent = member.name.rpartition("/")[0]
        while parent and parent not in entries:
            entries[parent] = Member(parent)
            parent = parent.rpartition("/")[0]
    return entries


def write_tar(entries: Mapping[str, Member], write: Callable[[bytearray], object]) -> None:
    """Write the tar of ``entries`` (sorted by name) through ``write``, about 1 MiB at a time.

    Headers are made here (``TarInfo.tobuf`` only for names that need a PAX header): per
    entry, ``TarFile.addfile`` costs more than reading, hashing and compressing the bytes,
    and it copies in 16 KiB steps. Like ``tarfile``, the archive is padded to whole records."""
    buffer = bytearray()
    flushed = 0

    def flush_if_full() -> None:
        nonlocal flushed
        if len(buffer) >= CHUNK:
            write(buffer)
            flushed += len(buffer)
            buffer.clear()

    for name in sorted(entries):
        member = entries[name]
        size = 0
        source = None
        info = member.info
        if member.data is not None:
            kind, mode, link, size = b"0", 0o644, "", len(member.data)
        elif member.link is not None:
            kind, mode, link = b"2", 0o777, member.link
        elif member.source is None or info is None or stat.S_ISDIR(info.st_mode):
            kind, link = b"5", ""
            mode = (
                0o1777 if name == "tmp" else 0o755 if info is None else stat.S_IMODE(info.st_mode)
            )
        elif stat.S_ISLNK(info.st_mode):
            kind, mode, link = b"2", 0o777, os.readlink(member.source)
        else:
            kind, mode, link, size = b"0", stat.S_IMODE(info.st_mode), "", info.st_size
            source = member.source
        if member.mode is not None:
            mode = member.mode
        buffer += tar_header(name + "/" if kind == b"5" else name, mode, size, kind, link)
        if member.data is not None:
            buffer += member.data
        elif source is not None:
            descriptor = os.open(source, os.O_RDONLY)
            try:
                remaining = size
                while remaining > 0:
                    chunk = os.read(descriptor, min(remaining, CHUNK))
                    if not chunk:
                        raise ImageError(f"{source} shrank while the image was written")
                    buffer += chunk
                    remaining -= len(chunk)
                    flush_if_full()
            finally:
                os.close(descriptor)
        buffer += bytes(-size % tarfile.BLOCKSIZE)
        flush_if_full()
    buffer += bytes(2 * tarfile.BLOCKSIZE)  # the end of the archive
    buffer += bytes(-(flushed + len(buffer)) % tarfile.RECORDSIZE)
    write(buffer)


def tar_header(name: str, mode: int, size: int, kind: bytes, link: str = "") -> bytes:
    """The header ``tarfile`` writes in PAX format for this entry (with owner 0, no owner
    names, the fixed modification time): a ustar block, preceded by a PAX extended header
    when the name or link target is longer than its field. Made here because this runs once
    per file of the closure and ``TarInfo.tobuf`` costs as much as reading the file."""
    raw = name.encode("utf-8", "surrogateescape")
    raw_link = link.encode("utf-8", "surrogateescape")
    if not raw.isascii() or not raw_link.isascii() or size >= 8**11:
        info = tarfile.TarInfo(name)
        info.mtime, info.mode, info.size, info.type, info.linkname = MTIME, mode, size, kind, link
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    records = b""
    for keyword, value in ((b"path", raw), (b"linkpath", raw_link)):
        if len(value) > 100:
            length = len(keyword) + len(value) + 3
            total = previous = 0
            while True:  # the record's length counts its own digits
                total = length + len(str(previous))
                if total == previous:
                    break
                previous = total
            records += b"%d %s=%s\n" % (total, keyword, value)
    header = _ustar(raw[:100], mode, size, MTIME, kind, raw_link[:100])
    if not records:
        return header
    pax = _ustar(b"././@PaxHeader", 0, len(records), 0, b"x", b"")
    return pax + records + bytes(-len(records) % tarfile.BLOCKSIZE) + header


def _ustar(name: bytes, mode: int, size: int, mtime: int, kind: bytes, link: bytes) -> bytes:
    header = bytearray(tarfile.BLOCKSIZE)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\0" % (mode & 0o7777)
    header[108:124] = b"0000000\x000000000\x00"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b"        "
    header[156:157] = kind
    header[157 : 157 + len(link)] = link
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)
