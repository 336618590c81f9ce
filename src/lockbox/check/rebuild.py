"""``lockbox check``: rebuild everything a project's application is made of, in a varied
world, and compare the bytes with what the store holds.

A declared hash pins the dependency layer only if a rebuild gives the same bytes. The check
builds the project normally first (a lookup when it is built), then starts a second lockbox
process in the varied world of :mod:`lockbox.check.variations` that rebuilds, from scratch:

1. the dependency layer, in a new scratch store, with a new uv cache that holds the
   downloads of the store's cache but none of the wheels built from sdists (so every sdist
   is built again);
2. the interpreter entry, imported again into the scratch store;
3. the dependency layer's bytecode, compiled again from the rebuilt layer and interpreter;
4. the application, assembled again for its registered path (its ``@out@``), from the
   registered layer, interpreter and bytecode once those are proved byte-identical.

Each rebuilt tree's NAR hash is compared with the registered entry's. On a difference the
check lists each differing file by distribution, explains the first ones (``diffoscope``
when it is installed, else a short byte or line diff) and keeps the rebuilt trees beside
the store; on success it removes them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockbox.environment import Environment
from lockbox.errors import LockboxError
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store, remove_tree
from lockbox.tools.run import run

if TYPE_CHECKING:
    from lockbox.deps.treediff import FileChange
    from lockbox.inputs.build import BuildInputs
    from lockbox.tools.toolbox import Toolbox

KINDS = ("deps", "python", "bytecode", "app")
"""What is rebuilt, in order; each later one needs the earlier ones identical."""

LABELS = {
    "deps": "dependency layer",
    "python": "interpreter entry",
    "bytecode": "dependency layer's bytecode",
    "app": "application",
}
"""How the report names each kind."""

EXPLAINED = 5
"""How many changed files of an entry get an explanation."""

_SKIPPED_CACHE_BUCKETS = ("sdists-", "builds-")
"""uv cache buckets the rebuild does not get: built wheels (and their sdists), build dirs."""


class CheckError(LockboxError):
    """The rebuild could not be made at all."""


@dataclass
class Compared:
    """One rebuilt entry against the registered one."""

    kind: str
    name: str
    registered_hash: str
    registered_path: Path
    rebuilt_hash: str | None = None
    rebuilt_path: Path | None = None
    error: str | None = None
    """Why it was not rebuilt (a failure, or an earlier entry that differs)."""
    differences: list[FileChange] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    """Differing path → the distribution it belongs to."""
    explanations: dict[str, str] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return self.error is None and self.rebuilt_hash == self.registered_hash

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "same": self.same,
            "registered": {"hash": self.registered_hash, "path": str(self.registered_path)},
            "rebuilt": (
                {"hash": self.rebuilt_hash, "path": str(self.rebuilt_path)}
                if self.rebuilt_hash
                else None
            ),
            "error": self.error,
            "differences": [
                {
                    "path": change.path,
                    "change": change.change,
                    "detail": change.detail,
                    "distribution": self.owners.get(change.path, ""),
                    "explanation": self.explanations.get(change.path),
                }
                for change in self.differences
            ],
        }


@dataclass
class CheckReport:
    project: str
    applied: dict[str, str]
    skipped: dict[str, str]
    entries: list[Compared]
    kept: Path | None
    """Where the rebuilt trees are, when they were kept."""

    @property
    def ok(self) -> bool:
        return all(entry.same for entry in self.entries)

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "ok": self.ok,
            "variations": {"applied": self.applied, "skipped": self.skipped},
            "entries": [entry.as_json() for entry in self.entries],
            "kept": str(self.kept) if self.kept else None,
        }


@dataclass(frozen=True)
class Built:
    """The registered entries of a project's application."""

    deps: Entry
    python: Entry | None = None
    """None when only the dependency layer is checked (``--deps-only``); so are the rest."""
    bytecode: Entry | None = None
    app: Entry | None = None

    def entries(self) -> list[tuple[str, Entry]]:
        """``(kind, entry)`` of each entry there is, in the order of :data:`KINDS`."""
        return [
            (kind, entry)
            for kind, entry in (
                ("deps", self.deps),
                ("python", self.python),
                ("bytecode", self.bytecode),
                ("app", self.app),
            )
            if entry is not None
        ]


def check(
    inputs: BuildInputs,
    store: Store,
    built: Built,
    variations: Iterable[str],
    tools: Toolbox,
    *,
    keep: bool = False,
    progress: Progress = silent,
) -> CheckReport:
    """Rebuild what ``built`` holds in a varied world and compare."""
    from lockbox.check.variations import scratch_name, varied_world
    from lockbox.deps.install import uv_cache_dir

    project = inputs.project

    checks = store.work_dir / "checks"
    work = checks / f"{project.app_name}-{scratch_name()}"
    work.mkdir(parents=True)
    entries: list[Compared] = []
    try:
        with varied_world(variations, work, tools, progress) as world:
            for name, what in world.applied.items():
                progress.info(f"varied {name}: {what}")
            root = world.directory
            project_dir = project.root
            if "build-path" in world.applied:
                project_dir = root / f"project-{scratch_name()}"
                progress.info(f"copying the project to {project_dir}")
                _copy_project(project.root, project_dir)
            _seed_uv_cache(uv_cache_dir(store, tools.uv_cache), world.backing / "uv-cache")
            spec = {
                "recipe": str(
                    project.recipe.source
                    if project.recipe.source is not None
                    and project.recipe.source.name == "lockbox.toml"
                    else project.root
                ),
                "project": str(project_dir),
                "store": str(store.root),
                "root": str(root),
                "scratch": str(root / f"store-{scratch_name()}"),
                "uv_cache": str(root / "uv-cache"),
                "interpreter": str(
                    _interpreter_path(built.python)
                    if built.python
                    else inputs.interpreter.executable
                ),
                "bundle": project.recipe.libraries.bundle,
                "registered": {kind: entry.path_name for kind, entry in built.entries()},
            }
            spec_file = work / "spec.json"
            spec_file.write_text(json.dumps(spec, indent=2), encoding="utf-8")
            progress.info("rebuilding from scratch in the varied world")
            argv = world.argv([sys.executable, "-m", "lockbox.check.rebuild", str(spec_file)])
            process = run(
                argv,
                env=world.env,
                preexec=world.preexec,
                check=False,
                on_stderr_line=lambda line: _forward(line, progress),
            )
            result_file = work / "result.json"
            if not result_file.is_file():
                raise CheckError(
                    f"the rebuild stopped before it could report (exit code "
                    f"{process.returncode}): {process.stderr.strip()[-2000:]}\n"
                    f"its files are in {work}"
                )
            rebuilt = json.loads(result_file.read_text(encoding="utf-8"))
        applied, skipped = world.applied, world.skipped
        for kind, entry in built.entries():
            compared = Compared(kind, entry.name, entry.nar_hash.sri, entry.path)
            result = rebuilt.get(kind, {"error": "not rebuilt: an earlier step failed"})
            compared.error = result.get("error")
            if result.get("hash"):
                compared.rebuilt_hash = result["hash"]
                compared.rebuilt_path = world.backing / result["tree"]
            entries.append(compared)
            if compared.error is None and not compared.same:
                progress.info(f"comparing the {LABELS[kind]} with the registered one")
                _explain_difference(compared, built, progress)
    except BaseException:
        if not keep:
            _remove_work(work)
        raise
    report = CheckReport(project.app_name, applied, skipped, entries, kept=None)
    if report.ok and not keep:
        _remove_work(work)
    else:
        report.kept = work
    return report


def _forward(line: str, progress: Progress) -> None:
    """The rebuild's progress lines, as the check's own."""
    if line.startswith(_WARNING):
        progress.warning("rebuild: " + line.removeprefix(_WARNING))
    elif line.strip():
        progress.info("  rebuild: " + line)


_WARNING = "warning: "


def _remove_work(work: Path) -> None:
    remove_tree(work)
    try:
        work.parent.rmdir()
    except OSError:
        pass


def _interpreter_path(python: Entry) -> Path:
    executable = python.inputs.get("executable")
    if not isinstance(executable, str):
        raise CheckError(
            f"the interpreter entry {python.path} does not record which "
            "interpreter it was made from; rebuild it with this lockbox"
        )
    return Path(executable)


_PROJECT_LEFT_OUT = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
}


def _copy_project(source: Path, target: Path) -> None:
    """Copy the project for a rebuild elsewhere, without what no build reads."""
    shutil.copytree(
        source,
        target,
        symlinks=True,
        ignore=lambda _, names: [n for n in names if n in _PROJECT_LEFT_OUT],
    )


def _seed_uv_cache(cache: Path, seeded: Path) -> None:
    """A uv cache for the rebuild: the downloads of ``cache`` (index pages, wheels), none
    of its built wheels. Hardlinked where it can be (uv never changes a cached file)."""
    seeded.mkdir(parents=True, exist_ok=True)
    if not cache.is_dir():
        return
    for bucket in sorted(cache.iterdir()):
        if bucket.name.startswith(_SKIPPED_CACHE_BUCKETS) or bucket.name.startswith("."):
            continue
        target = seeded / bucket.name
        linked = run(["cp", "-a", "-l", "--", str(bucket), str(target)], check=False)
        if linked.returncode != 0:
            remove_tree(target)
            run(["cp", "-a", "--", str(bucket), str(target)])


def _explain_difference(compared: Compared, built: Built, progress: Progress) -> None:
    from lockbox.deps.treediff import diff_trees, explain, owners

    assert compared.rebuilt_path is not None
    difference = diff_trees(compared.registered_path, compared.rebuilt_path)
    compared.differences = list(difference.files)
    index = owners(compared.registered_path)
    index.update(owners(compared.rebuilt_path))
    if compared.kind == "bytecode":
        index.update(owners(built.deps.path))
    elif compared.kind == "python":
        index = {}
    for change in compared.differences:
        compared.owners[change.path] = _owner(change.path, index, compared.kind)
    explained = [c for c in compared.differences if c.change == "changed"][:EXPLAINED]
    for change in explained:
        compared.explanations[change.path] = explain(
            compared.registered_path / change.path, compared.rebuilt_path / change.path
        )


def _owner(path: str, index: dict[str, str], kind: str) -> str:
    from lockbox.deps.treediff import dist_info_owner, source_of_bytecode

    if kind == "python":
        return "(the interpreter)"
    for candidate in (path, source_of_bytecode(path)):
        if candidate and candidate in index:
            return index[candidate]
    return dist_info_owner(path) or ("(the project)" if kind == "app" else "(no distribution)")


# The rebuild: runs in the varied world, as `python -m lockbox.check.rebuild SPEC` ---------------


class _Stderr:
    """Progress of the rebuild, a line each on its standard error, which the check reads."""

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        for line in message.splitlines():
            print(line, file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        print(_WARNING + message.replace("\n", "\n  "), file=sys.stderr, flush=True)


def _rebuild(
    spec: dict[str, Any],
    results: dict[str, dict[str, str]],
    environment: Environment,
    progress: Progress,
) -> None:
    """Rebuild each entry of :data:`KINDS` as ``spec`` says, recording into ``results``
    each one's NAR hash and tree (relative to the rebuild's root), or why it was not."""
    from lockbox.assemble.app import (
        assemble_tree,
        deps_bytecode,
        layer_libraries,
        offline_sandbox,
        read_sources,
    )
    from lockbox.assemble.interpreter import PythonEntry, import_python
    from lockbox.errors import HashMismatch
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.interpreters import probe
    from lockbox.inputs.project import load_project
    from lockbox.pipeline import build_layer
    from lockbox.store.nar import nar_hash
    from lockbox.tools.toolbox import Toolbox

    root = Path(spec["root"])
    # The recipe as the user wrote it, for the project where the rebuild finds it (a copy,
    # with the build-path variation), with the interpreter the registered entries used.
    project = load_project(Path(spec["recipe"]))
    interpreter = probe(Path(spec["interpreter"]), progress)
    copy = Path(spec["project"])
    recipe = dataclasses.replace(project.recipe, python=str(interpreter.executable), project=copy)
    project = dataclasses.replace(project, root=copy, recipe=recipe)
    environment = environment.with_changes(LOCKBOX_UV_CACHE=spec["uv_cache"])
    inputs = BuildInputs(project, environment, progress, interpreter=interpreter)
    tools = Toolbox(environment, progress)

    def relative(path: Path) -> str:
        return os.path.relpath(path, root)

    with Store.open(Path(spec["store"])) as store, Store.open(Path(spec["scratch"])) as scratch:
        registered = {kind: store.get(name) for kind, name in spec["registered"].items()}

        def same(kind: str) -> bool:
            entry = registered.get(kind)
            return entry is not None and results.get(kind, {}).get("hash") == entry.nar_hash.sri

        progress.info("the dependency layer, every sdist built again")
        deps = None
        try:
            result = build_layer(inputs, scratch, tools, progress)
            deps = result.entry
            results["deps"] = {"hash": deps.nar_hash.sri, "tree": relative(deps.path)}
        except HashMismatch as mismatch:
            assert mismatch.kept is not None
            results["deps"] = {"hash": mismatch.got, "tree": relative(mismatch.kept)}
        if "python" not in registered:
            return  # the dependency layer only
        progress.info("the interpreter entry")
        python = import_python(
            interpreter, scratch, tools, bundle=spec["bundle"], progress=progress
        )
        results["python"] = {"hash": python.entry.nar_hash.sri, "tree": relative(python.entry.path)}
        sandbox = offline_sandbox(tools)
        if "bytecode" in registered:
            if deps is None or not same("deps"):
                results["bytecode"] = {"error": "not rebuilt: the dependency layer differs"}
            else:
                progress.info("the dependency layer's bytecode")
                bytecode = deps_bytecode(scratch, deps, python, sandbox, progress)
                results["bytecode"] = {
                    "hash": bytecode.nar_hash.sri,
                    "tree": relative(bytecode.path),
                }
        # The application is assembled from the registered entries once each rebuilt one
        # is proved identical; the first that is not says why it is not rebuilt.
        for kind in ("deps", "python", "bytecode"):
            if kind in registered and not same(kind):
                reason = "differs" if "hash" in results.get(kind, {}) else "could not be rebuilt"
                results["app"] = {"error": f"not rebuilt: its {LABELS[kind]} {reason}"}
                return
        app = registered["app"]
        assert app is not None and registered["deps"] is not None
        progress.info(f"the application, for {app.path}")
        registered_python = registered["python"]
        assert registered_python is not None
        content = root / f"app-{app.path_name}"
        work = root / "app-work"
        work.mkdir()
        # Not verified again: the registered application passed its [verify] table, which
        # writes nothing into the output; the rebuild compares bytes and runs no check.
        assemble_tree(
            project,
            read_sources(project, inputs.plan),
            registered["deps"].path,
            interpreter,
            PythonEntry(registered_python, python.executable, reused=True),
            app.path,
            content,
            work,
            sandbox,
            tools.patchelf,
            link=True,
            hidden=[store.root],
            progress=progress,
            log=root / "app-verify.log",
            bytecode=registered.get("bytecode"),
            checks=False,
            host=layer_libraries(store, registered["deps"]),
        )
        results["app"] = {"hash": nar_hash(content).sha256.sri, "tree": relative(content)}


def main(argv: Sequence[str]) -> int:
    """The rebuild's entry point: read the spec, rebuild, write ``result.json`` beside it."""
    spec_file = Path(argv[0])
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    progress = _Stderr()
    results: dict[str, dict[str, str]] = {}
    try:
        _rebuild(spec, results, Environment.from_process(), progress)
    except LockboxError as error:
        # The step that failed is the first without a result; later ones did not run.
        failed = next(kind for kind in KINDS if kind not in results)
        progress.warning(f"rebuilding the {LABELS[failed]} failed: {error}")
        results[failed] = {"error": f"the rebuild failed: {error}"}
    (spec_file.parent / "result.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
