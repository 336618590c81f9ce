"""The host libraries an input-addressed entry bundles, as inputs of its address.

The ``python`` and ``app`` entries are input-addressed (docs/store.md): a build with the same
inputs is a lookup. The libraries they take from the host (:mod:`lockbox.native.resolve` finds
them, :mod:`lockbox.native.relink` copies them in and rewrites files with patchelf) are bytes of
the entry, so they are inputs too: each one's resolved path and the SHA-256 of its bytes —
without bundling only its path, which is all the run paths name — beside patchelf's version.
An upgraded ``libssl3`` makes a new entry instead of the old bundle.

The application's address is written into it (``@out@``, launchers), so these inputs are
known before anything is assembled, and a lookup must get them cheaply. They come from the
names the entry's ELF files need (``DT_NEEDED``), each looked for outside the output — the
recipe's library paths, then the host's loader cache, as :func:`lockbox.native.resolve.resolve`
does — and in turn the names the libraries found need. Every name is looked for this way,
even one the output itself provides: the result holds every library the build bundles and
perhaps a few it does not (a change to one of those makes a new entry needlessly, never a
stale one).

Reading ELF files is the slow part (importing pyelftools alone costs 0.2 s, more than the
rest of a lookup; reading the example's 41 host libraries 0.1 s, scanning its dependency
layer 0.2 s), so a lookup reads none: the names a file or tree needs are kept in
``STORE/.lockbox/needed/`` under what stands for its content — ``sha256-<hex>`` for a file
(a host library, an ELF file among the project's sources), ``nar-<hex>`` for a store
entry's tree, ``python-<digest>`` for an interpreter installation (its identity, as the
``python`` entry's address takes it). What is kept there never goes stale; deleting it only
makes the next lookup read the files again. Each is signed with the store's key
(:mod:`lockbox.store.records`) for its own name: one changed, or moved to another name, is read
again from the files instead, since a name left out would leave a library out of the
inputs. A library's bytes are hashed on every lookup
(once per process), which is what notices an upgrade.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.native.resolve import GLIBC_FAMILY, find_outside, host_libraries
from lockbox.store import layout, records

if TYPE_CHECKING:
    from lockbox.native.elf import ElfInfo
    from lockbox.store.store import Entry, Store

LOADER_CACHE = "/etc/ld.so.cache"
"""What ``ldconfig -p`` lists (the host's half of the resolution) is read from."""

_FORMAT = "lockbox-needed 2"

_digests: dict[tuple[str, int, int, int, int], str] = {}
"""SHA-256 of files hashed by this process, by path, device, inode, size and mtime."""


@dataclass(frozen=True)
class HostLibraries:
    """What the names an entry's ELF files need resolve to outside the entry."""

    found: Mapping[str, str | None]
    """Each needed name (glibc's family left out) → the file it resolves to, or None when
    neither the recipe's library paths nor the host have it."""
    digests: Mapping[str, str]
    """Each file of :attr:`found` → the SHA-256 of its bytes, in hex."""
    consulted: tuple[str, ...]
    """Where a change of the answer shows: the loader cache, the recipe's library
    directories, and each library as they name it and as resolved."""

    def inputs(self, bundle: bool) -> dict[str, object]:
        """The part of an entry's inputs they are: name → path and SHA-256 when the entry
        bundles them, name → path when it only links to them."""
        if not bundle:
            return dict(sorted(self.found.items()))
        return {
            name: None if path is None else {"path": path, "sha256": self.digests[path]}
            for name, path in sorted(self.found.items())
        }

    def uncovered(self, bundled: Iterable[str]) -> list[str]:
        """The host files among ``bundled`` these inputs do not cover (none, unless the
        resolution here and the build's disagree: a bug)."""
        return sorted(set(bundled) - set(self.digests))


def host_closure(
    needed: Iterable[str],
    store: Store,
    *,
    recipe_paths: Sequence[Path] = (),
    host: Mapping[str, Path] | None = None,
) -> HostLibraries:
    """Resolve ``needed`` outside the output, and what the libraries found need."""
    host = host_libraries() if host is None else host
    found: dict[str, str | None] = {}
    digests: dict[str, str] = {}
    consulted = [LOADER_CACHE, *map(str, recipe_paths)]
    pending = sorted(set(needed) - GLIBC_FAMILY, reverse=True)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        library = find_outside(name, recipe_paths, host)
        found[name] = None if library is None else str(library.path)
        if library is None:
            continue
        consulted += [
            str(directory / name) for directory in recipe_paths if os.path.lexists(directory / name)
        ]
        consulted += [*([str(host[name])] if name in host else []), str(library.path)]
        if str(library.path) not in digests:
            digest = file_sha256(library.path)
            digests[str(library.path)] = digest
            wanted = file_needs(store, library.path, digest)
            pending += sorted(set(wanted) - GLIBC_FAMILY - set(found), reverse=True)
    return HostLibraries(found, digests, tuple(dict.fromkeys(consulted)))


def entry_needs(store: Store, entry: Entry) -> tuple[str, ...]:
    """What the ELF files of the store entry ``entry`` that this machine loads need
    (entries never change)."""

    def read() -> tuple[str, ...]:
        from lockbox.native.elf import scan_tree

        return _names(scan_tree(entry.path)[0])

    return cached_needs(store, f"nar-{entry.nar_hash.hex}", read)


def file_needs(store: Store, path: Path, digest: str) -> tuple[str, ...]:
    """What the ELF file ``path``, whose bytes have the SHA-256 ``digest``, needs."""
    return cached_needs(store, f"sha256-{digest}", lambda: files_needs([path]))


def cached_needs(store: Store, key: str, read: Callable[[], Iterable[str]]) -> tuple[str, ...]:
    """The names kept under ``key`` (which must stand for the content they were read from),
    else ``read()``'s, kept for next time."""
    meta, place = str(store.layout.meta), f"{layout.NEEDED}/{key}"
    body, _ = records.read(meta, place)
    try:
        lines = body.decode("utf-8").split("\n") if body is not None else []
    except UnicodeDecodeError:
        lines = []
    if lines[:1] == [_FORMAT] and lines[-2:] == ["end", ""]:
        return tuple(lines[1:-2])
    names = tuple(sorted(set(read())))
    # A cache: if it cannot be written, the next lookup reads the files again.
    records.write(meta, place, "\n".join([_FORMAT, *names, "end", ""]).encode("utf-8"))
    return names


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, in hex; read once per process unless it changes."""
    info = os.stat(path)
    key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _digests:
        with open(path, "rb") as file:
            _digests[key] = hashlib.file_digest(file, "sha256").hexdigest()
    return _digests[key]


def files_needs(paths: Iterable[Path]) -> tuple[str, ...]:
    """What the ELF files among ``paths`` need, read now. Files for another machine count
    too (the loader would never load them, the resolution skips them): the answer for a
    file must not depend on where it is read, and one name too many costs nothing."""
    from lockbox.native.elf import read_elf

    return _names(filter(None, map(read_elf, paths)))


def _names(infos: Iterable[ElfInfo]) -> tuple[str, ...]:
    return tuple(sorted({name for info in infos for name in info.needed}))
