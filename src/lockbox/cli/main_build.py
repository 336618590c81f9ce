"""``lockbox build`` and ``lockbox lock-hash``: make the dependency layer, and pin its hash."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.cli.context import Context

if TYPE_CHECKING:
    from lockbox.install import Tools
    from lockbox.project import Project


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = subparsers.add_parser(
        "build",
        help="build a project: its dependency layer first",
        description=(
            "Build PROJECT. The dependency phase, the only one on the network, installs "
            "what uv.lock pins with uv (workspace members excluded), normalises and scrubs "
            "the result into a layer and checks its NAR hash against deps.hash in the "
            "recipe; if that layer is already in the store, nothing runs."
        ),
    )
    build.add_argument("project", nargs="?", default=".", type=Path, metavar="PROJECT",
                       help="project directory or lockbox.toml (default: .)")
    build.add_argument("--deps-only", action="store_true",
                       help="stop after the dependency phase")
    build.set_defaults(handler=run_build)

    lock_hash = subparsers.add_parser(
        "lock-hash",
        help="write the dependency layer's hash into the recipe",
        description=(
            "Set deps.hash in PROJECT's recipe to the hash of its dependency layer: the "
            "layer already built from the current uv.lock, or a new build of it."
        ),
    )
    lock_hash.add_argument("project", nargs="?", default=".", type=Path, metavar="PROJECT")
    lock_hash.set_defaults(handler=run_lock_hash)


def run_build(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps import build_deps
    from lockbox.project import load_project

    project = load_project(args.project)
    with context.open_store() as store:
        result = build_deps(project, store, lambda: _find_tools(context),
                            context.progress)
    layer = result.layer
    if layer is not None:
        context.info(
            f"dependency layer: {len(layer.distributions)} distributions, {layer.files} files, "
            f"{layer.bytes / 1e6:.1f} MB"
        )
    context.print(f"{result.entry.path}")
    context.info(f"deps hash: {result.hash}")
    return 0


def run_lock_hash(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps import build_deps, layer_name, lock_digest, write_declared_hash
    from lockbox.project import load_project

    project = load_project(args.project)
    with context.open_store() as store:
        entry = store.latest("deps", layer_name(project))
        if entry is None or entry.inputs.get("lock") != lock_digest(project).sri:
            unpinned = _without_declared_hash(project)
            entry = build_deps(unpinned, store, lambda: _find_tools(context),
                               context.progress).entry
    if project.recipe.deps.hash == entry.nar_hash:
        context.info(f"deps.hash is already {entry.nar_hash}")
        return 0
    written = write_declared_hash(project, entry.nar_hash)
    context.info(f"wrote deps.hash = \"{entry.nar_hash}\" to {written}")
    return 0


def _without_declared_hash(project: Project) -> Project:
    deps = dataclasses.replace(project.recipe.deps, hash=None)
    return dataclasses.replace(project, recipe=dataclasses.replace(project.recipe, deps=deps))


def _find_tools(context: Context) -> Tools:
    from lockbox.install import Tools

    return Tools.find(os.environ, context.progress)
