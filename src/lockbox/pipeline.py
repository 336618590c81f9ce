"""The pipeline: the phases of a build, in order.

1. the dependency phase (:mod:`lockbox.deps.phase`): ``uv.lock`` in, one pinned layer out —
   a store lookup when the declared layer is there;
2. the assembly phase (:mod:`lockbox.assemble.app`): the interpreter entry, the layer's
   bytecode and the application, offline, verified — a lookup when its inputs are unchanged;
3. the entries that will run are checked against their seals when they were found rather
   than made.

``build``, ``run``, ``why``, ``image``, ``export`` and ``check`` all build through here, and
``lockbox check``'s rebuild replays the same phases in its varied world (:func:`rebuild`).
The inputs are read once for all phases (:class:`lockbox.inputs.build.BuildInputs`) and the
tools found once (:class:`lockbox.tools.toolbox.Toolbox`). This module only puts the phases
in order: what each does is in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.inputs.build import BuildInputs
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store
from lockbox.tools.toolbox import Toolbox

if TYPE_CHECKING:
    from lockbox.assemble.app import AppResult
    from lockbox.deps.buildroot import RootPins
    from lockbox.deps.phase import DepsResult


@dataclass(frozen=True)
class Build:
    """What a build made or found."""

    inputs: BuildInputs
    deps: DepsResult
    """The dependency layer."""
    app: AppResult | None
    """The application; None when only the dependency layer was asked for."""
    interpreters: tuple[Entry, ...] = ()
    """The interpreter entries the application runs (its ``python`` link)."""

    @property
    def result(self) -> Path:
        """What the build gives the user: the application, else the dependency layer."""
        return self.app.path if self.app is not None else self.deps.entry.path

    @property
    def reused(self) -> bool:
        """Whether everything was found in the store and nothing ran."""
        return self.deps.reused and (self.app is None or self.app.reused)

    def used(self) -> list[Entry]:
        """The entries a command that uses this build runs: the application and its
        interpreter, or the dependency layer."""
        if self.app is None or self.app.entry is None:
            return [self.deps.entry]
        return [self.app.entry, *self.interpreters]

    def consulted(self, store: Store) -> tuple[list[str], list[str]] | None:
        """Every path a lookup of this build read (what would notice a change) and every
        output it found, for the record that answers the same command next time
        (:mod:`lockbox.cli.shortcut`); None when something was built."""
        if not self.reused:
            return None
        from lockbox import identity_paths
        from lockbox.deps import toolchain
        from lockbox.deps.inputs import inputs_file

        project = self.inputs.project
        inputs = [
            *map(str, project.consulted),
            *map(str, identity_paths()),
            str(inputs_file(project)),
            *toolchain.paths((self.deps.record or {}).get("toolchain", {})),
        ]
        outputs = [str(self.deps.entry.path)]
        if self.app is not None:
            from lockbox.inputs.interpreters import discovery_paths

            inputs += [
                *self.app.consulted,
                *map(str, discovery_paths(project.recipe.python, self.inputs.environment)),
            ]
            outputs += [str(self.app.path), str(store.root_path(project.app_name))]
        return inputs, outputs


def build(
    inputs: BuildInputs,
    store: Store,
    tools: Toolbox,
    progress: Progress = silent,
    *,
    deps_only: bool = False,
) -> Build:
    """Make (or find) the dependency layer, then — unless ``deps_only`` — the application."""
    deps = build_layer(inputs, store, tools, progress)
    if deps_only:
        if deps.reused:
            store.check_sealed(deps.entry)
        return Build(inputs, deps, None)
    from lockbox.assemble.app import build_app

    app = build_app(inputs, store, deps.entry, tools, progress)
    assert app.entry is not None
    interpreters = tuple(referenced(store, app.entry, "python"))
    if app.reused:
        # What runs: the application (its layer's files are hardlinked into it) and the
        # interpreter its python link names. A new one was made from checked entries.
        store.check_sealed(app.entry, *interpreters)
    _report_app(app, progress)
    return Build(inputs, deps, app, interpreters)


def build_layer(
    inputs: BuildInputs,
    store: Store,
    tools: Toolbox,
    progress: Progress = silent,
    *,
    root: RootPins | None = None,
) -> DepsResult:
    """Make (or find) the dependency layer (``root``: the build root to compile in instead
    of the one ``lockbox.inputs.toml`` pins)."""
    from lockbox.deps.phase import build_deps

    result = build_deps(inputs, store, tools, progress, root=root)
    layer = result.layer
    if layer is not None:
        progress.info(
            f"dependency layer: {len(layer.distributions)} distributions, {layer.files} files, "
            f"{layer.bytes / 1e6:.1f} MB"
        )
    progress.info(f"deps hash: {result.hash}")
    return result


def export(
    inputs: BuildInputs, store: Store, tools: Toolbox, to: Path, progress: Progress = silent
) -> AppResult:
    """Make (or find) the dependency layer, then write the application to ``to``."""
    from lockbox.assemble.app import export_app

    deps = build_layer(inputs, store, tools, progress)
    return export_app(inputs, store, deps.entry, tools, to, progress)


def referenced(store: Store, entry: Entry, kind: str) -> list[Entry]:
    """The entries of ``kind`` that ``entry`` references."""
    return [
        found
        for found in map(store.get, entry.references)
        if found is not None and found.kind == kind
    ]


def closure(store: Store, app: Entry) -> dict[str, Entry]:
    """The entries the application ``app`` references, by kind: its interpreter, its
    dependency layer, that layer's bytecode (if compiled), its bundled libraries (if any)."""
    return {entry.kind: entry for entry in map(store.get, app.references) if entry}


def _report_app(app: AppResult, progress: Progress) -> None:
    report = app.report
    if report is not None:
        progress.info(
            f"application: {len(report.members)} members, {len(report.patched)} patches, "
            f"{sum(report.substituted.values())} substitutions, {len(report.scripts)} "
            f"scripts, {len(report.verified)} checks passed"
        )
