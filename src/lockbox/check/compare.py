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

import contextlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.check.rebuild import WARNING
from lockbox.check.report import LABELS, Built, CheckReport, Compared
from lockbox.errors import CheckError
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store
from lockbox.tools.run import run

if TYPE_CHECKING:
    from lockbox.inputs.build import BuildInputs
    from lockbox.tools.toolbox import Toolbox

EXPLAINED = 5
"""How many changed files of an entry get an explanation."""

_SKIPPED_CACHE_BUCKETS = ("sdists-", "builds-")
"""uv cache buckets the rebuild does not get: built wheels (and their sdists), build dirs."""


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

    checks = store.layout.checks
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
            argv = world.argv([sys.executable, "-m", "lockbox.cli.rebuild", str(spec_file)])
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
    if line.startswith(WARNING):
        progress.warning("rebuild: " + line.removeprefix(WARNING))
    elif line.strip():
        progress.info("  rebuild: " + line)


def _remove_work(work: Path) -> None:
    fs.remove_tree(work)
    with contextlib.suppress(OSError):  # the parent goes only once nothing else is in it
        work.parent.rmdir()


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
    fs.copy_tree(
        source,
        target,
        ignore=lambda _, names: [n for n in names if n in _PROJECT_LEFT_OUT],
        preserve=True,
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
            fs.remove_tree(target)
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
