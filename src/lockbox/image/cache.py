"""The cache of layer blobs kept for store entries, for the next image that holds them.

:func:`lockbox.image.oci.make_image` asks :class:`LayerCache` for an entry's layer before
writing it (:mod:`lockbox.image.layers`) and hands it the layer it wrote. The blob and its
record live in the entry's derived directory of the store, so they go when the entry goes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lockbox.fs import rename, work_beside
from lockbox.image.layers import GZIP_LEVEL, Layer
from lockbox.image.tar import CHUNK
from lockbox.store import records


class LayerCache:
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
                while chunk := file.read(CHUNK):
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
