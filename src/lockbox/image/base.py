"""What an image starts from: this host's glibc, or the image given with ``--base``.

The closure carries everything the application runs on but the C library and the dynamic
loader. Without ``--base``, :mod:`lockbox.image.oci` makes its first layer from those of
the build host (:func:`base_files`, :func:`base_members`): the glibc family of Debian's
``libc6`` package (whose version the image's labels record), the loader and the usr-merge
links as the host has them, ``/tmp``, and an ``/etc/passwd``/``/etc/group`` with root and
nobody.

With ``--base``, :func:`read_base` reads a local OCI image layout or archive instead, which
may come from anyone: every document and digest in it is checked as it is read, and its
layers' blobs when they are copied into the image, so what the image is built on is the
image the base's index names or an :class:`~lockbox.errors.ImageError`. Its layers go
first and its config is where the image's config starts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lockbox.errors import ImageError
from lockbox.image.layers import LAYER_GZIP, LAYER_TAR
from lockbox.image.tar import CHUNK, Member
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.tools.dpkg import Dpkg


def base_files(
    dpkg: Dpkg,
    progress: Progress = silent,
) -> tuple[list[tuple[str, Path | None, str]], dict[str, str]]:
    """The glibc family and loader of this host: (image path, host file or None for a
    symlink, symlink target) and the Debian packages they come from, with versions."""
    from lockbox.native.elf import read_elf

    listing = dpkg.files("libc6", progress)
    if not listing:
        raise ImageError(
            "cannot list the files of Debian's libc6 (dpkg-query -L libc6): the "
            "image's base of glibc is taken from a Debian host"
        )
    version = dpkg.version("libc6", progress)
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
        links[inside] = (inside, None, target)
        files.setdefault(real_loader, (real_loader.lstrip("/"), Path(real_loader), ""))
    progress.debug(f"base: {len(files)} files of libc6 {version}")
    return sorted([*files.values(), *links.values()]), {"libc6": version}


def base_members(base: Sequence[tuple[str, Path | None, str]]) -> list[Member]:
    """The base layer: the host's glibc family (:func:`base_files`), ``/tmp``, and the
    ``passwd`` and ``group`` files of root and nobody."""
    members = []
    for name, source, target in base:
        if source is None:
            members.append(Member(name, link=target))
        else:
            members.append(Member(name, source, os.stat(source)))
    members.append(Member("tmp"))
    members.append(
        Member(
            "etc/passwd",
            data=b"root:x:0:0:root:/root:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
    )
    members.append(Member("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"))
    return members


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

    def read_blob(self, descriptor: Descriptor) -> io.RawIOBase:
        """The blob's bytes, checked against the descriptor's digest and size as read."""
        return self.blobs.open(descriptor)


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
BASE_LAYERS = frozenset({LAYER_TAR, LAYER_GZIP, "application/vnd.oci.image.layer.v1.tar+zstd"})
"""The layer types a base may have: those of an OCI image, which registries take as they are
in an OCI manifest."""
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
                # Open as long as the base is: its layers are read when the image is written.
                self.archive = tarfile.open(path)  # noqa: SIM115
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

    def open(self, descriptor: Descriptor) -> io.RawIOBase:
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
            data = _read_all(blob)
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


def _read_all(file: io.RawIOBase) -> bytes:
    chunks = []
    while chunk := file.read(CHUNK):
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
    descriptor, manifest = _manifest(blobs, tag)
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
    diff_ids, settings = _checked_config(
        config, f"config {config_descriptor.digest}", len(layers), blobs
    )
    for layer in layers:  # before the build: the bytes are checked as they are copied
        blobs.check_present(layer)
    return BaseImage(reference, descriptor.digest, layers, diff_ids, settings, blobs)


def _manifest(blobs: _BaseBlobs, tag: str) -> tuple[Descriptor, dict[str, object]]:
    """The descriptor and manifest of the one image the index names (with ``tag``, if
    given), through an index of platforms to this machine's."""
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
        arch = architecture()
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
    return descriptor, manifest


def _checked_config(
    config: Mapping[str, object], where: str, layers: int, blobs: _BaseBlobs
) -> tuple[tuple[str, ...], dict[str, object]]:
    """The config's diff ids (one per layer of the manifest) and its ``config`` object,
    whose Env and Labels the image's config takes in."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise blobs.error(f"{where} has no list of sha256 diff_ids in rootfs")
    if len(diff_ids) != layers:
        raise blobs.error(f"{where} names {len(diff_ids)} layers, its manifest {layers}")
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
    return tuple(diff_ids), settings


def architecture() -> str:
    """This machine's architecture as OCI names it."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
