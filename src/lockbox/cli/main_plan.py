"""``lockbox plan``: what a build of a project will install, and how each package arrives."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from lockbox.cli.context import Context, add_project_argument

if TYPE_CHECKING:
    from lockbox.inputs.plan import Form, Plan, Planned

_HEADINGS: dict[Form, str] = {
    "wheel": "wheels",
    "sdist": "built from sdist",
    "git": "built from git",
    "url": "built from a URL",
    "path": "built from a local archive",
    "directory": "built from a local directory",
    "member": "workspace members",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what a build will install and what it must build from source",
        description=(
            "Read PROJECT's uv.lock and recipe, find the interpreter, and print which "
            "packages a build installs: which come as wheels, which are built from sdists "
            "(honouring [tool.uv] no-binary-package), which come from git, URLs or local "
            "paths, which are workspace members, and which locked packages are left out."
        ),
    )
    add_project_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace, context: Context) -> int:
    from lockbox.inputs.interpreters import find_interpreter
    from lockbox.inputs.lock import read_lock
    from lockbox.inputs.plan import make_plan, plan_summary
    from lockbox.inputs.project import load_project

    project = load_project(args.project)
    lock = read_lock(project.lock_path)
    interpreter = find_interpreter(
        project.recipe.python, project.requires_python, progress=context.progress
    )
    plan = make_plan(project, lock, interpreter)
    for warning in plan.warnings:
        context.warning(warning)
    if args.json:
        context.out.print_json(json.dumps(plan_summary(plan)))
        return 0
    _print_plan(plan, context)
    return 0


def _print_plan(plan: Plan, context: Context) -> None:
    interpreter = plan.interpreter
    context.print(
        f"plan for {plan.project.app_name}, with {interpreter.label} at {interpreter.executable}"
    )
    context.print(
        f"{len(plan.lock.packages)} locked packages: {len(plan.installed)} installed "
        f"({sum(p.built for p in plan.installed)} built from source), "
        f"{len(plan.skipped)} left out"
    )
    for form, heading in _HEADINGS.items():
        group = plan.by_form(form)
        if not group:
            continue
        context.print(f"\n{heading}: {len(group)}")
        if form == "wheel" and not context.verbose:
            context.print("  " + ", ".join(p.package.label for p in group))
            continue
        for planned in group:
            context.print(f"  {_describe(planned)}")
    _print_build_set(plan, context)
    if plan.skipped:
        context.print(f"\nleft out: {len(plan.skipped)}")
        for skipped in plan.skipped:
            context.print(f"  {skipped.package.label}: {skipped.reason}")


def _print_build_set(plan: Plan, context: Context) -> None:
    """What every build from source is built with: uv.lock's pinned build set."""
    from lockbox.deps.buildpins import pinned

    built = plan.from_source()
    if not built:
        return
    pins = pinned(plan.project)
    names = ", ".join(built)
    if not pins:
        context.print(f"\nbuild dependencies of {names}: not pinned (run `lockbox lock-build`)")
        return
    context.print(f"\nbuild dependencies of {names}, pinned in uv.lock: {len(pins)}")
    for name, pin in pins.items():
        hashes = pin["hashes"]
        first = hashes[0] if hashes else "no hash"
        more = f" (+{len(hashes) - 1} more)" if len(hashes) > 1 else ""
        context.print(f"  {name} {pin['version']}: {first}{more}")


def _describe(planned: Planned) -> str:
    package = planned.package
    text = package.label + (f" [{','.join(planned.extras)}]" if planned.extras else "")
    if planned.form == "wheel" and planned.artifact:
        return f"{text}: {planned.artifact.filename}"
    if planned.form == "sdist":
        return f"{text}: {planned.reason}"
    if planned.form in ("git", "url"):
        return f"{text}: {package.source}"
    if planned.form in ("path", "directory", "member"):
        return f"{text}: {package.source.location}"
    return text
