"""The rebuild of ``lockbox check``, which runs in the varied world as its own process.

The check (:mod:`lockbox.check.compare`) writes a spec — the recipe, the project (or its
copy), the store, the scratch store, the uv cache and the registered entries — and starts
``python -m lockbox.cli.rebuild SPEC``, which calls :func:`rebuild`: the same phases as a
build (:mod:`lockbox.pipeline`), into the scratch store, each rebuilt entry's NAR hash and
tree recorded for the check to compare. Its progress reaches the check a line each on its
standard error, warnings prefixed with :data:`WARNING`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockbox.check.report import KINDS, LABELS
from lockbox.environment import Environment
from lockbox.errors import LockboxError
from lockbox.progress import Progress
from lockbox.store.store import Entry, Store

if TYPE_CHECKING:
    from lockbox.assemble.interpreter import PythonEntry
    from lockbox.inputs.build import BuildInputs
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox

WARNING = "warning: "
"""How a warning of the rebuild starts, on its standard error."""


def rebuild(
    spec: dict[str, Any], environment: Environment, progress: Progress
) -> dict[str, dict[str, str]]:
    """Rebuild each entry of :data:`~lockbox.check.report.KINDS` as ``spec`` says: for each,
    its NAR hash and tree (relative to the rebuild's root), or why it was not rebuilt."""
    results: dict[str, dict[str, str]] = {}
    try:
        _rebuild(spec, results, environment, progress)
    except LockboxError as error:
        # The step that failed is the first without a result; later ones did not run.
        failed = next(kind for kind in KINDS if kind not in results)
        progress.warning(f"rebuilding the {LABELS[failed]} failed: {error}")
        results[failed] = {"error": f"the rebuild failed: {error}"}
    return results


def _rebuild(
    spec: dict[str, Any],
    results: dict[str, dict[str, str]],
    environment: Environment,
    progress: Progress,
) -> None:
    """Rebuild each entry of :data:`KINDS` as ``spec`` says, recording into ``results``
    each one's NAR hash and tree (relative to the rebuild's root), or why it was not."""
    from lockbox.assemble.app import offline_sandbox
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.interpreters import probe
    from lockbox.inputs.project import load_project
    from lockbox.tools.toolbox import Toolbox

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
    with Store.open(Path(spec["store"])) as store, Store.open(Path(spec["scratch"])) as scratch:
        steps = _Steps(spec, results, inputs, tools, store, scratch, progress)
        deps = steps.deps()
        if "python" not in steps.registered:
            return  # the dependency layer only
        python = steps.python()
        sandbox = offline_sandbox(tools)
        if "bytecode" in steps.registered:
            steps.bytecode(deps, python, sandbox)
        steps.app(python, sandbox)


class _Steps:
    """The rebuild's steps, each recording its result."""

    def __init__(
        self,
        spec: dict[str, Any],
        results: dict[str, dict[str, str]],
        inputs: BuildInputs,
        tools: Toolbox,
        store: Store,
        scratch: Store,
        progress: Progress,
    ) -> None:
        self.spec = spec
        self.results = results
        self.inputs = inputs
        self.tools = tools
        self.store = store
        self.scratch = scratch
        self.progress = progress
        self.root = Path(spec["root"])
        self.registered = {kind: store.get(name) for kind, name in spec["registered"].items()}

    def record(self, kind: str, entry_hash: str, tree: Path) -> None:
        self.results[kind] = {"hash": entry_hash, "tree": os.path.relpath(tree, self.root)}

    def same(self, kind: str) -> bool:
        entry = self.registered.get(kind)
        found = self.results.get(kind, {}).get("hash")
        return entry is not None and found == entry.nar_hash.sri

    def deps(self) -> Entry | None:
        """The dependency layer, every sdist built again; None when it differs from the
        declared hash (its tree is kept and recorded)."""
        from lockbox.errors import HashMismatch
        from lockbox.pipeline import build_layer

        self.progress.info("the dependency layer, every sdist built again")
        try:
            entry = build_layer(self.inputs, self.scratch, self.tools, self.progress).entry
        except HashMismatch as mismatch:
            assert mismatch.kept is not None
            self.record("deps", mismatch.got, mismatch.kept)
            return None
        self.record("deps", entry.nar_hash.sri, entry.path)
        return entry

    def python(self) -> PythonEntry:
        from lockbox.assemble.interpreter import import_python

        self.progress.info("the interpreter entry")
        python = import_python(
            self.inputs.interpreter,
            self.scratch,
            self.tools,
            bundle=self.spec["bundle"],
            progress=self.progress,
        )
        self.record("python", python.entry.nar_hash.sri, python.entry.path)
        return python

    def bytecode(self, deps: Entry | None, python: PythonEntry, sandbox: Sandbox) -> None:
        from lockbox.assemble.bytecode import deps_bytecode

        if deps is None or not self.same("deps"):
            self.results["bytecode"] = {"error": "not rebuilt: the dependency layer differs"}
            return
        self.progress.info("the dependency layer's bytecode")
        bytecode = deps_bytecode(self.scratch, deps, python, sandbox, self.progress)
        self.record("bytecode", bytecode.nar_hash.sri, bytecode.path)

    def app(self, python: PythonEntry, sandbox: Sandbox) -> None:
        """The application, assembled from the registered entries once each rebuilt one is
        proved identical; the first that is not says why it is not rebuilt."""
        from lockbox.assemble.interpreter import PythonEntry
        from lockbox.assemble.libraries import layer_libraries
        from lockbox.assemble.sources import read_sources
        from lockbox.assemble.tree import Assembly, Placement, assemble_tree
        from lockbox.store.nar import nar_hash

        for kind in ("deps", "python", "bytecode"):
            if kind in self.registered and not self.same(kind):
                reason = (
                    "differs" if "hash" in self.results.get(kind, {}) else "could not be rebuilt"
                )
                self.results["app"] = {"error": f"not rebuilt: its {LABELS[kind]} {reason}"}
                return
        app, deps, registered_python = (self.registered[k] for k in ("app", "deps", "python"))
        assert app is not None and deps is not None and registered_python is not None
        self.progress.info(f"the application, for {app.path}")
        content = self.root / f"app-{app.path_name}"
        work = self.root / "app-work"
        work.mkdir()
        project = self.inputs.project
        # Not verified again: the registered application passed its [verify] table, which
        # writes nothing into the output; the rebuild compares bytes and runs no check.
        assemble_tree(
            Assembly(
                project,
                read_sources(project, self.inputs.plan),
                deps.path,
                self.inputs.interpreter,
                PythonEntry(registered_python, python.executable, reused=True),
                self.registered.get("bytecode"),
                layer_libraries(self.store, deps),
            ),
            Placement(
                app.path,
                content,
                work,
                link=True,
                hidden=[self.store.root],
                log=self.root / "app-verify.log",
            ),
            self.tools,
            progress=self.progress,
            checks=False,
        )
        self.record("app", nar_hash(content).sha256.sri, content)
