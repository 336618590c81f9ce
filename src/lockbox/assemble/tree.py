"""Writing an application's tree: the steps of the assembly phase, in order.

What is assembled (:class:`Assembly`) and where (:class:`Placement`) are records;
:func:`assemble_tree` runs the steps :mod:`lockbox.assemble.app` lists, each a function here,
with the toolbox's sandbox, patchelf and dpkg.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.assemble.libraries import link_libraries
from lockbox.assemble.sources import is_ignored
from lockbox.errors import AssemblyError, ToolFailed
from lockbox.inputs.paths import confined, confined_glob
from lockbox.inputs.project import Project
from lockbox.progress import Progress
from lockbox.store.store import Entry
from lockbox.tools.sandbox import REPRODUCIBLE_ENV, SYSTEM_PATHS

if TYPE_CHECKING:
    from lockbox.assemble.interpreter import PythonEntry
    from lockbox.assemble.sources import Sources
    from lockbox.inputs.interpreters import Interpreter
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox


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
    link_libraries(project, placement.content, report, tools, progress, assembly.host)
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
        link_tree(layer, placement.content)
    else:
        copy_tree(layer, placement.content, link=False)
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
        copy_tree(project.root / relative, source / relative, link=False)
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
        copy_tree(python.entry.path, content / "python", link=False)
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
            link_tree(assembly.bytecode.path, content)
        else:
            copy_tree(assembly.bytecode.path, content, link=False, caches=True)
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
    copy_tree(source, destination, link=False)


def copy_tree(source: Path, target: Path, *, link: bool, caches: bool = False) -> None:
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
    return {name for name in names if is_ignored(name)}


def link_tree(source: Path, target: Path) -> None:
    """Hardlink every file of the store entry ``source`` into ``target`` (merged into what is
    there), making new, writable directories and keeping symlinks: ``cp -rlP`` does in C what a Python walk does
    at about 50 µs a file, and the dependency layer has thousands."""
    from lockbox.tools.run import run

    target.mkdir(parents=True, exist_ok=True)
    if os.stat(source).st_dev != os.stat(target).st_dev:
        # Another file system (`lockbox check` rebuilds on one of its own): no hardlinks.
        copy_tree(source, target, link=False, caches=True)
        return
    run(["cp", "-rlP", "--no-preserve=mode", "--", f"{source}/.", str(target)])
