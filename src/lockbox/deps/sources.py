"""Extra sources: distributions fetched by URL or from git, pinned by a declared hash.

Some distributions cannot come from uv.lock as it is: authentik's lock takes
``opencontainers`` from a git repository that a build machine may not reach. The recipe
leaves the package out (``deps.exclude``) and names where to get it instead
(``deps.extra-sources``): an archive URL with the SHA-256 of the file, or a git repository,
a commit and the NAR hash of its checkout. The dependency phase fetches each one (only it
may use the network), checks the hash before anything is built from it, and installs it
into the layer with ``uv pip install --no-deps`` in the same sandbox as the rest, so it is
built with the same reproducibility settings and ends in the layer with its dist-info.

Fetched sources are kept in the store's working directory under their declared hash
(``STORE/.lockbox/sources/``) and checked again on every use: an intact one is never
fetched again, a changed one is fetched anew.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.errors import HashMismatch, SourceError
from lockbox.hashes import Sha256
from lockbox.inputs.recipe import ExtraSource
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.tools.git import Git
    from lockbox.tools.toolbox import Toolbox


def fetch(
    source: ExtraSource, directory: Path, tools: Toolbox, progress: Progress = silent
) -> Path:
    """The checked file (``url``) or directory (``git``) of ``source``, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    name = _name(source)
    final = directory / f"{source.hash.base32[:32]}-{name}"
    # An archive keeps its own name (in a directory named by its hash): installers read the
    # distribution's name and version from it.
    found = final / name if source.url is not None else final
    if final.exists():
        # Checked again on every use: a build's code, which sees the kept sources, or
        # anyone else could have changed them since.
        if _hash(source, found) == source.hash:
            progress.debug(f"extra source {source.label} is fetched already: {found}")
            return found
        progress.warning(
            f"the kept copy of the extra source {source.label} no longer has "
            "its declared hash; fetching it again"
        )
        fs.remove_tree(final)
    temporary = directory / f".{uuid.uuid4().hex}-{name}"
    try:
        if source.url is not None:
            progress.info(f"fetching {source.url}")
            temporary.mkdir()
            got = _download(source.url, temporary / name)
            what = f"the extra source {source.url}"
            fix = (
                "if the file changed on purpose, put its SHA-256 in the recipe's "
                "deps.extra-sources hash"
            )
        else:
            progress.info(f"fetching {source.git} at {source.rev}")
            _clone(source, temporary, tools.git, progress)
            from lockbox.store.nar import nar_hash

            got = nar_hash(temporary).sha256
            what = f"the extra source {source.git} at {source.rev}"
            fix = (
                "the hash of a git source is the NAR hash of the checkout without .git "
                "(`lockbox hash DIR`); correct the recipe's deps.extra-sources hash"
            )
        if got != source.hash:
            raise HashMismatch(what, source.hash.sri, got.sri, None, fix)
        os.rename(temporary, final)
    finally:
        fs.remove_tree(temporary)
    return found


def _hash(source: ExtraSource, found: Path) -> Sha256 | None:
    """The hash ``source`` declares, as the kept ``found`` has it now (None if it cannot
    be read)."""
    from lockbox.errors import NarError
    from lockbox.store.nar import nar_hash

    try:
        if source.url is None:
            return nar_hash(found).sha256
        digest = hashlib.sha256()
        with open(found, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        return Sha256(digest.digest())
    except (OSError, NarError):
        return None


def _name(source: ExtraSource) -> str:
    if source.url is not None:
        name = os.path.basename(urllib.parse.urlparse(source.url).path)
    else:
        assert source.git is not None
        name = os.path.basename(source.git.rstrip("/")).removesuffix(".git")
    name = "".join(c if c.isalnum() or c in "._-+" else "_" for c in name)
    # The name becomes a path component: "." or ".." (https://host/x/..) would not be one.
    return name if name.strip(".") else "source"


def _download(url: str, target: Path) -> Sha256:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError) as error:
        raise SourceError(
            f"cannot download the extra source {url}: {error}; check the URL "
            "and the network (the dependency phase may use it)"
        ) from None
    return Sha256(digest.digest())


def _clone(source: ExtraSource, target: Path, git: Git, progress: Progress) -> None:
    assert source.git is not None and source.rev is not None
    git.checkout(source.git, source.rev, target, progress)
    fs.remove_tree(target / ".git")
