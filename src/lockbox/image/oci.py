"""OCI images made directly from a built closure, without Docker: :func:`make_image`.

The image holds the closure at the paths it has in the store, so the application's
``@out@`` paths hold inside the image too. Its layers follow the closure, most stable first:

1. ``base``: the glibc family and the dynamic loader from the build host (the only things
   the closure does not carry; their Debian packages are recorded in the image's labels),
   ``/tmp``, and an ``/etc/passwd``/``/etc/group`` with root and nobody — or, with
   ``--base``, the layers of a local OCI image, whose config is the starting point
   (:mod:`lockbox.image.base`);
2. ``python``: the interpreter's store entry;
3. ``deps``: the dependency layer's store entry;
4. ``bytecode``: the store entry of the dependency layer's bytecode, when the recipe
   compiles it;
5. ``libraries``: the store entry of the host libraries bundled into the application;
6. ``app``: the application, in which each file the store hardlinks from one of those
   entries is a symbolic link to that entry's file.

So every layer but the last is a store entry at its own path, and an application rebuilt
from changed sources over the same dependency layer shares all of them with the image
before it: a registry already has them, and the store keeps their blobs for the next image
(:mod:`lockbox.image.cache`).

Every layer is a deterministic tar (:mod:`lockbox.image.tar`), compressed with gzip
without a file name or time (:mod:`lockbox.image.layers`). The same closure gives the same
blobs, the same manifest and the same digest on every machine whose store is at the same
path.

This module writes the config, the manifest and the index around those layers, as an OCI
image layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) or an archive of one
(``oci-archive``), beside its destination, and moves them into place. Pushing goes
through skopeo (:mod:`lockbox.tools.skopeo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lockbox.errors import ImageError
from lockbox.fs import rename, replace_tree, step, work_beside
from lockbox.image.base import (
    CONFIG,
    INDEX,
    MANIFEST,
    BaseImage,
    architecture,
    base_files,
    base_members,
)
from lockbox.image.cache import LayerCache
from lockbox.image.layers import (
    LAYER_GZIP,
    LAYER_TAR,
    Layer,
    application_members,
    entry_members,
    write_layer,
)
from lockbox.image.tar import CHUNK, MTIME, Member, tar_header, walk
from lockbox.inputs.recipe import Image
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store, remove_tree

if TYPE_CHECKING:
    from lockbox.tools.dpkg import Dpkg

CREATED = datetime.fromtimestamp(MTIME, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
"""``SOURCE_DATE_EPOCH`` as the image config and annotations write a time."""


@dataclass(frozen=True)
class ImageResult:
    """The image written."""

    path: Path
    """The layout, or the archive when no layout was asked for."""
    manifest_digest: str
    """``sha256:…`` of the manifest: the image's digest, as a registry names it."""
    layers: tuple[Layer, ...]
    """The layers, base first."""
    config_digest: str


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
    dpkg: Dpkg | None = None,
    progress: Progress = silent,
) -> ImageResult:
    """Write the image of ``app`` (with the entries it references: its interpreter, its
    dependency layer, that layer's ``bytecode`` and its bundled ``libraries``) as an OCI
    layout at ``layout``, an archive at ``archive``, or both (from one set of blobs). With
    ``base_image`` its layers replace lockbox's own glibc base layer. With ``store``, the
    layers of those entries are kept beside them and taken from there by the next image
    (:class:`~lockbox.image.cache.LayerCache`). ``dpkg`` reads the host's glibc family for
    the base layer (none is needed with ``base_image``)."""
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
    writer = _LayerWriter(blobs, compress, store, progress)

    def base_layer() -> list[Member]:
        if dpkg is None:
            raise ImageError(
                "no dpkg to read the host's glibc with: a bug of lockbox, please report it"
            )
        files, found = base_files(dpkg, progress)
        packages.update(found)
        return base_members(files)

    with stack:
        blobs.mkdir(parents=True)
        # Layers are independent: ISA-L and hashlib let go of the GIL, so they overlap. Each
        # is planned by the thread that writes it but the application's, planned here
        # meanwhile; the longest go first, the short ones fill the gaps at the end.
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            futures = {
                name: pool.submit(writer.entry, name, entry)
                for name, entry in (("python", python), ("deps", deps))
            }
            linked = {
                name: entry
                for name, entry in (("libraries", libraries), ("bytecode", bytecode))
                if entry
            }
            for name, entry in linked.items():
                futures[name] = pool.submit(writer.entry, name, entry)
            members = application_members(app, [deps, *linked.values()])
            futures["app"] = pool.submit(writer.write, "app", lambda: members)
            if base_image is None:
                futures["base"] = pool.submit(writer.write, "base", base_layer)
            order = ["base", "python", "deps", "bytecode", "libraries", "app"]
            layers = [futures[name].result() for name in order if name in futures]
        if base_image is not None:
            layers = _base_layers(base_image, blobs) + layers
            # The digest names the base; its local path would make the image path-dependent.
            labels = {**labels, "org.opencontainers.image.base.digest": base_image.manifest_digest}
        config = _config(app, recipe, labels, packages, layers, base_image)
        config_digest = _write_blob(blobs, config)
        manifest_digest = _write_documents(tree, config_digest, len(config), layers, labels, tag)
        if archive is not None:
            archive_work = (
                work if layout is None else stack.enter_context(work_beside(archive.absolute()))
            )
            temporary = archive_work / "archive.tar"
            with open(temporary, "wb", buffering=CHUNK) as out:
                _write_layout_archive(tree, out)
            _check_archive_target(archive.absolute())
            rename(temporary, archive.absolute())
        if layout is not None:
            _check_layout_target(layout.absolute())
            if replace_tree(tree, layout.absolute()) is not None:
                step(f"remove old {layout.name}")
                remove_tree(tree)
    return ImageResult(targets[0], manifest_digest, tuple(layers), config_digest)


class _LayerWriter:
    """Writes layers as blobs of the layout being made, each as it is done, and reports it;
    an entry's layer is taken from the store's cache when it has one."""

    def __init__(self, blobs: Path, compress: bool, store: Store | None, progress: Progress):
        self.blobs = blobs
        self.compress = compress
        self.store = store
        self.progress = progress
        self.media_type = LAYER_GZIP if compress else LAYER_TAR

    def write(self, name: str, members: Callable[[], list[Member]]) -> Layer:
        temporary = self.blobs / f".{name}"
        with open(temporary, "wb", buffering=CHUNK) as out:
            digest, diff_id, size, count = write_layer(members(), out, self.compress)
        os.replace(temporary, self.blobs / digest.split(":")[1])
        self.progress.info(f"layer {name}: {count} entries, {size / 1e6:.1f} MB")
        return Layer(name, digest, diff_id, size, self.media_type, count)

    def entry(self, name: str, entry: Entry) -> Layer:
        store = self.store
        cache = (
            LayerCache(store.derived_dir(entry), self.compress, store.work_dir) if store else None
        )
        layer = cache.take(name, self.blobs) if cache else None
        if layer is not None:
            self.progress.info(
                f"layer {name}: {layer.files} entries, {layer.size / 1e6:.1f} MB "
                "(kept from an earlier image)"
            )
            return layer
        layer = self.write(name, lambda: entry_members(entry))
        if cache:
            cache.keep(layer, self.blobs)
        return layer


def _write_documents(
    tree: Path,
    config_digest: str,
    config_size: int,
    layers: Sequence[Layer],
    labels: Mapping[str, str],
    tag: str,
) -> str:
    """Write the manifest of the config and ``layers``, and the layout's index naming it
    as ``tag``; returns the manifest's digest."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
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
    manifest_digest = _write_blob(tree / "blobs" / "sha256", manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (tree / "index.json").write_bytes(_canonical(index))
    (tree / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest


def _base_layers(base: BaseImage, blobs: Path) -> list[Layer]:
    """The base's layers, their blobs copied (as they are: lockbox does not unpack them)
    into ``blobs`` and checked against their digests on the way."""
    layers = []
    for number, (descriptor, diff_id) in enumerate(zip(base.layers, base.diff_ids, strict=True)):
        target = blobs / descriptor.digest.split(":")[1]
        if not target.exists():
            temporary = blobs / f".base-{number}"
            with base.read_blob(descriptor) as source, open(temporary, "wb") as out:
                while chunk := source.read(CHUNK):
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

    # read_base checked that the base's Env is a list of strings, its Labels strings.
    inherited: dict[str, str] = {}
    base_env = base.config.get("Env") if base is not None else None
    for item in base_env if isinstance(base_env, list) else []:
        if "=" in str(item):
            key, value = str(item).split("=", 1)
            inherited[key] = value
    path = inherited.pop("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {
        **inherited,
        "PATH": f"{out}/bin:{path}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": out,
        **recipe.env,
    }
    base_labels = base.config.get("Labels") if base is not None else None
    if isinstance(base_labels, dict):
        labels = {**base_labels, **labels}
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
            "architecture": architecture(),
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


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


def _write_layout_archive(layout: Path, out: BinaryIO) -> None:
    """The layout as a tar; the blobs' bytes go from file to file in the kernel."""
    written = 0
    for path, info in sorted(walk(layout))[1:]:  # the layout's own directory is not in it
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
                chunk = os.read(source, min(CHUNK, size - offset))
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
