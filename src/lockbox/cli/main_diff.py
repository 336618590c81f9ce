"""``lockbox diff``: how a rejected dependency layer differs from the last good one."""

from __future__ import annotations

import argparse

from lockbox.cli.context import Context, add_project_argument
from lockbox.errors import LockboxError

_SIGNS = {"added": "+", "removed": "-", "changed": "~"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="show how a layer that failed its hash check differs from the last good one",
        description=(
            "When a dependency layer does not hash to the declared deps.hash, lockbox keeps "
            "it aside. This compares it with the last registered layer of PROJECT: "
            "distributions added or removed, and every file added, removed or changed."
        ),
    )
    add_project_argument(parser)
    parser.set_defaults(handler=run_diff)


def run_diff(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps.phase import layer_name
    from lockbox.deps.treediff import diff_trees
    from lockbox.inputs.project import load_project

    project = load_project(args.project)
    name = layer_name(project)
    with context.open_store() as store:
        rejected = store.rejected(name)
        good = store.latest("deps", name)
    if rejected is None:
        raise LockboxError(
            f"no rejected dependency layer of {project.app_name} is kept; "
            "one is kept when a build's hash differs from deps.hash"
        )
    if good is None:
        raise LockboxError(
            f"the store holds no good dependency layer of {project.app_name} "
            f"to compare the rejected one ({rejected}) with"
        )
    difference = diff_trees(good.path, rejected)
    context.print(f"last good layer: {good.path} ({good.nar_hash})")
    context.print(f"rejected layer:  {rejected}")
    if difference.same:
        context.print("the two layers have the same files and contents")
        return 0
    for dist in difference.added_dists:
        context.print(f"+ distribution {dist}")
    for dist in difference.removed_dists:
        context.print(f"- distribution {dist}")
    context.print(f"{len(difference.files)} files differ:")
    for change in difference.files:
        detail = f" ({change.detail})" if change.detail else ""
        context.print(f"  {_SIGNS[change.change]} {change.path}{detail}")
    return 1
