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
from typing import Any

from lockbox.check.report import KINDS, LABELS
from lockbox.environment import Environment
from lockbox.errors import LockboxError
from lockbox.progress import Progress
from lockbox.store.store import Store

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
    from lockbox.assemble.app import (
        Assembly,
        Placement,
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
            Assembly(
                project,
                read_sources(project, inputs.plan),
                registered["deps"].path,
                interpreter,
                PythonEntry(registered_python, python.executable, reused=True),
                registered.get("bytecode"),
                layer_libraries(store, registered["deps"]),
            ),
            Placement(
                app.path,
                content,
                work,
                link=True,
                hidden=[store.root],
                log=root / "app-verify.log",
            ),
            sandbox,
            tools.patchelf,
            progress=progress,
            checks=False,
        )
        results["app"] = {"hash": nar_hash(content).sha256.sri, "tree": relative(content)}
