"""``lockbox build``, ``run``, ``why`` and ``export``: make the dependency layer and the
application (:mod:`lockbox.pipeline`), and use the application."""

from __future__ import annotations

import argparse
from pathlib import Path

from lockbox.cli.context import Context, add_project_argument
from lockbox.cli.shortcut import run_in_app


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = subparsers.add_parser(
        "build",
        help="build a project: its dependency layer, then the application",
        description=(
            "Build PROJECT. The dependency phase, the only one on the network, installs "
            "what uv.lock pins with uv (workspace members excluded), normalises and scrubs "
            "the result into a layer and checks its NAR hash against deps.hash in the "
            "recipe; if that layer is already in the store, nothing runs. The assembly "
            "phase then makes the application offline from the layer and the project's "
            "source (members, patches, substitutions, bin/), runs the recipe's [verify] "
            "checks in a sandbox without network, and registers it; with unchanged inputs "
            "it is a store lookup. Prints the application's path."
        ),
    )
    add_project_argument(build)
    build.add_argument("--deps-only", action="store_true", help="stop after the dependency phase")
    build.add_argument(
        "--no-bundle",
        action="store_true",
        help="link extension modules to the host's libraries instead of "
        "bundling them (overrides [libraries] bundle)",
    )
    build.set_defaults(handler=run_build)

    run = subparsers.add_parser(
        "run",
        help="run a command with the built application",
        description=(
            "Build PROJECT (a lookup when nothing changed), then run COMMAND in the "
            "application's root directory with its bin/ first on PATH, e.g. "
            "`lockbox run examples/gatekeeper -- python manage.py check`. Exits with "
            "COMMAND's exit code."
        ),
    )
    add_project_argument(run)
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND …")
    run.set_defaults(handler=run_run)

    export = subparsers.add_parser(
        "export",
        help="write the application as a runnable tree outside the store",
        description=(
            "Assemble PROJECT's application for the directory DIR (its @out@ and script "
            "launchers name DIR), verify it there, and put it in place. DIR must not exist, "
            "be empty, or hold an earlier export, which is replaced only when the new one "
            "is verified."
        ),
    )
    add_project_argument(export)
    export.add_argument(
        "--to", required=True, type=Path, metavar="DIR", help="the directory to write"
    )
    export.add_argument(
        "--no-bundle",
        action="store_true",
        help="link to the host's libraries instead of bundling them",
    )
    export.set_defaults(handler=run_export)

    why = subparsers.add_parser(
        "why",
        help="which files of the built application need a shared library",
        description=(
            "Build PROJECT (a lookup when nothing changed) and list, for the application and "
            "its interpreter entry, each chain of ELF files that needs LIB (a soname such as "
            "libssl.so.3), through the libraries bundled with it."
        ),
    )
    add_project_argument(why)
    why.add_argument("library", metavar="LIB", help="the library's soname, e.g. libpq.so.5")
    why.set_defaults(handler=run_why)


def run_build(args: argparse.Namespace, context: Context) -> int:
    from lockbox.pipeline import build

    inputs = context.build_inputs(args)
    with context.open_store() as store:
        built = build(inputs, store, context.toolbox(), context.progress, deps_only=args.deps_only)
        context.print(f"{built.result}")
        if built.app is not None:
            context.info(
                f"run it: {built.result}/bin/python, or `lockbox run {args.project} -- COMMAND`"
            )
        context.remember(store, built)
    return 0


def run_run(args: argparse.Namespace, context: Context) -> int:
    from lockbox.pipeline import build

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        context.error(
            "no command to run: write it after --, e.g. "
            "`lockbox run PROJECT -- python manage.py check`"
        )
        return 2
    inputs = context.build_inputs(args)
    with context.open_store() as store:
        built = build(inputs, store, context.toolbox(), context.progress)
        context.remember(store, built)
    return run_in_app(str(built.result), command, context.environment)


def run_why(args: argparse.Namespace, context: Context) -> int:
    from lockbox.native.resolve import dependents
    from lockbox.pipeline import build

    inputs = context.build_inputs(args)
    with context.open_store() as store:
        app = build(inputs, store, context.toolbox(), context.progress).result
    found = False
    for label, root in (
        ("application", app),
        ("interpreter", (app / "python").resolve()),
    ):
        for chain in dependents(root, args.library):
            found = True
            context.print(f"{label}: {' -> '.join(chain)}")
    if not found:
        context.error(f"no file of the application or its interpreter needs {args.library}")
        return 1
    return 0


def run_export(args: argparse.Namespace, context: Context) -> int:
    from lockbox.pipeline import export

    inputs = context.build_inputs(args)
    with context.open_store() as store:
        result = export(inputs, store, context.toolbox(), args.to, context.progress)
    context.print(f"{result.path}")
    return 0
