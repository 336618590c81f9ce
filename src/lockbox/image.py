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

import hashlib
import json
import os
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from isal import isal_zlib

from lockbox import records
from lockbox.errors import LockboxError
from lockbox.progress import Progress, silent
from lockbox.recipe import Image
from lockbox.sandbox import SOURCE_DATE_EPOCH
from lockbox.store import Entry, Store, remove_tree

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


def base_files(progress: Progress = silent) -> tuple[list[tuple[str, Path | None, str]], dict[str, str]]:
    """The glibc family and loader of this host: (image path, host file or None for a
    symlink, symlink target) and the Debian packages they come from, with versions."""
    from lockbox.elf import read_elf
    from lockbox.run import run

    listing = run(["dpkg-query", "-L", "libc6"], check=False).stdout.split()
    if not listing:
        raise ImageError("cannot list the files of Debian's libc6 (dpkg-query -L libc6): the "
                         "image's base of glibc is taken from a Debian host")
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
    members.append(_Member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
                           b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
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
    origins = {(info.st_dev, info.st_ino): path
               for entry in linked for path, info in _walk(entry.path)
               if stat.S_ISREG(info.st_mode)}
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
            found = sorted((entry.name, entry.path, entry.stat(follow_symlinks=False))
                           for entry in scan)
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
        self.compressor = (isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
                           if compress else None)

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


def write_layer(members: Iterable[_Member], out: BinaryIO, compress: bool) -> tuple[str, str, int, int]:
    """Write one layer; returns its blob digest, diff id, blob size and entry count."""
    sink = _Sink(out, compress)
    entries = _with_parents(members)
    _write_tar(entries, sink.write)
    sink.finish()
    return f"sha256:{sink.blob.hexdigest()}", f"sha256:{sink.diff.hexdigest()}", sink.size, len(entries)


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
            mode = 0o1777 if name == "tmp" else 0o755 if info is None else stat.S_IMODE(info.st_mode)
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
    if not raw.isascii() or not raw_link.isascii() or size >= 8 ** 11:
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
    header[0:len(name)] = name
    header[100:108] = b"%07o\0" % (mode & 0o7777)
    header[108:124] = b"0000000\x000000000\x00"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b"        "
    header[156:157] = kind
    header[157:157 + len(link)] = link
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
class BaseImage:
    """An image given with ``--base``: its layers go first, its config is the start."""

    reference: str
    manifest_digest: str
    layers: tuple[Mapping[str, object], ...]
    """The base manifest's layer descriptors."""
    diff_ids: tuple[str, ...]
    config: Mapping[str, object]
    """The base config's ``config`` (Env, Entrypoint, …)."""
    read_blob: Callable[[str], BinaryIO]


def read_base(reference: str) -> BaseImage:
    """A local OCI image layout (``DIR[:TAG]``) or archive (``FILE[:TAG]``)."""
    location, _, tag = reference.rpartition(":") if ":" in reference else (reference, "", "")
    if not location or not Path(location).exists():
        location, tag = reference, ""
    path = Path(location)
    if path.is_dir():
        if not (path / "oci-layout").is_file():
            raise ImageError(f"--base {reference}: {path} is not an OCI image layout "
                             "(no oci-layout file)")

        def read_blob(digest: str) -> BinaryIO:
            return open(path / "blobs" / "sha256" / digest.split(":")[1], "rb")
        index_bytes = (path / "index.json").read_bytes()
    elif path.is_file():
        try:
            archive = tarfile.open(path)
        except tarfile.TarError as error:
            raise ImageError(f"--base {reference}: {path} is not an OCI archive: {error}") from None
        names = {member.name.removeprefix("./"): member for member in archive.getmembers()}

        def read_blob(digest: str) -> BinaryIO:
            member = names.get(f"blobs/sha256/{digest.split(':')[1]}")
            extracted = archive.extractfile(member) if member is not None else None
            if extracted is None:
                raise ImageError(f"--base {reference}: blob {digest} is missing")
            return extracted  # type: ignore[return-value]
        if "index.json" not in names:
            raise ImageError(f"--base {reference}: {path} has no index.json; give an OCI "
                             "archive or layout")
        index_bytes = archive.extractfile(names["index.json"]).read()  # type: ignore[union-attr]
    else:
        raise ImageError(f"--base {reference}: no such OCI image layout or archive")
    try:
        index = json.loads(index_bytes)
        manifests = index["manifests"]
        if tag:
            manifests = [m for m in manifests
                         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        if len(manifests) != 1:
            raise ImageError(f"--base {reference}: expected one image"
                             f"{f' tagged {tag}' if tag else ''}, found {len(manifests)}; "
                             "name the tag as PATH:TAG")
        descriptor = manifests[0]
        with read_blob(descriptor["digest"]) as blob:
            manifest = json.loads(blob.read())
        if "manifests" in manifest:  # an index of platforms: take this machine's
            arch = _architecture()
            chosen = [m for m in manifest["manifests"]
                      if m.get("platform", {}).get("architecture") == arch]
            if not chosen:
                raise ImageError(f"--base {reference}: no image for {arch}")
            descriptor = chosen[0]
            with read_blob(descriptor["digest"]) as blob:
                manifest = json.loads(blob.read())
        with read_blob(manifest["config"]["digest"]) as blob:
            config = json.loads(blob.read())
        return BaseImage(reference, descriptor["digest"], tuple(manifest["layers"]),
                         tuple(config["rootfs"]["diff_ids"]), config.get("config", {}), read_blob)
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ImageError(f"--base {reference}: not a valid OCI image ({error!r})") from None


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def make_image(app: Entry, python: Entry, deps: Entry, recipe: Image, labels: Mapping[str, str],
               *, bytecode: Entry | None = None, libraries: Entry | None = None,
               layout: Path | None = None, archive: Path | None = None, compress: bool = True,
               tag: str = "latest", base_image: BaseImage | None = None,
               store: Store | None = None, progress: Progress = silent) -> ImageResult:
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
    work = targets[0].parent / f".{targets[0].name}.lockbox-{uuid.uuid4().hex[:12]}"
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True)
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
            progress.info(f"layer {name}: {layer.files} entries, {layer.size / 1e6:.1f} MB "
                          "(kept from an earlier image)")
            return layer
        layer = write(name, lambda: entry_members(entry))
        if cache:
            cache.keep(layer, blobs)
        return layer

    def base_layer() -> list[_Member]:
        files, found = base_files(progress)
        packages.update(found)
        return base_members(files)

    try:
        # Layers are independent: ISA-L and hashlib let go of the GIL, so they overlap. Each
        # is planned by the thread that writes it but the application's, planned here
        # meanwhile; the longest go first, the short ones fill the gaps at the end.
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            futures = {name: pool.submit(write_entry, name, entry)
                       for name, entry in (("python", python), ("deps", deps))}
            linked = {name: entry for name, entry in (("libraries", libraries),
                                                      ("bytecode", bytecode)) if entry}
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
            labels = {**labels,
                      "org.opencontainers.image.base.digest": base_image.manifest_digest}
        config = _config(app, recipe, labels, packages, layers, base_image)
        config_digest = _write_blob(blobs, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest,
                        "size": layer.size} for layer in layers],
            "annotations": {"org.opencontainers.image.created": CREATED,
                            **{k: v for k, v in labels.items()
                               if k.startswith("org.opencontainers.image.")}},
        }
        manifest_bytes = _canonical(manifest)
        manifest_digest = _write_blob(blobs, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest_digest, "size": len(manifest_bytes),
                           "annotations": {"org.opencontainers.image.ref.name": tag}}],
        }
        (work / "index.json").write_bytes(_canonical(index))
        (work / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        if archive is not None:
            temporary = work.with_suffix(".tar")
            try:
                with open(temporary, "wb", buffering=_CHUNK) as out:
                    _write_layout_archive(work, out)
                os.replace(temporary, archive.absolute())
            finally:
                remove_tree(temporary)
        if layout is not None:
            _replace(work, layout.absolute())
    finally:
        remove_tree(work)
    return ImageResult(targets[0], manifest_digest, tuple(layers), config_digest)


def _base_layers(base: BaseImage, blobs: Path) -> list[Layer]:
    layers = []
    for number, (descriptor, diff_id) in enumerate(zip(base.layers, base.diff_ids)):
        digest = str(descriptor["digest"])
        target = blobs / digest.split(":")[1]
        if not target.exists():
            with base.read_blob(digest) as source, open(target, "wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
        layers.append(Layer(f"base {number}", digest, diff_id, int(descriptor["size"]),  # type: ignore[call-overload]
                            str(descriptor["mediaType"]), 0))
    return layers


def _config(app: Entry, recipe: Image, labels: Mapping[str, str], packages: Mapping[str, str],
            layers: Sequence[Layer], base: BaseImage | None = None) -> bytes:
    out = str(app.path)

    def fill(words: Iterable[str]) -> list[str]:
        return [word.replace("@out@", out) for word in words]

    inherited = dict(str(item).split("=", 1) for item in (base.config.get("Env") or [])  # type: ignore[union-attr]
                     if "=" in str(item)) if base is not None else {}
    path = inherited.pop("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {**inherited, "PATH": f"{out}/bin:{path}", "PYTHONDONTWRITEBYTECODE": "1",
           "LANG": "C.UTF-8", "VIRTUAL_ENV": out, **recipe.env}
    if base is not None:
        labels = {**(base.config.get("Labels") or {}), **labels}  # type: ignore[dict-item]
    all_labels = {**labels, **recipe.labels, "org.opencontainers.image.created": CREATED}
    if packages:
        all_labels["org.lockbox.base.packages"] = ", ".join(
            f"{k}={v}" for k, v in sorted(packages.items()))
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
    return _canonical({
        "created": CREATED,
        "architecture": _architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": f"lockbox: {layer.name} layer"}
                    for layer in layers],
    })


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
    for its place (:mod:`lockbox.records`): a blob and record made elsewhere, or moved from
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
            return Layer(name, record["digest"], record["diff_id"], record["size"],
                         record["media_type"], record["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def keep(self, layer: Layer, blobs: Path) -> None:
        """Keep ``layer``'s blob (from ``blobs``) for the next image; failing quietly, as a
        cache may."""
        temporary = self.blob.with_name(f".{self.blob.name}.{uuid.uuid4().hex[:12]}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blobs / layer.digest.split(":")[1], temporary)
            os.replace(temporary, self.blob)
            record = {"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
                      "media_type": layer.media_type, "files": layer.files}
            records.write(self.meta, self.place, json.dumps(record).encode())
        except OSError:
            temporary.unlink(missing_ok=True)


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


def _replace(new: Path, target: Path) -> None:
    if target.exists():
        if not (target / "oci-layout").is_file():
            raise ImageError(f"{target} exists and is not an OCI image layout; choose another "
                             "directory or remove it")
        old = new.with_name(new.name + ".old")
        os.rename(target, old)
        os.rename(new, target)
        remove_tree(old)
    else:
        os.rename(new, target)


@dataclass(frozen=True)
class Skopeo:
    """skopeo, which pushes images to registries (and reads them back in tests)."""

    executable: Path

    @classmethod
    def find(cls) -> Skopeo:
        from lockbox.run import which

        return cls(which("skopeo", "install skopeo (Debian: apt-get install skopeo); lockbox "
                                   "pushes images with it"))

    def push(self, layout: Path, tag: str, reference: str, *, authfile: Path | None = None,
             tls_verify: bool = True, progress: Progress = silent) -> None:
        """Copy the image ``tag`` of the OCI layout ``layout`` to ``reference``
        (``registry/repository:tag``). Credentials come from ``authfile`` or the usual
        docker/podman auth files."""
        from lockbox.errors import ToolFailed
        from lockbox.run import run

        argv: list[str | os.PathLike[str]] = [self.executable, "copy", "--quiet"]
        if authfile is not None:
            argv += ["--dest-authfile", authfile]
        argv += [f"--dest-tls-verify={'true' if tls_verify else 'false'}",
                 f"oci:{layout}:{tag}", f"docker://{reference.removeprefix('docker://')}"]
        try:
            run(argv, progress=progress)
        except ToolFailed as error:
            text = error.stderr.strip().splitlines()[-1] if error.stderr.strip() else str(error)
            lowered = text.lower()
            if "unauthorized" in lowered or "authentication required" in lowered:
                raise ImageError(f"the registry refused the credentials for {reference}: {text}\n"
                                 "log in first (`skopeo login REGISTRY`) or pass --authfile "
                                 "with a docker/podman auth file") from None
            if "http response to https client" in lowered:
                raise ImageError(f"{reference}: the registry speaks plain HTTP; pass "
                                 "--no-tls-verify if that is intended") from None
            raise ImageError(f"pushing to {reference} failed: {text}") from None
