"""The dependency phase: uv.lock in, one content-pinned dependency layer out.

This is the only phase allowed on the network. It installs the locked third-party packages
with uv (no workspace member: those are the application, assembled later), normalises and
scrubs the environment into a layer (:mod:`lockbox.layer`), and checks the layer's NAR hash
against the one the recipe declares (``deps.hash``). The declared hash pins every byte: a
layer that hashes differently is kept aside for ``lockbox diff`` and never registered, and
when a layer with the declared hash is already in the store nothing runs at all.

Steps, in order: look up → plan (:mod:`lockbox.plan`) → fetch the extra sources
(:mod:`lockbox.sources`) → install (:mod:`lockbox.install`) →
normalise and scrub (:mod:`lockbox.layer`) → hash → compare with the declared hash → register.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.errors import HashMismatch
from lockbox.hashes import Sha256
from lockbox.progress import Progress, silent
from lockbox.project import Project
from lockbox.store import Entry, Store

if TYPE_CHECKING:
    from lockbox.install import Tools
    from lockbox.interpreters import Interpreter
    from lockbox.layer import LayerReport
    from lockbox.plan import Plan


@dataclass(frozen=True)
class DepsResult:
    """The dependency layer of a project."""

    entry: Entry
    """The ``deps`` store entry."""
    plan: Plan | None
    """What was installed; None when the layer was found by its declared hash."""
    reused: bool
    """True when the declared layer was already in the store and nothing ran."""
    layer: LayerReport | None
    """What normalisation did; None when reused."""

    @property
    def hash(self) -> Sha256:
        return self.entry.nar_hash


def layer_name(project: Project) -> str:
    return f"{project.app_name}-deps"


def lock_digest(project: Project) -> Sha256:
    return Sha256(hashlib.sha256(project.lock_path.read_bytes()).digest())


def build_deps(project: Project, store: Store, find_tools: Callable[[], Tools],
               progress: Progress = silent) -> DepsResult:
    """Make (or find) the dependency layer of ``project`` in ``store``.

    ``find_tools`` is called only when something must be built: a lookup needs no tools."""
    name = layer_name(project)
    declared = project.recipe.deps.hash
    if declared is not None:
        # The declared hash names the content: whatever produced it, that layer is the one.
        existing = store.find_content("deps", name, declared)
        if existing is not None:
            progress.info(f"dependency layer {declared} is in the store: {existing.path}")
            return DepsResult(existing, None, reused=True, layer=None)

    # What building takes is imported only now: a lookup must start as fast as a no-op
    # `uv sync`.
    from lockbox.install import build_roots, install, uv_cache_dir
    from lockbox.interpreters import find_interpreter
    from lockbox.layer import normalise
    from lockbox.lock import read_lock
    from lockbox.nar import nar_hash
    from lockbox.plan import make_plan
    from lockbox.scrub import Scrubber

    lock = read_lock(project.lock_path)
    interpreter = find_interpreter(project.recipe.python, project.requires_python,
                                   progress=progress)
    plan = make_plan(project, lock, interpreter)
    tools = find_tools()
    built = sum(p.built for p in plan.installed if p.form != "member")
    progress.info(
        f"installing {len(plan.installed) - len(plan.by_form('member'))} packages "
        f"({built} from source) with uv {tools.uv.version} for {interpreter.label}"
    )
    uv_cache_dir(store, tools.cache).mkdir(parents=True, exist_ok=True)
    with store.staging() as stage:
        # The stage is inside the store's working directory, which the sandbox mounts at
        # BUILD_ROOT: the environment is built where the layer will be registered from.
        work = stage / "work"
        work.mkdir()
        install(project, plan, interpreter, store, work, tools, progress)
        scrubber = Scrubber(build_roots(project, interpreter, store, tools.cache))
        roots = hashlib.sha256("\n".join(r.decode() for r in scrubber.roots).encode()).hexdigest()
        content = stage / "content"
        progress.info("normalising and scrubbing the layer")
        report = normalise(work / "venv", content, scrubber, progress,
                           known=store.scanned_files(roots))
        _report_scrub(report, progress)
        progress.info("hashing the layer")
        nar = nar_hash(content)
        if declared is not None and nar.sha256 != declared:
            kept = store.keep_aside(content, name, nar.sha256)
            raise HashMismatch(
                f"the dependency layer of {project.app_name}",
                declared.sri, nar.sha256.sri, kept,
                "if uv.lock or the recipe changed on purpose, declare the new hash with "
                "`lockbox lock-hash`; `lockbox diff` shows what differs from the last "
                "good layer",
            )
        entry = store.register(
            content, name=name, kind="deps", nar=nar,
            metadata=_metadata(project, plan, interpreter, tools, report),
        )
        store.remember_scanned(roots, report.clean_links)  # sealed now, mtime 1
    if declared is None:
        progress.warning(
            f"the recipe declares no deps.hash; this build gave {entry.nar_hash}. "
            f"Pin it with `lockbox lock-hash`, or add to [deps]: hash = \"{entry.nar_hash}\""
        )
    return DepsResult(entry, plan, reused=False, layer=report)


def _report_scrub(report: LayerReport, progress: Progress) -> None:
    scrub = report.scrub
    for file, paths in sorted(scrub.found.items()):
        for path, count in sorted(paths.items()):
            progress.debug(f"scrubbed {path} ×{count} in {file}")
    if scrub.found:
        progress.info(f"scrubbed {scrub.occurrences} references to {len(scrub.paths)} "
                      f"build paths in {scrub.files} files")
    else:
        progress.info("no build paths found in the layer")


def _metadata(project: Project, plan: Plan, interpreter: Interpreter, tools: Tools,
              report: LayerReport) -> dict[str, object]:
    tags = interpreter.tags
    return {
        "project": project.name,
        "lock": lock_digest(project).sri,
        "interpreter": {
            "version": str(interpreter.version),
            "abi": interpreter.abi,
            "platform": tags[0].platform if tags else "",
        },
        "uv": str(tools.uv.version),
        "packages": {
            planned.package.name: {
                "version": planned.package.version,
                "from": "wheel" if planned.form == "wheel" else planned.form,
            }
            for planned in plan.installed
            if planned.form != "member" and planned.package.name not in project.recipe.deps.exclude
        },
        "extra-sources": [source.label for source in project.recipe.deps.extra_sources],
        "scrubbed": {"files": report.scrub.files, "occurrences": report.scrub.occurrences},
    }


def write_declared_hash(project: Project, digest: Sha256) -> Path:
    """Write ``deps.hash`` into the project's recipe, keeping its formatting and comments.
    Returns the file written."""
    recipe_file = project.recipe.source or project.root / "pyproject.toml"
    import tomlkit

    document = tomlkit.parse(recipe_file.read_text(encoding="utf-8"))
    table = document
    if recipe_file.name == "pyproject.toml":
        table = document.setdefault("tool", tomlkit.table())  # type: ignore[assignment]
        table = table.setdefault("lockbox", tomlkit.table())  # type: ignore[assignment]
    deps = table.setdefault("deps", tomlkit.table())
    deps["hash"] = digest.sri
    _write_atomically(recipe_file, tomlkit.dumps(document))
    return recipe_file


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.lockbox-tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, os.stat(path).st_mode & 0o7777)
    os.replace(temporary, path)
