"""``lockbox lock-hash``, ``lock-build`` and ``lock-toolchain``: pin the dependency layer's
hash, the sdists' build dependencies and the build root, and write what they were made from."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from lockbox.cli.context import Context, add_project_argument

if TYPE_CHECKING:
    from lockbox.inputs.project import Project


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lock_hash = subparsers.add_parser(
        "lock-hash",
        help="write the dependency layer's hash into the recipe",
        description=(
            "Set deps.hash in PROJECT's recipe to the hash of its dependency layer (the "
            "last layer, if it was built from the same inputs and toolchain, or a new "
            "build), and write what it was built from to lockbox.inputs.toml beside the "
            "recipe: commit both."
        ),
    )
    add_project_argument(lock_hash)
    lock_hash.set_defaults(handler=run_lock_hash)
    lock_build = subparsers.add_parser(
        "lock-build",
        help="pin the build dependencies of the sdists, with their hashes",
        description=(
            "Build PROJECT's sdists once, unpinned, to find their build dependencies "
            "(nested builds included), pin one version of each with all its artifact "
            "hashes in pyproject.toml's [tool.uv] build-constraint-dependencies and in "
            "uv.lock's manifest (as `uv lock` would, without resolving again), and write "
            "what was built and pinned to lockbox.inputs.toml. Builds then refuse any "
            "build dependency not pinned."
        ),
    )
    lock_toolchain = subparsers.add_parser(
        "lock-toolchain",
        help="pin the build root's Debian packages to what the archive offers now",
        description=(
            "Resolve the build root of PROJECT's [deps.toolchain] (the compiler, libc6-dev, "
            "make, pkg-config, Debian's essential set, the libraries the interpreter loads "
            "and the recipe's packages, with everything they depend on) against the Debian "
            "archive as it is today, make that root, build the dependency layer in it, and "
            "show each package version that moves and the deps.hash it gives; then write "
            "the pins ([build-root] in lockbox.inputs.toml) and the new deps.hash. Nothing "
            "is written before the new layer is built."
        ),
    )
    add_project_argument(lock_toolchain)
    lock_toolchain.add_argument(
        "--dry-run", action="store_true", help="show what would change, write nothing"
    )
    lock_toolchain.set_defaults(handler=run_lock_toolchain)
    add_project_argument(lock_build)
    lock_build.set_defaults(handler=run_lock_build)


def run_lock_hash(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps.buildroot import pinned_root
    from lockbox.deps.inputs import deps_inputs, inputs_key, write_committed
    from lockbox.deps.phase import layer_name, stored_answer, write_declared_hash
    from lockbox.pipeline import build_layer

    inputs = context.build_inputs(args)
    project = inputs.project
    with context.open_store() as store:
        # The last layer answers if it was built from these inputs with this toolchain.
        entry = store.latest("deps", layer_name(project))
        key = inputs_key(deps_inputs(project, context.environment, pinned_root(project)))
        record = stored_answer(store, entry, key) if entry else None
        if entry is None or record is None:
            unpinned = inputs.with_project(_without_declared_hash(project))
            result = build_layer(unpinned, store, context.toolbox(), context.progress)
            entry, record = result.entry, result.record
    written = write_committed(project, entry.nar_hash.sri, record or {})
    context.info(f"wrote what the layer was built from to {written}")
    if project.recipe.deps.hash == entry.nar_hash:
        context.info(f"deps.hash is already {entry.nar_hash}")
        return 0
    written = write_declared_hash(project, entry.nar_hash)
    context.info(f'wrote deps.hash = "{entry.nar_hash}" to {written}')
    return 0


def run_lock_toolchain(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps import buildroot
    from lockbox.deps.inputs import inputs_file, read_committed, write_committed
    from lockbox.deps.phase import write_declared_hash
    from lockbox.errors import BuildRootError, ProjectError
    from lockbox.pipeline import build_layer

    inputs = context.build_inputs(args)
    project = inputs.project
    wanted = project.recipe.deps.toolchain
    if wanted is None:
        raise ProjectError(
            f"{project.recipe.source or project.root / 'pyproject.toml'} has no "
            '[deps.toolchain]: add one (e.g. packages = ["libpq-dev"]) to build '
            "in a root of pinned Debian packages"
        )
    where = inputs_file(project)
    try:
        old = buildroot.read_pins(read_committed(project), where)
    except BuildRootError as error:
        context.warning(f"{error}; pinning anew")
        old = None
    distribution = wanted.distribution or (
        old.distribution if old else buildroot.host_distribution()
    )
    tools = context.toolbox()
    new = buildroot.resolve(
        wanted.packages, distribution, inputs.interpreter, tools, context.progress
    )
    moved = buildroot.changes(old, new)
    context.info(
        f"build root of Debian {distribution}: {len(new.packages)} packages, {len(moved)} changed"
    )
    for line in moved:
        context.info(f"  {line}")
    if old is not None and not moved and old.requested == new.requested and old.hash:
        new = dataclasses.replace(new, hash=old.hash)
    with context.open_store() as store:
        root = buildroot.ensure_root(store, new, tools, context.progress, project_dir=project.root)
        new = dataclasses.replace(new, hash=root.nar_hash)
        if old is not None and old.hash is not None and old.hash != new.hash:
            context.info(f"build root hash: {old.hash} → {new.hash}")
        result = build_layer(
            inputs.with_project(_without_declared_hash(project)),
            store,
            tools,
            context.progress,
            root=new,
        )
    declared = project.recipe.deps.hash
    if declared == result.hash:
        context.info(f"deps.hash stays {result.hash}")
    else:
        context.info(f"deps.hash: {declared or '(none)'} → {result.hash}")
    if args.dry_run:
        context.info("--dry-run: nothing written")
        return 0
    written = write_committed(project, result.hash.sri, result.record or {}, root=new)
    context.info(f"wrote the build root's pins and what the layer was built from to {written}")
    if declared != result.hash:
        context.info(
            f'wrote deps.hash = "{result.hash}" to {write_declared_hash(project, result.hash)}'
        )
    return 0


def run_lock_build(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps.buildpins import lock_build

    inputs = context.build_inputs(args)
    with context.open_store() as store:
        found = lock_build(inputs, store, context.toolbox(), context.progress)
    if found["built"]:
        context.info(f"built from source: {', '.join(found['built'])}")
    for name, version in found["pins"].items():
        others = [v for v in found["found"].get(name, []) if v != version]
        also = f" (builds also chose {', '.join(others)})" if others else ""
        context.info(f"  {name} {version}{also}")
    if found["pins"]:
        context.info(
            f"pinned {len(found['pins'])} build dependencies; review and commit "
            "pyproject.toml, uv.lock and lockbox.inputs.toml, then `lockbox lock-hash`"
        )
    return 0


def _without_declared_hash(project: Project) -> Project:
    deps = dataclasses.replace(project.recipe.deps, hash=None)
    return dataclasses.replace(project, recipe=dataclasses.replace(project.recipe, deps=deps))
