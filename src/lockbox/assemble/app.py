"""The assembly phase: the dependency layer and the project's source in, the application out.

It runs offline. Everything it starts runs in an offline sandbox (:mod:`lockbox.tools.sandbox`)
with a clean environment: bytecode compilation, lockbox's own command, without
capabilities, writing only the project's packages' ``__pycache__`` directories;
verification, which runs the dependencies' code, as an unprivileged user that can write
nothing but its own empty scratch directories, the application mounted read-only at its
final path. The rest is lockbox moving and editing files.
The application is input-addressed: its store path is known before it is built (its digest
covers the dependency layer's hash, the interpreter's entry, the project's sources, the
recipe, the host libraries it bundles with patchelf's version (:mod:`lockbox.native.hostlibs`) and
lockbox's identity), so ``@out@`` can be written into it, and an unchanged rebuild is a
lookup.

Steps, in this order (docs/assemble.md):

1. the dependency layer's ``site-packages`` is linked (in the store) or copied (export);
2. the project's own sources are copied to a work area, then the recipe's ``patches`` are
   applied to them, then its ``substitute`` replacements;
3. the workspace members and the project are installed from there with their dist-info;
4. ``app.site-packages`` and ``app.root`` paths are copied from there;
5. ``app.delete`` removes paths from the output;
6. native libraries are resolved, bundled and relinked (:mod:`lockbox.native.relink`); the
   interpreter's entry is linked (or copied) in; ``bin/`` (interpreter links, entry-point
   launchers) and ``pyvenv.cfg`` are written;
7. with ``compile-bytecode``, unchecked-hash ``.pyc`` files are written;
8. ``[verify]`` imports and commands run, unprivileged, seeing the application read-only;
   any failure registers nothing;
9. the tree is registered as an ``app`` entry (or, for an export, moved into place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import build_identity, fs
from lockbox.assemble.bytecode import deps_bytecode
from lockbox.assemble.libraries import application_libraries, layer_libraries, share_libraries
from lockbox.assemble.sources import read_sources
from lockbox.assemble.tree import Assembly, Placement, assemble_tree
from lockbox.errors import AssemblyError
from lockbox.inputs.project import Project
from lockbox.inputs.recipe import recipe_as_dict
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store, inputs_digest

if TYPE_CHECKING:
    from lockbox.assemble.sources import Sources
    from lockbox.assemble.tree import AssemblyReport
    from lockbox.inputs.build import BuildInputs
    from lockbox.native.hostlibs import HostLibraries
    from lockbox.tools.patchelf import Patchelf
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox


@dataclass(frozen=True)
class AppResult:
    path: Path
    """Where the application is."""
    entry: Entry | None
    """Its store entry; None for an export."""
    reused: bool
    """True when it was in the store already and nothing ran."""
    report: AssemblyReport | None
    consulted: tuple[str, ...] = ()
    """For a build in the store: every path read to find it (the project's sources, the
    interpreter's files, the host libraries bundled, patchelf), what would notice a change."""


def app_inputs(
    project: Project,
    deps: Entry,
    python: Entry,
    sources: Sources,
    store: Store,
    libraries: HostLibraries,
    patchelf: Patchelf,
) -> dict[str, object]:
    """Everything the application's bytes depend on: its store digest is made from this."""
    recipe = recipe_as_dict(project.recipe)
    recipe.pop("project", None)  # where the project is does not change what is built
    recipe.get("deps", {}).pop("hash", None)  # the layer itself is an input, below
    recipe.pop("image", None)  # how an image is configured does not change the application
    return {
        "deps": deps.nar_hash.sri,
        "python": python.path_name,
        "sources": sources.digest,
        "recipe": recipe,
        "libraries": libraries.inputs(project.recipe.libraries.bundle),
        "patchelf": patchelf.version,
        "lockbox": build_identity(),
        "store": str(store.root),  # @out@ and launchers name the store path
    }


def build_app(
    inputs: BuildInputs,
    store: Store,
    deps: Entry,
    tools: Toolbox,
    progress: Progress = silent,
) -> AppResult:
    """Make (or find) the application of ``inputs.project`` in ``store`` from the layer
    ``deps``."""
    from lockbox.assemble.interpreter import import_python

    project, interpreter = inputs.project, inputs.interpreter
    patchelf = tools.patchelf
    sources = read_sources(project, inputs.plan)
    python = import_python(
        interpreter, store, tools, bundle=project.recipe.libraries.bundle, progress=progress
    )
    libraries = application_libraries(project, deps, sources, store)
    made_from = app_inputs(project, deps, python.entry, sources, store, libraries, patchelf)
    name = project.app_name
    existing = store.find_inputs("app", name, made_from)
    if existing is not None:
        progress.info(f"the application is in the store: {existing.path}")
        store.add_root(name, existing)
        consulted = (*sources.consulted, *python.consulted, *libraries.consulted)
        return AppResult(existing.path, existing, reused=True, report=None, consulted=consulted)
    sandbox = offline_sandbox(tools)
    store.check_sealed(deps, python.entry)  # their files are linked into the application
    out = store.root / f"{inputs_digest('app', name, made_from)}-{name}"
    bytecode = (
        deps_bytecode(store, deps, python, sandbox, progress)
        if project.recipe.app.compile_bytecode
        else None
    )
    with store.staging() as stage:
        content = stage / "content"
        report = assemble_tree(
            Assembly(
                project,
                sources,
                deps.path,
                interpreter,
                python,
                bytecode,
                layer_libraries(store, deps),
            ),
            Placement(
                out,
                content,
                stage,
                link=True,
                hidden=[store.root],
                log=store.layout.logs / f"{out.name}.log",
            ),
            tools,
            progress=progress,
        )
        uncovered = libraries.uncovered(library["from"] for library in report.bundled.values())
        if uncovered:
            raise AssemblyError(
                f"lockbox bundled {', '.join(uncovered)} without counting them "
                "among the application's inputs: a bug of lockbox, please "
                "report it"
            )
        shared = share_libraries(store, content, report.bundled, name)
        # Rooted under its name, as the latest build of it: `lockbox gc` keeps it and what
        # it references (its layer, its interpreter) until another build takes the name.
        entry = store.register(
            content,
            name=name,
            kind="app",
            inputs=made_from,
            references=[
                deps.path_name,
                python.entry.path_name,
                *([bytecode.path_name] if bytecode else []),
                *([shared.path_name] if shared else []),
            ],
            metadata={"bundled": report.bundled},
            root=name,
        )
    return AppResult(entry.path, entry, reused=False, report=report)


def export_app(
    inputs: BuildInputs,
    store: Store,
    deps: Entry,
    tools: Toolbox,
    to: Path,
    progress: Progress = silent,
) -> AppResult:
    """Assemble the application for the directory ``to`` and put it there. ``to`` must not
    exist, be empty, or hold an earlier export, which is replaced only on success."""
    from lockbox.assemble.interpreter import import_python

    project, interpreter = inputs.project, inputs.interpreter
    to = to.absolute()
    sources = read_sources(project, inputs.plan)
    python = import_python(
        interpreter, store, tools, bundle=project.recipe.libraries.bundle, progress=progress
    )
    earlier = to.exists() and any(to.iterdir())
    if earlier and "lockbox-app" not in _read_text(to / "pyvenv.cfg"):
        raise AssemblyError(
            f"{to} is not empty and is not an earlier export; choose another directory or empty it"
        )
    sandbox = offline_sandbox(tools)
    store.check_sealed(deps, python.entry)  # their files are copied into the export
    bytecode = (
        deps_bytecode(store, deps, python, sandbox, progress)
        if project.recipe.app.compile_bytecode
        else None
    )
    to.parent.mkdir(parents=True, exist_ok=True)
    created = not to.exists()
    to.mkdir(exist_ok=True)  # the mount point of the sandbox's view of the output
    log = to.parent / f"{to.name}.lockbox-verify.log"  # kept only when verification fails
    try:
        # The new tree is written in a locked directory beside ``to`` (which first clears away
        # what killed exports left there) and swapped with it in one step: ``to`` is the
        # earlier export or this one at every instant, never neither.
        with fs.work_beside(to) as work:
            log.unlink(missing_ok=True)
            content = work / "content"
            report = assemble_tree(
                Assembly(
                    project,
                    sources,
                    deps.path,
                    interpreter,
                    python,
                    bytecode,
                    layer_libraries(store, deps),
                ),
                Placement(to, content, work, link=False, hidden=[], log=log),
                tools,
                progress=progress,
            )
            fs.replace_tree(content, to)
            log.unlink(missing_ok=True)
    except BaseException:
        if created and to.is_dir() and not any(to.iterdir()):
            to.rmdir()
        raise
    return AppResult(to, None, reused=False, report=report)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def offline_sandbox(tools: Toolbox) -> Sandbox:
    """The toolbox's sandbox, once it is known to make both offline sandboxes here."""
    sandbox = tools.sandbox
    sandbox.check_offline(tools.progress)
    return sandbox
