"""OCI images made directly from a built closure, without Docker.

The image holds the closure at the paths it has in the store, so the application's
``@out@`` paths hold inside the image too. Its layers follow the closure, most stable first:

1. ``base``: the glibc family and the dynamic loader from the build host (the only things
   the closure does not carry; their Debian packages are recorded in the image's labels),
   ``/tmp``, and an ``/etc/passwd``/``/etc/group`` with root and nobody — or, with
   ``--base``, the layers of a local OCI image, whose config is the starting point;
2. ``python``: the interpreter's store entry;
3. ``deps``: the dependency layer's store entry;
4. ``bytecode``: the store entry of the dependency layer's bytecode, when the recipe
   compiles it;
5. ``libraries``: the store entry of the host libraries bundled into the application;
6. ``app``: the application, in which each file the store hardlinks from one of those
   entries is a symbolic link to that entry's file.

So every layer but the last is a store entry at its own path, and an application rebuilt
from changed sources over the same dependency layer shares all of them with the image
before it: a registry already has them.

Every layer is a deterministic tar: entries sorted, every parent directory present, owner
and group 0 with no names, one fixed modification time (``SOURCE_DATE_EPOCH``), modes as
the store has them, no device numbers, no extended attributes; compressed with gzip
without a file name or time. The same closure gives the same blobs, the same manifest and
the same digest on every machine whose store is at the same path.

The output is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) or
an archive of one (``oci-archive``), written beside its destination and moved into place.
Pushing goes through skopeo.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from isal import isal_zlib

from lockbox.errors import LockboxError
from lockbox.fs import rename, replace_tree, step, work_beside
from lockbox.inputs.recipe import Image
from lockbox.progress import Progress, silent
from lockbox.store import records
from lockbox.store.store import Entry, Store, remove_tree
from lockbox.tools.sandbox import SOURCE_DATE_EPOCH

MTIME = int(SOURCE_DATE_EPOCH)
CREATED = datetime.fromtimestamp(MTIME, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
"""``SOURCE_DATE_EPOCH`` as the image config and annotations write a time."""
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_CHUNK = 1 << 20
GZIP_LEVEL = 2
"""ISA-L's default level (of 0–3). ISA-L's deflate (python-isal) compresses the example's
dependency layer about 4 times as fast as zlib at its fastest level, into a slightly
smaller stream; and being a pinned dependency of lockbox, not the system's zlib, it gives
the same bytes on every machine that runs the same lockbox."""


class ImageError(LockboxError):
    """An image cannot be written or pushed."""


@dataclass(frozen=True)
class Layer:
    name: str
    digest: str
    """``sha256:…`` of the blob as stored (compressed)."""
    diff_id: str
    """``sha256:…`` of the uncompressed tar."""
    size: int
    media_type: str
    files: int


@dataclass(frozen=True)
class ImageResult:
    path: Path
    manifest_digest: str
    layers: tuple[Layer, ...]
    config_digest: str


@dataclass(frozen=True)
class _Member:
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


def base_files(
    progress: Progress = silent,
) -> tuple[list[tuple[str, Path | None, str]], dict[str, str]]:
    """The glibc family and loader of this host: (image path, host file or None for a
    symlink, symlink target) and the Debian packages they come from, with versions."""
    from lockbox.native.elf import read_elf
    from lockbox.tools.run import run

    listing = run(["dpkg-query", "-L", "libc6"], check=False).stdout.split()
    if not listing:
        raise ImageError(
            "cannot list the files of Debian's libc6 (dpkg-query -L libc6): the "
            "image's base of glibc is taken from a Debian host"
        )
    version = run(["dpkg-query", "-W", "-f", "${Version}", "libc6"]).stdout.strip()
    files: dict[str, tuple[str, Path | None, str]] = {}
    for name in listing:
        path = Path(name)
        if ".so" not in path.name or not path.is_file():
            continue
        real = Path(os.path.realpath(path))
        files[str(real)] = (str(real).lstrip("/"), real, "")
    loader_info = read_elf(Path("/usr/bin/env"))
    loader = loader_info.interpreter if loader_info is not None else None
    links: dict[str, tuple[str, Path | None, str]] = {}
    for top in ("lib", "lib64", "bin", "sbin"):
        if Path("/", top).is_symlink():
            links[top] = (top, None, os.readlink(Path("/", top)))
    if loader and Path(loader).is_symlink():
        target = os.readlink(loader)
        real_loader = os.path.realpath(loader)
        inside = loader.lstrip("/")
        # Through a usr-merge link the loader's directory is the link's target.
        first = inside.split("/", 1)[0]
        if first in links:
            inside = os.path.normpath(os.path.join(links[first][2], inside.split("/", 1)[1]))
        links[inside] = (inside, None, target if target.startswith("/") else target)
        files.setdefault(real_loader, (real_loader.lstrip("/"), Path(real_loader), ""))
    progress.debug(f"base: {len(files)} files of libc6 {version}")
    return sorted([*files.values(), *links.values()]), {"libc6": version}


def base_members(base: Sequence[tuple[str, Path | None, str]]) -> list[_Member]:
    """The base layer: the host's glibc family (:func:`base_files`), ``/tmp``, and the
    ``passwd`` and ``group`` files of root and nobody."""
    members = []
    for name, source, target in base:
        if source is None:
            members.append(_Member(name, link=target))
        else:
            members.append(_Member(name, source, os.stat(source)))
    members.append(_Member("tmp"))
    members.append(
        _Member(
            "etc/passwd",
            data=b"root:x:0:0:root:/root:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
    )
    members.append(_Member("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"))
    return members


def entry_members(entry: Entry) -> list[_Member]:
    """A store entry as a layer: its tree at its own path."""
    return [_Member(path.lstrip("/"), path, info) for path, info in _walk(entry.path)]


def application_members(app: Entry, linked: Sequence[Entry]) -> list[_Member]:
    """The ``app`` layer: the application, where each file that is one of the ``linked``
    entries' (hardlinked from it in the store: the dependency layer, its bytecode, the
    bundled libraries) becomes a symbolic link to that entry's file, which its own layer
    holds."""
    origins = {
        (info.st_dev, info.st_ino): path
        for entry in linked
        for path, info in _walk(entry.path)
        if stat.S_ISREG(info.st_mode)
    }
    members = []
    for path, info in _walk(app.path):
        origin = origins.get((info.st_dev, info.st_ino)) if stat.S_ISREG(info.st_mode) else None
        if origin is not None:
            members.append(_Member(path.lstrip("/"), link=origin))
        else:
            members.append(_Member(path.lstrip("/"), path, info))
    return members


def _walk(top: Path | str) -> Iterator[tuple[str, os.stat_result]]:
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
    members: Iterable[_Member], out: BinaryIO, compress: bool
) -> tuple[str, str, int, int]:
    """Write one layer; returns its blob digest, diff id, blob size and entry count."""
    sink = _Sink(out, compress)
    entries = _with_parents(members)
    _write_tar(entries, sink.write)
    sink.finish()
    return (
        f"sha256:{sink.blob.hexdigest()}",
        f"sha256:{sink.diff.hexdigest()}",
        sink.size,
        len(entries),
    )


def _write_tar(entries: Mapping[str, _Member], write: Callable[[bytearray], object]) -> None:
    """Write the tar of ``entries`` (sorted by name) through ``write``, about 1 MiB at a time.

    Headers are made here (``TarInfo.tobuf`` only for names that need a PAX header): per
    entry, ``TarFile.addfile`` costs more than reading, hashing and compressing the bytes,
    and it copies in 16 KiB steps. Like ``tarfile``, the archive is padded to whole records."""
    buffer = bytearray()
    flushed = 0

    def flush_if_full() -> None:
        nonlocal flushed
        if len(buffer) >= _CHUNK:
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
                    chunk = os.read(descriptor, min(remaining, _CHUNK))
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


def _with_parents(members: Iterable[_Member]) -> dict[str, _Member]:
    entries: dict[str, _Member] = {}
    for member in members:
        entries[member.name] = member
        parent = member.name.rpartition("/")[0]
        while parent and parent not in entries:
            entries[parent] = _Member(parent)
            parent = parent.rpartition("/")[0]
    return entries


@dataclass(frozen=True)
class Descriptor:
    """A reference from one document of an image to a blob: what it is, its digest, size."""

    media_type: str
    digest: str
    """``sha256:`` and 64 lowercase hexadecimal digits: checked, so it is safe as a file name."""
    size: int


@dataclass(frozen=True)
class BaseImage:
    """An image given with ``--base``: its layers go first, its config is the start."""

    reference: str
    manifest_digest: str
    layers: tuple[Descriptor, ...]
    """The base manifest's layer descriptors."""
    diff_ids: tuple[str, ...]
    config: Mapping[str, object]
    """The base config's ``config`` (Env, Entrypoint, …), its Env and Labels checked."""
    blobs: _BaseBlobs

    def read_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob's bytes, checked against the descriptor's digest and size as read."""
        return self.blobs.open(descriptor)


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
BASE_LAYERS = frozenset({LAYER_TAR, LAYER_GZIP, "application/vnd.oci.image.layer.v1.tar+zstd"})
"""The layer types a base may have: those of an OCI image, which registries take as they are
in an OCI manifest."""
REGISTRY_TIMEOUT = 300.0
"""Seconds each skopeo command talking to a registry may take, unless told otherwise."""
_DOCUMENT_LIMIT = 4 << 20
"""The largest index, manifest or config read (the size registries accept for a manifest)."""


class _BaseBlobs:
    """The blobs of a base image's layout (a directory) or archive (a tar of one).

    A blob is found only by a checked digest, only as a regular file under
    ``blobs/sha256/`` (no symbolic link followed below the layout's own directory, no link
    member of an archive), and its bytes are hashed as they are read: reading past the end
    of a blob whose bytes or size are not those of its descriptor raises :class:`ImageError`."""

    def __init__(self, reference: str, path: Path) -> None:
        self.reference = reference
        self.path = path
        self.archive: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            if not self._regular(("oci-layout",)):
                raise self.error(
                    f"{path} is not an OCI image layout (no oci-layout file)",
                    "give a directory written by skopeo, umoci or lockbox",
                )
        elif path.is_file():
            try:
                self.archive = tarfile.open(path)
                self.members = {
                    member.name.removeprefix("./"): member for member in self.archive.getmembers()
                }
            except (tarfile.TarError, EOFError, OSError) as error:
                raise self.error(
                    f"{path} is not an OCI archive: {error}",
                    "give an archive written by skopeo or lockbox (oci-archive)",
                ) from None
        else:
            raise self.error(
                "no such OCI image layout or archive",
                "give the path of a directory or archive, with :TAG if it holds several",
            )

    def error(self, what: str, hint: str = "") -> ImageError:
        message = f"--base {self.reference}: {what}"
        return ImageError(f"{message}\n{hint}" if hint else message)

    def _regular(self, parts: Sequence[str]) -> bool:
        try:
            os.close(self._open(parts))
        except ImageError:
            return False
        return True

    def _open(self, parts: Sequence[str]) -> int:
        """A descriptor of the regular file ``parts`` below the layout, not following links."""
        name = "/".join(parts)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                below = os.open(part, flags | os.O_DIRECTORY, dir_fd=directory)
                os.close(directory)
                directory = below
            descriptor = os.open(parts[-1], flags, dir_fd=directory)
        except FileNotFoundError:
            raise self.error(
                f"{name} is missing from {self.path}",
                "the image is incomplete: copy it again (skopeo copy)",
            ) from None
        except OSError as error:
            raise self.error(
                f"{self.path / name} cannot be read: {error.strerror}"
                " (a symbolic link or not a regular file?)",
                "an image layout holds its files and blobs themselves",
            ) from None
        finally:
            os.close(directory)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise self.error(
                f"{self.path / name} is not a regular file",
                "an image layout holds its files and blobs themselves",
            )
        return descriptor

    def _raw(self, name: str) -> BinaryIO:
        if self.archive is None:
            return os.fdopen(self._open(name.split("/")), "rb")
        member = self.members.get(name)
        if member is None:
            raise self.error(
                f"{name} is missing from {self.path}",
                "the archive is incomplete: write it again (skopeo copy)",
            )
        if not member.isreg():
            raise self.error(
                f"{name} in {self.path} is not a regular file",
                "an OCI archive holds its blobs themselves, not links",
            )
        extracted = self.archive.extractfile(member)
        assert extracted is not None
        return extracted  # type: ignore[return-value]

    def open(self, descriptor: Descriptor) -> BinaryIO:
        return _CheckedBlob(
            self._raw(f"blobs/sha256/{descriptor.digest.split(':')[1]}"), descriptor, self
        )

    def check_present(self, descriptor: Descriptor) -> None:
        """That the blob is there, a regular file of the descriptor's size (its bytes are
        checked when it is read)."""
        if self.archive is None:
            name = descriptor.digest.split(":")[1]
            descriptor_fd = self._open(("blobs", "sha256", name))
            try:
                size = os.fstat(descriptor_fd).st_size
            finally:
                os.close(descriptor_fd)
        else:
            with self._raw(f"blobs/sha256/{descriptor.digest.split(':')[1]}"):
                size = self.members[f"blobs/sha256/{descriptor.digest.split(':')[1]}"].size
        if size != descriptor.size:
            raise self.error(
                f"blob {descriptor.digest} has {size} bytes, its descriptor says {descriptor.size}",
                "the image is damaged or was tampered with: copy it again",
            )

    def document(self, descriptor: Descriptor) -> dict[str, object]:
        """A JSON blob (manifest, index, config), checked, as a JSON object."""
        if descriptor.size > _DOCUMENT_LIMIT:
            raise self.error(
                f"{descriptor.digest} is {descriptor.size} bytes, too large for "
                f"a {descriptor.media_type}"
            )
        with self.open(descriptor) as blob:
            data = _read_all(blob, self)
        return self.parse(data, descriptor.digest)

    def index(self) -> dict[str, object]:
        with self._raw("index.json") as file:
            data = _read_limited(file, _DOCUMENT_LIMIT + 1, self)
        if len(data) > _DOCUMENT_LIMIT:
            raise self.error("index.json is larger than 4 MiB")
        return self.parse(data, "index.json")

    def parse(self, data: bytes, name: str) -> dict[str, object]:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise self.error(
                f"{name} is not JSON ({error})", "the image is damaged: copy it again (skopeo copy)"
            ) from None
        if not isinstance(value, dict):
            raise self.error(
                f"{name} is not a JSON object", "the image is damaged: copy it again (skopeo copy)"
            )
        return value


class _CheckedBlob(io.RawIOBase):
    """A blob's bytes as read, compared with its descriptor's size and digest at the end."""

    def __init__(self, raw: BinaryIO, descriptor: Descriptor, blobs: _BaseBlobs) -> None:
        self.raw = raw
        self.descriptor = descriptor
        self.blobs = blobs
        self.hash = hashlib.sha256()
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.descriptor.size + 1 - self.seen)
        try:
            data = self.raw.read(want) if want > 0 else b""
        except (OSError, tarfile.TarError, EOFError) as error:
            raise self.blobs.error(
                f"blob {self.descriptor.digest} cannot be read: {error}",
                "the image is damaged: copy it again (skopeo copy)",
            ) from None
        self.seen += len(data)
        self.hash.update(data)
        if self.seen > self.descriptor.size:
            raise self.blobs.error(
                f"blob {self.descriptor.digest} is larger than the "
                f"{self.descriptor.size} bytes its descriptor says",
                "the image is damaged or was tampered with: copy it again",
            )
        if not data:
            got = f"sha256:{self.hash.hexdigest()}"
            if self.seen != self.descriptor.size:
                raise self.blobs.error(
                    f"blob {self.descriptor.digest} has {self.seen} bytes, "
                    f"its descriptor says {self.descriptor.size}",
                    "the image is damaged or was tampered with: copy it again",
                )
            if got != self.descriptor.digest:
                raise self.blobs.error(
                    f"blob {self.descriptor.digest} does not match its "
                    f"digest (its bytes hash to {got})",
                    "the image is damaged or was tampered with: copy it again",
                )
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _read_limited(file: BinaryIO, limit: int, blobs: _BaseBlobs) -> bytes:
    try:
        return file.read(limit)
    except (OSError, tarfile.TarError, EOFError) as error:
        raise blobs.error(f"cannot read {blobs.path}: {error}") from None


def _read_all(file: BinaryIO, blobs: _BaseBlobs) -> bytes:
    chunks = []
    while chunk := file.read(_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _descriptor(
    value: object, where: str, blobs: _BaseBlobs, media_types: Iterable[str]
) -> Descriptor:
    """A descriptor read from ``where``, its digest, size and media type checked."""
    if not isinstance(value, dict):
        raise blobs.error(f"{where} is not a descriptor (a JSON object)")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType")
    if not isinstance(digest, str):
        raise blobs.error(f"{where} has no digest")
    algorithm = digest.partition(":")[0]
    if (
        ":" in digest
        and algorithm != "sha256"
        and re.fullmatch(r"[a-z0-9]+([+._-][a-z0-9]+)*", algorithm)
    ):
        raise blobs.error(
            f"{where}: digest {digest[:80]!r} uses {algorithm}; lockbox reads only sha256 digests",
            "copy the image with skopeo, which writes sha256",
        )
    if not DIGEST.fullmatch(digest):
        raise blobs.error(
            f"{where}: {digest[:80]!r} is not a digest (sha256: and 64 lowercase "
            "hexadecimal digits)",
            "the image is damaged or was tampered with",
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise blobs.error(f"{where}: the size of {digest} is not a count of bytes")
    allowed = sorted(media_types)
    if media_type not in allowed:
        raise blobs.error(
            f"{where}: {digest} has media type {str(media_type)[:80]!r}, expected "
            f"{' or '.join(allowed)}",
            "give an OCI image (skopeo copy --format oci converts one)",
        )
    return Descriptor(media_type, digest, size)


def read_base(reference: str) -> BaseImage:
    """A local OCI image layout (``DIR[:TAG]``) or archive (``FILE[:TAG]``), every document
    and digest in it checked (:class:`_BaseBlobs`): what is read from it is the image its
    index names or an :class:`ImageError`."""
    location, _, tag = reference.rpartition(":") if ":" in reference else (reference, "", "")
    if not location or not Path(location).exists():
        location, tag = reference, ""
    blobs = _BaseBlobs(reference, Path(location))
    index = blobs.index()
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise blobs.error(
            "index.json has no list of manifests", "give an OCI image layout or archive"
        )
    if tag:
        manifests = [
            m
            for m in manifests
            if isinstance(m, dict)
            and isinstance(m.get("annotations"), dict)
            and m["annotations"].get("org.opencontainers.image.ref.name") == tag
        ]
    if len(manifests) != 1:
        raise blobs.error(
            f"expected one image{f' tagged {tag}' if tag else ''}, found {len(manifests)}",
            "name the tag as PATH:TAG",
        )
    descriptor = _descriptor(manifests[0], "index.json", blobs, (MANIFEST, INDEX))
    manifest = blobs.document(descriptor)
    if descriptor.media_type == INDEX:  # an index of platforms: take this machine's
        arch = _architecture()
        listed = manifest.get("manifests")
        chosen = (
            [
                m
                for m in listed
                if isinstance(m, dict)
                and isinstance(m.get("platform"), dict)
                and m["platform"].get("architecture") == arch
            ]
            if isinstance(listed, list)
            else []
        )
        if not chosen:
            raise blobs.error(f"no image for {arch} in the index {descriptor.digest}")
        descriptor = _descriptor(chosen[0], f"index {descriptor.digest}", blobs, (MANIFEST,))
        manifest = blobs.document(descriptor)
    where = f"manifest {descriptor.digest}"
    if manifest.get("mediaType", descriptor.media_type) != descriptor.media_type:
        raise blobs.error(
            f"{where} says it is a {str(manifest.get('mediaType'))[:80]!r}, its "
            f"descriptor a {descriptor.media_type}"
        )
    config_descriptor = _descriptor(manifest.get("config"), f"{where}: config", blobs, (CONFIG,))
    layer_list = manifest.get("layers")
    if not isinstance(layer_list, list):
        raise blobs.error(f"{where} has no list of layers")
    layers = tuple(
        _descriptor(layer, f"{where}: layer {number}", blobs, BASE_LAYERS)
        for number, layer in enumerate(layer_list)
    )
    config = blobs.document(config_descriptor)
    where = f"config {config_descriptor.digest}"
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise blobs.error(f"{where} has no list of sha256 diff_ids in rootfs")
    if len(diff_ids) != len(layers):
        raise blobs.error(f"{where} names {len(diff_ids)} layers, its manifest {len(layers)}")
    settings = config.get("config", {})
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise blobs.error(f"{where}: config is not a JSON object")
    env, labels = settings.get("Env") or [], settings.get("Labels") or {}
    if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
        raise blobs.error(f"{where}: Env is not a list of strings")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise blobs.error(f"{where}: Labels is not an object of strings")
    for layer in layers:  # before the build: the bytes are checked as they are copied
        blobs.check_present(layer)
    return BaseImage(reference, descriptor.digest, layers, tuple(diff_ids), settings, blobs)


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def make_image(
    app: Entry,
    python: Entry,
    deps: Entry,
    recipe: Image,
    labels: Mapping[str, str],
    *,
    bytecode: Entry | None = None,
    libraries: Entry | None = None,
    layout: Path | None = None,
    archive: Path | None = None,
    compress: bool = True,
    tag: str = "latest",
    base_image: BaseImage | None = None,
    store: Store | None = None,
    progress: Progress = silent,
) -> ImageResult:
    """Write the image of ``app`` (with the entries it references: its interpreter, its
    dependency layer, that layer's ``bytecode`` and its bundled ``libraries``) as an OCI
    layout at ``layout``, an archive at ``archive``, or both (from one set of blobs). With
    ``base_image`` its layers replace lockbox's own glibc base layer. With ``store``, the
    layers of those entries are kept beside them and taken from there by the next image
    (:class:`_LayerCache`)."""
    from concurrent.futures import ThreadPoolExecutor

    targets = [path.absolute() for path in (layout, archive) if path is not None]
    if not targets:
        raise ImageError("no destination for the image")
    if layout is not None:
        _check_layout_target(layout.absolute())
    if archive is not None:
        _check_archive_target(archive.absolute())
    stack = contextlib.ExitStack()
    # Each destination is written in its own locked directory beside it (work_beside) and
    # put in place in one step; what killed images left beside it goes first.
    work = stack.enter_context(work_beside(targets[0]))
    tree = work / "layout"
    blobs = tree / "blobs" / "sha256"
    packages: dict[str, str] = {}

    media_type = LAYER_GZIP if compress else LAYER_TAR

    def write(name: str, members: Callable[[], list[_Member]]) -> Layer:
        temporary = blobs / f".{name}"
        with open(temporary, "wb", buffering=_CHUNK) as out:
            digest, diff_id, size, count = write_layer(members(), out, compress)
        os.replace(temporary, blobs / digest.split(":")[1])
        progress.info(f"layer {name}: {count} entries, {size / 1e6:.1f} MB")
        return Layer(name, digest, diff_id, size, media_type, count)

    def write_entry(name: str, entry: Entry) -> Layer:
        cache = _LayerCache(store.derived_dir(entry), compress, store.work_dir) if store else None
        layer = cache.take(name, blobs) if cache else None
        if layer is not None:
            progress.info(
                f"layer {name}: {layer.files} entries, {layer.size / 1e6:.1f} MB "
                "(kept from an earlier image)"
            )
            return layer
        layer = write(name, lambda: entry_members(entry))
        if cache:
            cache.keep(layer, blobs)
        return layer

    def base_layer() -> list[_Member]:
        files, found = base_files(progress)
        packages.update(found)
        return base_members(files)

    with stack:
        blobs.mkdir(parents=True)
        # Layers are independent: ISA-L and hashlib let go of the GIL, so they overlap. Each
        # is planned by the thread that writes it but the application's, planned here
        # meanwhile; the longest go first, the short ones fill the gaps at the end.
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            futures = {
                name: pool.submit(write_entry, name, entry)
                for name, entry in (("python", python), ("deps", deps))
            }
            linked = {
                name: entry
                for name, entry in (("libraries", libraries), ("bytecode", bytecode))
                if entry
            }
            for name, entry in linked.items():
                futures[name] = pool.submit(write_entry, name, entry)
            members = application_members(app, [deps, *linked.values()])
            futures["app"] = pool.submit(write, "app", lambda: members)
            if base_image is None:
                futures["base"] = pool.submit(write, "base", base_layer)
            order = ["base", "python", "deps", "bytecode", "libraries", "app"]
            layers = [futures[name].result() for name in order if name in futures]
        if base_image is not None:
            layers = _base_layers(base_image, blobs) + layers
            # The digest names the base; its local path would make the image path-dependent.
            labels = {**labels, "org.opencontainers.image.base.digest": base_image.manifest_digest}
        config = _config(app, recipe, labels, packages, layers, base_image)
        config_digest = _write_blob(blobs, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
            "annotations": {
                "org.opencontainers.image.created": CREATED,
                **{k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")},
            },
        }
        manifest_bytes = _canonical(manifest)
        manifest_digest = _write_blob(blobs, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }
            ],
        }
        (tree / "index.json").write_bytes(_canonical(index))
        (tree / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        if archive is not None:
            archive_work = (
                work if layout is None else stack.enter_context(work_beside(archive.absolute()))
            )
            temporary = archive_work / "archive.tar"
            with open(temporary, "wb", buffering=_CHUNK) as out:
                _write_layout_archive(tree, out)
            _check_archive_target(archive.absolute())
            rename(temporary, archive.absolute())
        if layout is not None:
            _check_layout_target(layout.absolute())
            if replace_tree(tree, layout.absolute()) is not None:
                step(f"remove old {layout.name}")
                remove_tree(tree)
    return ImageResult(targets[0], manifest_digest, tuple(layers), config_digest)


def _base_layers(base: BaseImage, blobs: Path) -> list[Layer]:
    """The base's layers, their blobs copied (as they are: lockbox does not unpack them)
    into ``blobs`` and checked against their digests on the way."""
    layers = []
    for number, (descriptor, diff_id) in enumerate(zip(base.layers, base.diff_ids, strict=True)):
        target = blobs / descriptor.digest.split(":")[1]
        if not target.exists():
            temporary = blobs / f".base-{number}"
            with base.read_blob(descriptor) as source, open(temporary, "wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
            os.replace(temporary, target)
        layers.append(
            Layer(
                f"base {number}",
                descriptor.digest,
                diff_id,
                descriptor.size,
                descriptor.media_type,
                0,
            )
        )
    return layers


def _config(
    app: Entry,
    recipe: Image,
    labels: Mapping[str, str],
    packages: Mapping[str, str],
    layers: Sequence[Layer],
    base: BaseImage | None = None,
) -> bytes:
    out = str(app.path)

    def fill(words: Iterable[str]) -> list[str]:
        return [word.replace("@out@", out) for word in words]

    inherited = (
        dict(
            str(item).split("=", 1)
            for item in (base.config.get("Env") or [])  # type: ignore[union-attr]
            if "=" in str(item)
        )
        if base is not None
        else {}
    )
    path = inherited.pop("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {
        **inherited,
        "PATH": f"{out}/bin:{path}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": out,
        **recipe.env,
    }
    if base is not None:
        labels = {**(base.config.get("Labels") or {}), **labels}  # type: ignore[dict-item]
    all_labels = {**labels, **recipe.labels, "org.opencontainers.image.created": CREATED}
    if packages:
        all_labels["org.lockbox.base.packages"] = ", ".join(
            f"{k}={v}" for k, v in sorted(packages.items())
        )
    config: dict[str, object] = {
        "Entrypoint": fill(recipe.entrypoint) or [f"{out}/bin/python"],
        "Env": [f"{key}={value.replace('@out@', out)}" for key, value in env.items()],
        "WorkingDir": recipe.workdir.replace("@out@", out),
        "Labels": dict(sorted(all_labels.items())),
    }
    if recipe.cmd:
        config["Cmd"] = fill(recipe.cmd)
    if recipe.user:
        config["User"] = recipe.user
    return _canonical(
        {
            "created": CREATED,
            "architecture": _architecture(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [
                {"created": CREATED, "created_by": f"lockbox: {layer.name} layer"}
                for layer in layers
            ],
        }
    )


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _LayerCache:
    """A store entry's layer blob, kept in the store beside the entry (removed with it) for
    the next image of a closure that holds it: the interpreter, the dependency layer, its
    bytecode and the bundled libraries are the same from one application build to the next,
    and writing their layers is most of an image's work.

    A blob is kept under a name that says how it was made (gzip or not, lockbox's identity
    and the compressor's version), next to a record of its digests; it is taken only when
    its bytes still hash to the recorded digest. The record is signed with the store's key
    for its place (:mod:`lockbox.store.records`): a blob and record made elsewhere, or moved from
    another entry's directory, are not taken — their digests would agree with each other
    and still not be this entry's layer."""

    def __init__(self, directory: Path, compress: bool, meta: Path) -> None:
        from isal import __version__ as isal_version

        from lockbox import build_identity

        made = f"{'gzip' if compress else 'tar'}:{GZIP_LEVEL}:{isal_version}:{build_identity()}"
        stem = f"layer-{hashlib.sha256(made.encode()).hexdigest()[:20]}"
        self.directory = directory
        self.blob = directory / f"{stem}.blob"
        self.record = directory / f"{stem}.json"
        self.meta = str(meta)
        self.place = os.path.relpath(self.record, meta)

    def take(self, name: str, blobs: Path) -> Layer | None:
        """The kept layer, its blob placed in ``blobs``; None if there is none or it is
        damaged."""
        try:
            body, _ = records.read(self.meta, self.place)
            if body is None:
                return None
            record = json.loads(body)
            digest = hashlib.sha256()
            with open(self.blob, "rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
            if f"sha256:{digest.hexdigest()}" != record["digest"]:
                return None
            target = blobs / record["digest"].split(":")[1]
            _link_or_copy(self.blob, target)
            return Layer(
                name,
                record["digest"],
                record["diff_id"],
                record["size"],
                record["media_type"],
                record["files"],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def keep(self, layer: Layer, blobs: Path) -> None:
        """Keep ``layer``'s blob (from ``blobs``) for the next image; failing quietly, as a
        cache may."""
        # In a work directory of the fsops kind, so that what a killed image leaves here is
        # cleared by the next one.
        try:
            with work_beside(self.blob) as work:
                temporary = work / "blob"
                _link_or_copy(blobs / layer.digest.split(":")[1], temporary)
                rename(temporary, self.blob)
                record = {
                    "digest": layer.digest,
                    "diff_id": layer.diff_id,
                    "size": layer.size,
                    "media_type": layer.media_type,
                    "files": layer.files,
                }
                records.write(self.meta, self.place, json.dumps(record).encode())
        except OSError:
            pass


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        import shutil

        shutil.copyfile(source, target)


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


def _write_layout_archive(layout: Path, out: BinaryIO) -> None:
    """The layout as a tar; the blobs' bytes go from file to file in the kernel."""
    written = 0
    for path, info in sorted(_walk(layout))[1:]:  # the layout's own directory is not in it
        name = os.path.relpath(path, layout)
        if stat.S_ISDIR(info.st_mode):
            header, size = tar_header(name + "/", 0o755, 0, b"5"), 0
        else:
            header, size = tar_header(name, 0o644, info.st_size, b"0"), info.st_size
        out.write(header)
        out.flush()
        written += len(header)
        if size:
            with open(path, "rb") as file:
                _copy_range(file.fileno(), out.fileno(), size)
            written += size
            pad = -written % tarfile.BLOCKSIZE
            out.write(bytes(pad))
            written += pad
    end = 2 * tarfile.BLOCKSIZE
    out.write(bytes(end + (-(written + end) % tarfile.RECORDSIZE)))


def _copy_range(source: int, target: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            copied = os.copy_file_range(source, target, size - offset, offset)
        except OSError:
            copied = 0
        if copied <= 0:  # not supported between these files: copy through user space
            os.lseek(source, offset, os.SEEK_SET)
            while offset < size:
                chunk = os.read(source, min(_CHUNK, size - offset))
                if not chunk:
                    raise ImageError("a blob shrank while the archive was written")
                os.write(target, chunk)
                offset += len(chunk)
            return
        offset += copied


def _check_layout_target(target: Path) -> None:
    """``target`` may be replaced by a layout: it is missing or an earlier layout."""
    if os.path.lexists(target) and not (target / "oci-layout").is_file():
        raise ImageError(
            f"{target} exists and is not an OCI image layout; choose another directory or remove it"
        )


def _check_archive_target(target: Path) -> None:
    """``target`` may be replaced by an archive: it is missing or not a directory."""
    if target.is_dir():
        raise ImageError(
            f"{target} is a directory; -o names the archive file to write "
            "(--layout writes a directory)"
        )


@dataclass(frozen=True)
class Skopeo:
    """skopeo, which pushes images to registries (and reads them back in tests)."""

    executable: Path

    @classmethod
    def find(cls) -> Skopeo:
        from lockbox.tools.run import which

        return cls(
            which(
                "skopeo",
                "install skopeo (Debian: apt-get install skopeo); lockbox pushes images with it",
            )
        )

    def push(
        self,
        layout: Path,
        tag: str,
        reference: str,
        digest: str,
        *,
        authfile: Path | None = None,
        tls_verify: bool = True,
        timeout: float = REGISTRY_TIMEOUT,
        progress: Progress = silent,
    ) -> None:
        """Copy the image ``tag`` of the OCI layout ``layout`` to ``reference``
        (``registry/repository:tag``), then read back the manifest the registry now gives
        for ``reference`` and check that it is the one pushed (its sha256 is ``digest``): a
        registry that answers without keeping the image is found out here. Credentials come
        from ``authfile`` or the usual docker/podman auth files. Each skopeo command is
        stopped after ``timeout`` seconds."""
        destination = f"docker://{reference.removeprefix('docker://')}"
        argv: list[str | os.PathLike[str]] = ["copy", "--quiet"]
        if authfile is not None:
            argv += ["--dest-authfile", authfile]
        argv += [
            f"--dest-tls-verify={'true' if tls_verify else 'false'}",
            f"oci:{layout}:{tag}",
            destination,
        ]
        self._run(argv, reference, "pushing to", timeout, progress)
        argv = ["inspect", "--raw"]
        if authfile is not None:
            argv += ["--authfile", authfile]
        argv += [f"--tls-verify={'true' if tls_verify else 'false'}", destination]
        raw = self._run(argv, reference, "reading back the manifest of", timeout, progress)
        got = f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}"
        if got != digest:
            raise ImageError(
                f"the registry of {reference} did not keep the image pushed: it "
                f"answers with a manifest whose digest is {got}, expected {digest}\n"
                "check the registry (and that nothing else pushes to this tag), "
                "then push again"
            )

    def _run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        reference: str,
        doing: str,
        timeout: float,
        progress: Progress,
    ) -> str:
        from lockbox.errors import ToolFailed
        from lockbox.tools.run import run

        # skopeo's own timeout lets it report where it was; lockbox's own, a little later,
        # holds if skopeo does not stop.
        try:
            return run(
                [self.executable, "--command-timeout", f"{timeout:g}s", *argv],
                progress=progress,
                timeout=timeout + 10,
            ).stdout
        except ToolFailed as error:
            text = error.stderr.strip().splitlines()[-1] if error.stderr.strip() else str(error)
            lowered = text.lower()
            if error.returncode == -9 or "context deadline exceeded" in lowered:
                raise ImageError(
                    f"{doing} {reference} took longer than {timeout:g} s: the "
                    f"registry does not answer ({text})\ncheck the registry's "
                    "address, or allow longer with --timeout SECONDS"
                ) from None
            if "unauthorized" in lowered or "authentication required" in lowered:
                raise ImageError(
                    f"the registry refused the credentials for {reference}: {text}\n"
                    "log in first (`skopeo login REGISTRY`) or pass --authfile "
                    "with a docker/podman auth file"
                ) from None
            if "http response to https client" in lowered:
                raise ImageError(
                    f"{reference}: the registry speaks plain HTTP; pass "
                    "--no-tls-verify if that is intended"
                ) from None
            raise ImageError(f"{doing} {reference} failed: {text}") from None
