"""Resolving the shared libraries the ELF files of an output need, as the loader would.

The native-library step reads every ELF file of an output (:mod:`lockbox.native.elf`), resolves
each ``DT_NEEDED`` here, and rewrites what must change (:mod:`lockbox.native.relink`). Resolution
never runs a binary. Each needed name is looked for, in order:

1. in the output itself: the directories the file's own ``$ORIGIN`` run paths name
   (manylinux wheels vendor their libraries in ``<package>.libs/`` that way), then any file
   of the output with that name or soname (libraries bundled earlier, other vendored ones);
2. in the recipe's ``libraries.paths``;
3. in the host's library directories, as the host's ``ldconfig`` cache lists them.

Each entry of a closure carries the libraries its own files need (the interpreter's entry
its own, the application its own), so that no path from one entry into another has to
survive a move.

The glibc family (:data:`GLIBC_FAMILY`) is never resolved: those libraries come with the
loader on whatever system runs the output. Libraries found on the host are themselves
resolved the same way, so that what they need is found (and bundled) too. Whatever is not
found anywhere is collected, and reported at once with the files that want it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lockbox.errors import UnsatisfiedLibraries
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    # Not at run time: a lookup finds libraries (lockbox.native.hostlibs) without reading ELF
    # files, and importing pyelftools costs more than the rest of it.
    from lockbox.native.elf import ElfInfo

GLIBC_FAMILY = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libnsl.so.1",
        "libanl.so.1",
        "libmvec.so.1",
        "libBrokenLocale.so.1",
        "libc_malloc_debug.so.0",
        "libthread_db.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "ld-linux.so.2",
        "ld-linux-armhf.so.3",
        "ld64.so.2",
        "ld64.so.1",
    }
)
"""Sonames left to the dynamic loader: the libraries glibc itself ships (Debian's ``libc6``)
and the loaders. It is manylinux's policy list without the libraries that are not part of
glibc (``libgcc_s``, ``libstdc++``, ``libcrypt``, X11, GL), which are bundled like any other:
a system that runs the output needs glibc, nothing else."""

Where = Literal["output", "recipe", "host"]


@dataclass(frozen=True)
class Found:
    name: str
    """The ``DT_NEEDED`` entry."""
    path: Path
    """The file it resolves to."""
    where: Where


@dataclass
class Resolution:
    """What every ELF file of an output needs, and where each need was found."""

    files: dict[Path, list[Found]] = field(default_factory=dict)
    """Each ELF file of the output → its resolved non-glibc needs."""
    host: dict[Path, list[Found]] = field(default_factory=dict)
    """Each library found outside the output (host, recipe paths) → its own resolved needs."""
    missing: dict[str, list[str]] = field(default_factory=dict)
    """Needed name → the files (relative to the output, or host paths) that want it."""
    ignored: dict[str, list[str]] = field(default_factory=dict)
    """Missing names matched by ``ignore-missing``, with the files that want them."""
    infos: dict[Path, ElfInfo] = field(default_factory=dict)
    """What was read of each file above (reading ELF files is the slow part)."""


@cache
def host_libraries() -> dict[str, Path]:
    """The host's ldconfig cache for this machine's word size: soname → path."""
    from lockbox.tools.run import run

    ldconfig = next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), "ldconfig"
    )
    listing = run([ldconfig, "-p"], check=False).stdout
    wide = os.uname().machine in ("x86_64", "aarch64", "ppc64le", "s390x")
    found: dict[str, Path] = {}
    for line in listing.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        flags, _, path = rest.partition(") => ")
        if not path or (("64" in flags) != wide and "x32" not in flags):
            continue
        found.setdefault(name, Path(path))
    return found


def resolve(
    root: Path,
    elfs: Iterable[ElfInfo],
    *,
    recipe_paths: Sequence[Path] = (),
    ignore_missing: Sequence[str] = (),
    host: Mapping[str, Path] | None = None,
    progress: Progress = silent,
) -> Resolution:
    """Resolve the needs of ``elfs`` (files under ``root``) and, transitively, of every
    library found outside ``root``. Raises :class:`UnsatisfiedLibraries` unless every
    missing name matches an ``ignore_missing`` pattern."""
    from lockbox.native.elf import read_elf

    host = host_libraries() if host is None else host
    elfs = list(elfs)
    in_output = _index(elfs)
    result = Resolution()
    queue: list[tuple[ElfInfo, bool]] = [(info, True) for info in elfs]
    seen_outside: set[Path] = set()
    while queue:
        info, inside = queue.pop(0)
        label = os.path.relpath(info.path, root) if inside else str(info.path)
        resolved: list[Found] = []
        for name in info.needed:
            if name in GLIBC_FAMILY:
                continue
            found = _find(name, info, root, in_output, recipe_paths, host)
            if found is None:
                progress.debug(f"{name} -> not found (wanted by {label})")
                result.missing.setdefault(name, []).append(label)
                continue
            progress.debug(
                f"{name} -> found in {found.path.parent} ({found.where}), wanted by {label}"
            )
            resolved.append(found)
            if found.where in ("recipe", "host") and found.path not in seen_outside:
                seen_outside.add(found.path)
                library = read_elf(found.path)
                if library is not None:
                    queue.append((library, False))
        (result.files if inside else result.host)[info.path] = resolved
        result.infos[info.path] = info
    for name in list(result.missing):
        if any(fnmatch.fnmatch(name, pattern) for pattern in ignore_missing):
            result.ignored[name] = result.missing.pop(name)
    for name, wanted in sorted(result.ignored.items()):
        progress.warning(
            f"{name} is not found (wanted by {', '.join(wanted[:3])}); "
            "ignored as the recipe's ignore-missing allows"
        )
    if result.missing:
        raise UnsatisfiedLibraries(result.missing)
    return result


def origin_directories(info: ElfInfo, origin: Path) -> list[tuple[str, Path]]:
    """The ``$ORIGIN``-relative entries of a file's run path, each with the directory it
    names when the file is in the directory ``origin``."""
    here = str(origin)
    return [
        (
            entry,
            Path(os.path.normpath(entry.replace("${ORIGIN}", here).replace("$ORIGIN", here))),
        )
        for entry in info.runpath or info.rpath
        if entry.startswith(("$ORIGIN", "${ORIGIN}"))
    ]


def _find(
    name: str,
    info: ElfInfo,
    root: Path,
    in_output: Mapping[str, Path],
    recipe_paths: Sequence[Path],
    host: Mapping[str, Path],
) -> Found | None:
    for _, directory in origin_directories(info, info.path.parent):
        candidate = directory / name
        if candidate.is_relative_to(root) and candidate.exists():
            return Found(name, candidate, "output")
    if name in in_output:
        return Found(name, in_output[name], "output")
    return find_outside(name, recipe_paths, host)


def find_outside(name: str, recipe_paths: Sequence[Path], host: Mapping[str, Path]) -> Found | None:
    """Where ``name`` is found outside the output: the first of the recipe's library paths
    that holds it, else the host's loader cache; None if neither has it."""
    for directory in recipe_paths:
        if (directory / name).exists():
            return Found(name, (directory / name).resolve(), "recipe")
    if name in host:
        return Found(name, host[name].resolve(), "host")
    return None


def _index(elfs: Iterable[ElfInfo]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for info in elfs:
        index.setdefault(info.path.name, info.path)
        if info.soname:
            index.setdefault(info.soname, info.path)
    return index


def dependents(root: Path, name: str) -> list[list[str]]:
    """Why ``root`` (an application or interpreter entry) holds the library ``name``: each
    chain of files, relative to ``root``, from a file that is not itself a bundled library
    down to ``name``, e.g. ``[".../_psycopg.so", "lib/libpq.so.5", "lib/libssl.so.3"]``."""
    from lockbox.native.elf import scan_tree

    elfs, _ = scan_tree(root)
    bundled = {info.path.name for info in elfs if info.path.parent == root / "lib"}
    wanted_by: dict[str, list[ElfInfo]] = {}
    for info in elfs:
        for needed in info.needed:
            wanted_by.setdefault(needed, []).append(info)
    chains: list[list[str]] = []

    def walk(library: str, below: list[str]) -> None:
        for info in wanted_by.get(library, ()):
            relative = os.path.relpath(info.path, root)
            if relative in below:
                continue  # a cycle between bundled libraries
            if info.path.parent == root / "lib" and info.path.name in bundled:
                walk(info.path.name, [relative, *below])
            else:
                chains.append([relative, *below])

    walk(name, [f"lib/{name}"] if name in bundled else [name])
    return sorted(chains)
