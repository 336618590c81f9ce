"""What every subcommand gets: where output goes, how verbose to be, and the store location."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.environment import Environment
from lockbox.progress import Progress

if TYPE_CHECKING:
    from rich.console import Console

    from lockbox.cli.shortcut import Request
    from lockbox.inputs.build import BuildInputs
    from lockbox.pipeline import Build
    from lockbox.store.store import Store
    from lockbox.tools.toolbox import Toolbox


@dataclass
class Context:
    """Rendering state of one CLI invocation; also the progress sink handed to the core."""

    verbose: bool = False
    quiet: bool = False
    store_dir: Path | None = None
    shortcut: Request | None = None
    """What the invocation asks of :mod:`lockbox.cli.shortcut`, if it is one it answers."""
    said: list[tuple[str, str]] = field(default_factory=list)
    """What was printed: ("say", stdout line) and ("info", stderr line), in order."""
    unusual: bool = False
    """Whether a warning or an error was shown (such a run is not recorded as a shortcut)."""
    environment: Environment = field(default_factory=Environment)
    """The environment lockbox was started with, read once (:mod:`lockbox.environment`)."""

    # rich is imported only when something is rendered with it: a command whose output is
    # plain text (a hash) starts faster without it.
    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        environment: Environment,
        shortcut: Request | None = None,
    ) -> Context:
        return cls(
            verbose=args.verbose,
            quiet=args.quiet,
            store_dir=Path(args.store) if args.store else None,
            shortcut=None if args.verbose else shortcut,
            environment=environment,
        )

    # Progress protocol -------------------------------------------------------------------
    def debug(self, message: str) -> None:
        if self.verbose:
            self._line(message, style="dim")

    def info(self, message: str) -> None:
        self.said.append(("info", message))
        if not self.quiet:
            self._line(message)

    def warning(self, message: str) -> None:
        self.unusual = True
        self._line(message, label="warning:", style="yellow")

    # CLI-only rendering ------------------------------------------------------------------
    def error(self, message: str) -> None:
        self.unusual = True
        self._line(message, label="error:", style="bold red")

    def _line(self, message: str, label: str = "", style: str = "") -> None:
        """One message on stderr: styled by rich on a terminal; elsewhere (a log, a pipe)
        written as rich would write it there, plain, without importing rich."""
        if not sys.stderr.isatty():
            sys.stderr.write(f"{label} {message}\n" if label else f"{message}\n")
        elif label:
            self.err.print(f"[{style}]{label}[/{style}] {_escape(message)}")
        elif style:
            self.err.print(f"[{style}]{_escape(message)}[/{style}]")
        else:
            self.err.print(_escape(message))

    def print(self, text: str) -> None:
        """Plain output on stdout: results that scripts may read."""
        self.said.append(("say", text))
        sys.stdout.write(text + "\n")

    @property
    def progress(self) -> Progress:
        return self

    def write_bytes(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def open_store(self) -> Store:
        """Open the store named by ``--store``, ``$LOCKBOX_STORE`` or the XDG default."""
        from lockbox.store.store import Store, default_store_dir

        return Store.open(self.store_dir or default_store_dir(self.environment), self)

    def toolbox(self) -> Toolbox:
        """The tools of this command, found when a phase first asks for each."""
        from lockbox.tools.toolbox import Toolbox

        return Toolbox(self.environment, self)

    def build_inputs(self, args: argparse.Namespace) -> BuildInputs:
        """What a build of ``args.project`` reads, with ``--no-bundle`` applied to its recipe."""
        from lockbox.inputs.build import BuildInputs
        from lockbox.inputs.project import load_project

        project = load_project(args.project)
        if getattr(args, "no_bundle", False):
            libraries = dataclasses.replace(project.recipe.libraries, bundle=False)
            project = dataclasses.replace(
                project, recipe=dataclasses.replace(project.recipe, libraries=libraries)
            )
        return BuildInputs(project, self.environment, self)

    def remember(self, store: Store, built: Build) -> None:
        """Leave the record that answers the same command next time without reading the
        project (:mod:`lockbox.cli.shortcut`), when this one found everything in the store."""
        request = self.shortcut
        consulted = built.consulted(store)
        if request is None or self.unusual or consulted is None:
            return
        inputs, outputs = consulted
        sealed = {str(entry.path): store.seal(entry) for entry in built.used()}
        if None in sealed.values():
            return
        request.record(inputs, outputs, self.said, str(built.result), sealed)  # type: ignore[arg-type]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def add_project_argument(parser: argparse.ArgumentParser) -> None:
    """The optional PROJECT argument of every command that works on a project."""
    parser.add_argument(
        "project",
        nargs="?",
        default=".",
        type=Path,
        metavar="PROJECT",
        help="project directory or lockbox.toml (default: .)",
    )
