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

import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import build_identity, fs
from lockbox.errors import AssemblyError, ToolFailed
from lockbox.inputs.paths import confined, confined_glob
from lockbox.inputs.project import Project, read_toml
from lockbox.inputs.recipe import recipe_as_dict
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store, inputs_digest
from lockbox.tools.sandbox import REPRODUCIBLE_ENV, SYSTEM_PATHS

if TYPE_CHECKING:
    from lockbox.assemble.interpreter import PythonEntry
    from lockbox.deps.members import Member
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.interpreters import Interpreter
    from lockbox.inputs.plan import Plan
    from lockbox.native.hostlibs import HostLibraries
    from lockbox.tools.patchelf import Patchelf
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox

_IGNORED = ("__pycache__", "*.pyc", "*.pyo")
"""Never part of a project's sources: Python writes them on its own."""


@dataclass(frozen=True)
class Sources:
    """What the application is made of, besides the dependency layer."""

    members: tuple[Member, ...]
    """The workspace members and the project itself, when it is a package."""
    paths: tuple[str, ...]
    """Every project path the assembly reads, relative to the project root, sorted."""
    digest: str
    """SHA-256 over those paths' names, modes and bytes."""
    consulted: tuple[str, ...] = ()
    """Every file read and directory listed for the digest (absolute)."""
    elf_files: Mapping[str, str] = field(default_factory=dict)
    """Those of the files read that are ELF files (absolute) → the SHA-256 of their bytes,
    in hex: what the libraries they need are kept under (:mod:`lockbox.native.hostlibs`)."""


@dataclass
class AssemblyReport:
    """What the assembly did."""

    out: Path
    members: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    substituted: dict[str, int] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    bundled: dict[str, dict[str, str]] = field(default_factory=dict)
    """Host libraries copied into ``lib/``: name → where from, and its Debian package."""
    relinked: int = 0
    """ELF files whose run path was rewritten."""
    linked: list[Path] = field(default_factory=list)
    """Without bundling, the host libraries whose directories run paths name."""


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


def read_sources(project: Project, plan: Plan) -> Sources:
    """The members and paths the assembly of ``project`` reads, with their digest."""
    from lockbox.deps.members import read_member

    roots = {project.root.resolve()}
    for planned in plan.by_form("member"):
        roots.add((project.root / planned.package.source.location).resolve())
    recipe = project.recipe.app
    members: list[Member] = []
    paths: list[Path] = [project.root / "pyproject.toml"]
    for root in sorted(roots):
        pyproject, _ = read_toml(root / "pyproject.toml")
        is_project = root == project.root.resolve()
        if is_project and "build-system" not in pyproject:
            continue  # a virtual project: uv installs nothing of it, nor does lockbox
        member = read_member(root, pyproject, modules=not (is_project and recipe.site_packages))
        members.append(member)
        paths += [root / "pyproject.toml"]
        for source, _ in member.modules:
            paths.append(
                _inside(
                    project,
                    _relative(project, source),
                    f"{root / 'pyproject.toml'}: the module of {member.name}",
                )
            )
    for key in ("site-packages", "root"):
        for index, copy in enumerate(getattr(recipe, key.replace("-", "_"))):
            paths.append(_inside(project, copy.source, f"recipe app.{key}[{index}]"))
    for index, patch in enumerate(recipe.patches):
        paths.append(_inside(project, patch, f"recipe app.patches[{index}]", link_ok=False))
    relative = sorted({_relative(project, path) for path in paths})
    digest, consulted, elf_files = _digest(project.root, relative)
    return Sources(tuple(members), tuple(relative), digest, consulted, elf_files)


def _relative(project: Project, path: Path) -> str:
    relative = os.path.relpath(path, project.root)
    if relative.startswith(".."):
        raise AssemblyError(
            f"{path} is outside the project {project.root}: lockbox "
            "assembles only what is inside it"
        )
    return relative


def _inside(project: Project, relative: str, key: str, *, link_ok: bool = True) -> Path:
    """The project path ``relative`` names, confined to the project (:mod:`lockbox.inputs.paths`);
    with ``link_ok`` it may itself be a symbolic link, which is copied as one."""
    path = confined(project.root, relative, key, within="the project", link_ok=link_ok)
    if not os.path.lexists(path):
        raise AssemblyError(f"{key}: {relative} does not exist in {project.root}")
    return path


def _digest(root: Path, paths: Sequence[str]) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """The digest of ``paths`` under ``root``, every path read or listed for it, and the
    SHA-256 of each file read that is an ELF file."""
    digest = hashlib.sha256()
    consulted: list[str] = []
    elf_files: dict[str, str] = {}
    for relative in paths:
        for path, info in _walk(root / relative):
            consulted.append(path)
            if stat.S_ISDIR(info.st_mode):
                continue
            name = os.path.relpath(path, root).encode()
            if stat.S_ISLNK(info.st_mode):
                digest.update(b"l\0" + name + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
            elif stat.S_ISREG(info.st_mode):
                kind = b"x" if info.st_mode & stat.S_IXUSR else b"f"
                digest.update(kind + b"\0" + name + b"\0" + str(info.st_size).encode() + b"\0")
                with open(path, "rb") as file:
                    data = file.read()
                digest.update(data)
                if data.startswith(b"\x7fELF"):
                    elf_files[path] = hashlib.sha256(data).hexdigest()
    return digest.hexdigest(), tuple(consulted), elf_files


def _walk(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file and directory under ``top`` (or ``top`` itself), sorted, ignored names
    left out; a directory comes before what it holds."""
    info = os.lstat(top)
    if not stat.S_ISDIR(info.st_mode):
        yield os.fspath(top), info
        return
    for directory, directories, others in fs.walk(top):
        yield directory, os.lstat(directory)
        directories[:] = [name for name in directories if not _ignored(name)]
        for name in others:
            if not _ignored(name):
                path = os.path.join(directory, name)
                yield path, os.lstat(path)


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _IGNORED)


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


@dataclass(frozen=True)
class Assembly:
    """What an application is assembled from."""

    project: Project
    sources: Sources
    """The project's sources and members (:func:`read_sources`)."""
    layer: Path
    """The dependency layer's tree."""
    interpreter: Interpreter
    python: PythonEntry
    """The interpreter entry the application runs."""
    bytecode: Entry | None = None
    """The layer's bytecode for that interpreter, if the recipe compiles it."""
    host: Mapping[str, Path] | None = None
    """Where libraries outside the output are found (:func:`layer_libraries`; None: the
    host's loader cache)."""

    @property
    def site_relative(self) -> Path:
        version = self.interpreter.version
        return Path("lib") / f"python{version.major}.{version.minor}" / "site-packages"


@dataclass(frozen=True)
class Placement:
    """Where an application is assembled, and for where."""

    out: Path
    """Where it will live: its ``@out@``, and what its launchers name."""
    content: Path
    """Where its tree is written."""
    work: Path
    """A directory for the assembly's own files."""
    link: bool
    """A store entry: the layer is hardlinked and ``python`` is a link to the interpreter's
    entry. Otherwise both are copied in, so the tree stands on its own."""
    hidden: Sequence[Path]
    """What the sandboxes hide (the store, for an entry)."""
    log: Path
    """Where verification writes its log."""


def assemble_tree(
    assembly: Assembly,
    placement: Placement,
    tools: Toolbox,
    *,
    progress: Progress,
    checks: bool = True,
) -> AssemblyReport:
    """Write the application ``assembly`` describes into ``placement.content``, with the
    toolbox's sandbox (known to work: :func:`offline_sandbox`), patchelf and dpkg. Without
    ``checks`` the recipe's ``[verify]`` table is not run (it writes nothing into the
    output, so the output is the same)."""
    sandbox = tools.sandbox
    report = AssemblyReport(placement.out)
    project = assembly.project
    _place_layer(assembly, placement, progress)
    source = _prepared_sources(assembly, placement, report, progress)
    own = _install_project(assembly, placement.content, source, report)
    _delete(project, placement.content, report)
    _link_libraries(project, placement.content, report, tools, progress, assembly.host)
    _write_environment(assembly, placement, report, progress)
    view = _SandboxView.of(placement, assembly, report)
    if project.recipe.app.compile_bytecode:
        _compile_bytecode(assembly, placement, own, view, sandbox, progress)
    _readable(placement.content)
    if checks:
        report.verified = _verify(project, placement, view, sandbox, progress)
    return report


def _place_layer(assembly: Assembly, placement: Placement, progress: Progress) -> None:
    """The dependency layer's files, the start of the application's tree."""
    site_relative, layer = assembly.site_relative, assembly.layer
    if not (layer / site_relative).is_dir():
        raise AssemblyError(
            f"the dependency layer {layer} has no {site_relative}: it was made "
            f"for another interpreter than {assembly.interpreter.label}"
        )
    progress.info(f"assembling {assembly.project.app_name} for {placement.out}")
    if placement.link:
        _link_tree(layer, placement.content)
    else:
        _copy_tree(layer, placement.content, link=False)
    for written in (site_relative, Path("bin"), Path("pyvenv.cfg"), Path("python")):
        # What lockbox writes into itself: a link from the layer would take it elsewhere.
        confined(
            placement.content, str(written), f"the dependency layer {layer}", within="the output"
        )


def _prepared_sources(
    assembly: Assembly, placement: Placement, report: AssemblyReport, progress: Progress
) -> Path:
    """A copy of the project's sources, the recipe's patches applied and its substitutions
    made."""
    from lockbox.patches import apply_patch

    project, recipe = assembly.project, assembly.project.recipe.app
    source = placement.work / "source"
    for relative in assembly.sources.paths:
        _copy_tree(project.root / relative, source / relative, link=False)
    for patch in recipe.patches:
        result = apply_patch(project.root / patch, source, label=patch)
        report.patched.append(patch)
        progress.info(f"applied {patch}: {result.hunks} hunks to {', '.join(result.files)}")
        for note in result.offsets:
            progress.warning(f"{patch}: {note}")
    for index, substitution in enumerate(recipe.substitute):
        count = _substitute(
            source,
            substitution.file,
            substitution.replace,
            substitution.with_.replace("@out@", str(placement.out)),
            substitution.expect,
            f"recipe app.substitute[{index}].file",
        )
        report.substituted[substitution.file] = report.substituted.get(substitution.file, 0) + count
    return source


def _install_project(
    assembly: Assembly, content: Path, source: Path, report: AssemblyReport
) -> list[Path]:
    """The members' modules (with their dist-info), the recipe's site-packages and root
    copies; returns what the project put into site-packages, compiled per build."""
    from lockbox.deps.members import files_under, write_dist_info

    project, recipe = assembly.project, assembly.project.recipe.app
    site_relative = assembly.site_relative
    site = content / site_relative
    own: list[Path] = []

    def copy_site_packages() -> list[str]:
        installed = []
        for index, copy in enumerate(recipe.site_packages):
            _copy_new(
                source,
                copy.source,
                content,
                site_relative / copy.target,
                f"recipe app.site-packages[{index}]",
            )
            installed += files_under(site, copy.target)
            own.append(site / copy.target)
        return installed

    project_is_member = False
    for member in assembly.sources.members:
        installed = []
        for module, name in member.modules:
            relative = os.path.relpath(module, project.root)
            _copy_new(
                source, relative, content, site_relative / name, f"{member.name}'s {relative}"
            )
            installed += files_under(site, name)
            own.append(site / name)
        if member.root.resolve() == project.root.resolve():
            project_is_member = True
            installed += copy_site_packages()
        write_dist_info(site, member, installed)
        report.members.append(f"{member.name} {member.version}")
    if not project_is_member:
        copy_site_packages()
    for index, copy in enumerate(recipe.root):
        _copy_new(source, copy.source, content, Path(copy.target), f"recipe app.root[{index}]")
    return own


def _delete(project: Project, content: Path, report: AssemblyReport) -> None:
    """What the recipe's ``app.delete`` names, each pattern matching something."""
    for index, pattern in enumerate(project.recipe.app.delete):
        matched = confined_glob(
            content, pattern, f"recipe app.delete[{index}]", within="the output"
        )
        if not matched:
            raise AssemblyError(
                f"recipe app.delete[{index}]: {pattern!r} matches nothing in "
                "the output; remove it from the recipe or correct it"
            )
        for path in matched:
            fs.remove_tree(path)
            report.deleted.append(os.path.relpath(path, content))


def _write_environment(
    assembly: Assembly, placement: Placement, report: AssemblyReport, progress: Progress
) -> None:
    """The ``python`` link (or copy), ``pyvenv.cfg`` and ``bin/``."""
    from lockbox.assemble.scripts import entry_point_scripts, write_environment, write_scripts

    content, python = placement.content, assembly.python
    if placement.link:
        os.symlink(f"../{python.entry.path_name}", content / "python")
    else:
        _copy_tree(python.entry.path, content / "python", link=False)
    write_environment(content, python.executable, assembly.interpreter, assembly.project.app_name)
    scripts = entry_point_scripts(content / assembly.site_relative)
    for name, owners in write_scripts(content, scripts).items():
        progress.warning(f"script {name} is declared by {', '.join(owners)}; the last one won")
    report.scripts = sorted({script.name for script in scripts})


@dataclass(frozen=True)
class _SandboxView:
    """What the commands run on the assembled application see."""

    env: Mapping[str, str]
    shown: Sequence[Path | tuple[Path, Path]]
    home: Path

    @classmethod
    def of(cls, placement: Placement, assembly: Assembly, report: AssemblyReport) -> _SandboxView:
        # Verification's home and temporary directory are empty tmpfs directories at a
        # short fixed path: sockets made under TMPDIR fit AF_UNIX's limit, and nothing it
        # writes there outlives it.
        home = Path("/tmp/lockbox-home")
        out = placement.out
        env = {
            **REPRODUCIBLE_ENV,
            "PATH": f"{out}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "VIRTUAL_ENV": str(out),
        }
        # The application at its final path, read-only, with what it links to (the
        # interpreter's entry; without bundling, each host library it links to, one file
        # at a time: a recipe's library directory may hold anything).
        shown: list[Path | tuple[Path, Path]] = [(placement.content, out)]
        if placement.link:
            shown.append(assembly.python.entry.path)
        shown += [
            path
            for path in report.linked
            if not any(path.is_relative_to(system) for system in SYSTEM_PATHS)
        ]
        return cls(env, shown, home)


def _compile_bytecode(
    assembly: Assembly,
    placement: Placement,
    own: Sequence[Path],
    view: _SandboxView,
    sandbox: Sandbox,
    progress: Progress,
) -> None:
    """The layer's bytecode put in, and the project's own packages compiled."""
    from lockbox.assemble.interpreter import compileall_argv
    from lockbox.tools.run import run

    content, out = placement.content, placement.out
    if assembly.bytecode is not None:
        # The layer's bytecode is compiled once per layer and interpreter (a store entry).
        if placement.link:
            _link_tree(assembly.bytecode.path, content)
        else:
            _copy_tree(assembly.bytecode.path, content, link=False, caches=True)
    targets = [path for path in own if path.exists()]
    if not targets:
        return
    progress.info(f"compiling the bytecode of {len(targets)} of the project's packages")
    # lockbox's own command: it writes the project's packages' __pycache__ directories and
    # nothing else (the layer's files are hardlinks of its entry).
    writable = []
    for path in targets:
        where = path if path.is_dir() else path.parent / "__pycache__"
        where.mkdir(exist_ok=True)
        writable.append((where, out / where.relative_to(content)))
    argv = compileall_argv(
        out / "bin" / "python", [out / path.relative_to(content) for path in targets]
    )
    try:
        run(
            sandbox.offline(
                argv,
                cwd=Path("/"),
                env=view.env,
                hidden=placement.hidden,
                read_only=view.shown,
                writable=writable,
            ),
            progress=progress,
        )
    except ToolFailed as error:
        raise AssemblyError(f"compiling bytecode failed:\n{error.stdout}{error.stderr}") from None


def _verify(
    project: Project,
    placement: Placement,
    view: _SandboxView,
    sandbox: Sandbox,
    progress: Progress,
) -> list[str]:
    """The recipe's ``[verify]`` checks, run on the application unprivileged and offline."""
    from lockbox.assemble.verify import verify
    from lockbox.tools.run import run

    def run_in_sandbox(argv: Sequence[str], cwd: Path) -> str:
        command = sandbox.unprivileged(
            argv,
            cwd=cwd,
            env=view.env,
            hidden=placement.hidden,
            read_only=view.shown,
            scratch=[view.home, view.home / "tmp"],
        )
        result = run(command, progress=progress)
        return result.stdout + result.stderr

    log = placement.log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"verification of {project.app_name} at {placement.out}\n", encoding="utf-8")
    checks = verify(project.recipe.verify, placement.out, log, run_in_sandbox, progress)
    return [check.what for check in checks]


def _readable(top: Path) -> None:
    """Let anyone read (and search) what lockbox wrote into ``top`` whatever the umask, as
    registration will: verification runs as another user. Files shared with store entries
    (hardlinks) are readable already and are left alone."""
    for directory, _, others in fs.walk(top):
        info = os.lstat(directory)
        if info.st_mode & 0o555 != 0o555:
            os.chmod(directory, stat.S_IMODE(info.st_mode) | 0o555)
        for name in others:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_mode & 0o444 != 0o444:
                os.chmod(path, stat.S_IMODE(info.st_mode) | 0o444)


def deps_bytecode(
    store: Store, deps: Entry, python: PythonEntry, sandbox: Sandbox, progress: Progress = silent
) -> Entry:
    """The unchecked-hash ``.pyc`` files of the dependency layer ``deps`` for ``python``: a
    ``bytecode`` entry holding only ``__pycache__`` directories where the layer has them,
    made once (in the offline sandbox) and hardlinked into every application that uses
    the layer. The source names recorded in the code objects are fixed ones
    (``/lockbox/deps/…``); CPython puts the real path in when it loads a ``.pyc``."""
    from lockbox.assemble.interpreter import BYTECODE_ENV, compileall_argv
    from lockbox.tools.run import run

    name = f"{deps.name}-bytecode"
    inputs = {
        "deps": deps.nar_hash.sri,
        "python": python.entry.path_name,
        "lockbox": build_identity(),
    }
    existing = store.find_inputs("bytecode", name, inputs)
    if existing is not None:
        store.check_sealed(existing)
        return existing
    progress.info(f"compiling the bytecode of the dependency layer {deps.nar_hash}")
    inside = Path("/tmp/lockbox-bytecode")
    with store.staging() as stage:
        tree = stage / "tree"
        _copy_tree(deps.path, tree, link=True)
        argv = compileall_argv(
            python.entry.path / python.executable, [inside], strip=inside, prepend="/lockbox/deps"
        )
        try:
            run(
                sandbox.offline(
                    argv,
                    cwd=Path("/"),
                    env=BYTECODE_ENV,
                    hidden=[store.root],
                    writable=[(tree, inside)],
                    read_only=[python.entry.path],
                ),
                progress=progress,
            )
        except ToolFailed as error:
            raise AssemblyError(
                f"compiling the dependency layer's bytecode failed:\n{error.stdout}{error.stderr}"
            ) from None
        content = stage / "content"
        content.mkdir()
        for directory, directories, _ in fs.walk(tree):
            if "__pycache__" in directories:
                relative = Path(directory, "__pycache__").relative_to(tree)
                (content / relative).parent.mkdir(parents=True, exist_ok=True)
                os.rename(Path(directory, "__pycache__"), content / relative)
                directories.remove("__pycache__")
        return store.register(content, name=name, kind="bytecode", inputs=inputs)


def _link_libraries(
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


def _substitute(source: Path, file: str, old: str, new: str, expect: int | None, key: str) -> int:
    path = confined(source, file, key, within="the application's sources")
    where = f"{key} {file}"
    if not path.is_file():
        raise AssemblyError(
            f"{where}: the file is not among the application's sources "
            "(members, app.site-packages, app.root)"
        )
    text = path.read_text(encoding="utf-8")
    count = text.count(old)
    if count == 0:
        raise AssemblyError(
            f"{where}: {old!r} was not found (after the patches); the source "
            "changed, so correct the recipe's pattern"
        )
    if expect is not None and count != expect:
        raise AssemblyError(f"{where}: {old!r} occurs {count} times, the recipe expects {expect}")
    with os.fdopen(fs.open_for_writing(path), "w", encoding="utf-8") as stream:
        stream.write(text.replace(old, new))
    return count


def _copy_new(sources: Path, relative: str, content: Path, target: Path, key: str) -> None:
    """Copy the path ``relative`` of the project's ``sources`` to ``target`` of the output
    ``content``; both confined to their tree, and the target must be new."""
    source = confined(sources, relative, key, within="the project", link_ok=True)
    destination = confined(content, str(target), key, within="the output")
    if os.path.lexists(destination):
        raise AssemblyError(
            f"{key}: {relative} would replace {target}, which is already in "
            "the output (from the dependency layer or another member)"
        )
    _copy_tree(source, destination, link=False)


def _copy_tree(source: Path, target: Path, *, link: bool, caches: bool = False) -> None:
    """Copy (or, with ``link``, hardlink: store entries never change) a file or tree,
    leaving out Python's caches unless ``caches``; executables keep their bit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.copy_tree(source, target, link=link, ignore=None if caches else _caches)
    except OSError as error:
        hint = (
            "; a symbolic link or a file is in the way, and lockbox writes through neither"
            if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST)
            else ""
        )
        raise AssemblyError(f"copying {source} to {target} failed: {error}{hint}") from None


def _caches(_directory: str, names: list[str]) -> set[str]:
    return {name for name in names if _ignored(name)}


def _link_tree(source: Path, target: Path) -> None:
    """Hardlink every file of the store entry ``source`` into ``target`` (merged into what is
    there), making new, writable directories and keeping symlinks: ``cp -rlP`` does in C what a Python walk does
    at about 50 µs a file, and the dependency layer has thousands."""
    from lockbox.tools.run import run

    target.mkdir(parents=True, exist_ok=True)
    if os.stat(source).st_dev != os.stat(target).st_dev:
        # Another file system (`lockbox check` rebuilds on one of its own): no hardlinks.
        _copy_tree(source, target, link=False, caches=True)
        return
    run(["cp", "-rlP", "--no-preserve=mode", "--", f"{source}/.", str(target)])
