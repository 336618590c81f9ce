"""The dependency layer's bytecode: one ``bytecode`` entry per layer and interpreter.

Compiled once, in the offline sandbox, and hardlinked into every application that uses the
layer (:mod:`lockbox.assemble.tree`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import build_identity, fs
from lockbox.assemble.tree import copy_tree
from lockbox.errors import AssemblyError, ToolFailed
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store

if TYPE_CHECKING:
    from lockbox.assemble.interpreter import PythonEntry
    from lockbox.tools.sandbox import Sandbox


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
        copy_tree(deps.path, tree, link=True)
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
