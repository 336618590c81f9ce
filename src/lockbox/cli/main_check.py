"""``lockbox check``: rebuild in a varied world and compare with the store."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from lockbox.cli.context import Context, add_project_argument

if TYPE_CHECKING:
    from lockbox.check.report import CheckReport, Compared

_SIGNS = {"added": "+", "removed": "-", "changed": "~", "mode": "m"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lockbox.check.variations import VARIATIONS

    parser = subparsers.add_parser(
        "check",
        help="rebuild from scratch in a varied environment and compare the bytes",
        description=(
            "Build PROJECT (a lookup when it is built), then rebuild its dependency layer "
            "(every sdist built again, downloads reused), its interpreter entry, the "
            "layer's bytecode and the application from scratch, in a varied environment, "
            "and compare each NAR hash with the registered entry's. Variations, all on by "
            f"default: {', '.join(VARIATIONS)} (docs/check.md). On a difference: lists "
            "each differing file by distribution, explains the first ones (diffoscope when "
            "installed), keeps the rebuilt trees and exits 1."
        ),
    )
    add_project_argument(parser)
    parser.add_argument(
        "--no-vary",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this variation out (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--deps-only",
        action="store_true",
        help="check the dependency layer only (no interpreter entry, "
        "bytecode or application is built)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the rebuilt trees even when everything is identical",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (progress stays on stderr)",
    )
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace, context: Context) -> int:
    from lockbox.check.compare import check
    from lockbox.check.report import Built
    from lockbox.check.variations import parse_variations
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.project import load_project
    from lockbox.pipeline import build, referenced

    variations = parse_variations(args.no_vary)
    inputs = BuildInputs(load_project(args.project), context.environment, context.progress)
    tools = context.toolbox()
    with context.open_store() as store:
        made = build(inputs, store, tools, context.progress, deps_only=args.deps_only)
        deps = made.deps.entry
        if made.app is None or made.app.entry is None:
            built = Built(deps=deps)
        else:
            app = made.app.entry
            python = store.resolve((app.path / "python").resolve().name)
            bytecode = next(iter(referenced(store, app, "bytecode")), None)
            built = Built(deps=deps, python=python, bytecode=bytecode, app=app)
        report = check(
            inputs, store, built, variations, tools, keep=args.keep, progress=context.progress
        )
    if args.json:
        context.print(json.dumps(report.as_json(), indent=2))
    else:
        _render(report, context)
    return 0 if report.ok else 1


def _render(report: CheckReport, context: Context) -> None:
    from lockbox.check.report import LABELS

    for name, reason in report.skipped.items():
        context.print(f"variation {name} not applied: {reason}")
    for compared in report.entries:
        label = f"{LABELS[compared.kind]} {compared.name}"
        if compared.same:
            context.print(f"identical  {label}  {compared.registered_hash}")
        elif compared.error is not None:
            context.print(f"unchecked  {label}: {compared.error}")
        else:
            context.print(f"DIFFERENT  {label}")
            _render_difference(compared, context)
    if report.kept is not None:
        context.print(f"the rebuilt trees are kept in {report.kept}")
    if report.ok:
        context.print(
            f"{report.project}: every rebuild is byte-identical ({len(report.applied)} variations)"
        )


def _render_difference(compared: Compared, context: Context) -> None:
    context.print(f"  registered {compared.registered_hash}  {compared.registered_path}")
    context.print(f"  rebuilt    {compared.rebuilt_hash}  {compared.rebuilt_path}")
    by_owner: dict[str, list[str]] = {}
    for change in compared.differences:
        detail = f" ({change.detail})" if change.detail else ""
        by_owner.setdefault(compared.owners.get(change.path, ""), []).append(
            f"    {_SIGNS[change.change]} {change.path}{detail}"
        )
    context.print(f"  {len(compared.differences)} files differ:")
    for owner in sorted(by_owner):
        context.print(f"  {owner}:")
        for line in by_owner[owner]:
            context.print(line)
    for path, explanation in compared.explanations.items():
        context.print(f"  {path}:")
        for line in explanation.splitlines():
            context.print(f"    {line}")
