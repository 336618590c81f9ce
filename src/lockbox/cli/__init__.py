"""The ``lockbox`` command line.

This package alone renders output, chooses exit codes and decides whether a traceback is
shown. Each subcommand lives in its own ``main_<command>.py`` with a ``register`` function
that adds its parser and binds the function that runs it. Those modules import what their
command runs inside the function that runs it, so a quick command (``lockbox hash``, a
build that is a store lookup) does not pay for loading uv wrappers, rich or sqlite.
"""

from __future__ import annotations

import sys
import time

from lockbox.environment import Environment

TYPE_CHECKING = False  # typing itself is not imported: a repeated build must start fast
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from lockbox.cli.shortcut import Request


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from lockbox import __version__
    from lockbox.cli import (
        main_build,
        main_check,
        main_diff,
        main_hash,
        main_image,
        main_lock,
        main_plan,
        main_recipe,
        main_store,
    )

    commands = (
        main_build,
        main_image,
        main_lock,
        main_check,
        main_diff,
        main_plan,
        main_recipe,
        main_hash,
        main_store,
    )
    parser = argparse.ArgumentParser(
        prog="lockbox",
        description=(
            "Build uv-locked Python applications into pinned, hermetic, reproducible, "
            "self-contained and verified outputs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lockbox {__version__}")
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="store directory (default: $LOCKBOX_STORE, else $XDG_DATA_HOME/lockbox/store)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show every step and command")
    parser.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        command.register(subparsers)
    return parser


def main(
    argv: Sequence[str] | None = None,
    shortcut: Request | None = None,
    environment: Environment | None = None,
) -> int:
    """Run lockbox with ``argv`` (default: ``sys.argv[1:]``) in ``environment`` (default:
    this process's, read now) and return the exit code.

    ``shortcut`` is the request ``argv`` makes of :mod:`lockbox.cli.shortcut`, which a build
    or run that finds everything in the store records for the next identical command."""
    from lockbox.cli.context import Context
    from lockbox.errors import LockboxError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors
        return exit.code if isinstance(exit.code, int) else 2
    if environment is None:
        environment = Environment.from_process()
    context = Context.from_args(args, environment, shortcut)
    if shortcut is not None and shortcut.distrusted:
        context.warning(shortcut.distrust_notice())
    try:
        code: int = args.handler(args, context)
    except LockboxError as error:
        context.error(str(error))
        return error.exit_code
    except OSError as error:
        # The file system said no (permissions, a full disk, a vanished path): that is the
        # user's to fix, so say what and where instead of showing a traceback.
        where = f": {error.filename}" if error.filename else ""
        context.error(f"{error.strerror or error}{where}")
        return 1
    except KeyboardInterrupt:
        context.error("interrupted")
        return 130
    return code


def entry() -> None:
    """Console-script entry point: a repeated build or run is answered from its record when
    nothing it consulted changed (:mod:`lockbox.cli.shortcut`), before the rest of lockbox is
    imported."""
    from lockbox.cli.shortcut import Request, run_in_app

    started = time.time_ns()
    environment = Environment.from_process()
    request = Request.parse(sys.argv[1:], dict(environment), started)
    if request is not None:
        result = request.answer()
        if result is not None:
            sys.exit(
                run_in_app(result, request.run, environment) if request.command == "run" else 0
            )
    sys.exit(main(shortcut=request, environment=environment))
