"""The host libraries an application bundles: found, counted among its inputs, relinked.

What the ELF files of the layer and of the project need is resolved outside the output
(:mod:`lockbox.native.hostlibs`), bundled or linked to and rewritten with patchelf
(:mod:`lockbox.native.relink`); a bundle shared between applications is a store entry of
its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.inputs.project import Project
from lockbox.progress import Progress
from lockbox.store.store import Entry, Store

if TYPE_CHECKING:
    from lockbox.assemble.sources import Sources
    from lockbox.assemble.tree import AssemblyReport
    from lockbox.native.hostlibs import HostLibraries
    from lockbox.tools.toolbox import Toolbox


def application_libraries(
    project: Project, deps: Entry, sources: Sources, store: Store
) -> HostLibraries:
    """The host libraries the application bundles (or links to): what the ELF files of its
    layer and of the project's sources need, resolved outside it (:mod:`lockbox.native.hostlibs`)."""
    from lockbox.native.hostlibs import entry_needs, file_needs, host_closure

    needed = set(entry_needs(store, deps))
    for path, digest in sources.elf_files.items():
        needed.update(file_needs(store, Path(path), digest))
    return host_closure(
        needed,
        store,
        recipe_paths=[project.root / p for p in project.recipe.libraries.paths],
        host=layer_libraries(store, deps),
    )


def layer_libraries(store: Store, deps: Entry) -> Mapping[str, Path] | None:
    """Where the libraries a layer's extension modules need are found: in the build root
    it was compiled in, if any (so headers and libraries match, docs/toolchain.md); else
    None, the host's loader cache."""
    from lockbox.deps.buildroot import root_libraries

    roots = [
        entry
        for entry in map(store.get, deps.references)
        if entry is not None and entry.kind == "toolchain"
    ]
    return root_libraries(roots[0].path) if roots else None


def share_libraries(store: Store, content: Path, bundled: Iterable[str], name: str) -> Entry | None:
    """Make the libraries bundled into ``content``'s ``lib/`` a ``libraries`` store entry,
    of which the application's copies become hardlinks. The entry is addressed by its
    content, so every build that bundles the same libraries shares it: in the store, and
    as one layer in images (docs/image.md)."""
    names = sorted(bundled)
    if not names:
        return None
    with store.staging() as stage:
        tree = stage / "content" / "lib"
        tree.mkdir(parents=True)
        for library in names:
            os.link(content / "lib" / library, tree / library)
        entry = store.register(tree.parent, name=f"{name}-libraries", kind="libraries")
    for library in names:
        shared, own = entry.path / "lib" / library, content / "lib" / library
        if not os.path.samestat(os.stat(shared), os.stat(own)):  # an earlier build's entry
            with fs.replacing(own) as temporary:
                os.link(shared, temporary)
    return entry


def link_libraries(
    project: Project,
    content: Path,
    report: AssemblyReport,
    tools: Toolbox,
    progress: Progress,
    host: Mapping[str, Path] | None = None,
) -> None:
    """Resolve what every ELF file of the application needs; bundle and relink."""
    from lockbox.native.elf import scan_tree
    from lockbox.native.relink import relink
    from lockbox.native.resolve import resolve

    libraries = project.recipe.libraries
    elfs, foreign = scan_tree(content)
    for path in foreign:
        progress.warning(f"{os.path.relpath(path, content)} is for another machine; not relinked")
    progress.info(f"resolving the shared libraries of {len(elfs)} ELF files")
    resolution = resolve(
        content,
        elfs,
        recipe_paths=[project.root / p for p in libraries.paths],
        ignore_missing=libraries.ignore_missing,
        host=host,
        progress=progress,
    )
    relinked = relink(
        content, resolution, tools.patchelf, bundle=libraries.bundle, progress=progress
    )
    packages = tools.dpkg.owners_of(sorted(relinked.bundled.values()))
    report.bundled = {
        name: {"from": source, "package": packages.get(source, "")}
        for name, source in sorted(relinked.bundled.items())
    }
    report.relinked = len(relinked.patched)
    if not libraries.bundle:
        report.linked = sorted(resolution.host)
    if relinked.bundled:
        progress.info(
            f"bundled {len(relinked.bundled)} host libraries: "
            + ", ".join(sorted(relinked.bundled))
        )
