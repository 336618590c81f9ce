"""What every subcommand gets: where output goes, how verbose to be, and the store location."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from lockbox.progress import Progress
from lockbox.store import Store, default_store_dir


@dataclass
class Context:
    """Rendering state of one CLI invocation; also the progress sink handed to the core."""

    verbose: bool = False
    quiet: bool = False
    store_dir: Path | None = None
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        return cls(
            verbose=args.verbose,
            quiet=args.quiet,
            store_dir=Path(args.store) if args.store else None,
        )

    # Progress protocol -------------------------------------------------------------------
    def debug(self, message: str) -> None:
        if self.verbose:
            self.err.print(f"[dim]{escape(message)}[/dim]")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(message))

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(message)}")

    # CLI-only rendering ------------------------------------------------------------------
    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/bold red] {escape(message)}")

    def print(self, text: str) -> None:
        """Plain output on stdout: results that scripts may read."""
        self.out.print(escape(text))

    @property
    def progress(self) -> Progress:
        return self

    def write_bytes(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def open_store(self) -> Store:
        """Open the store named by ``--store``, ``$LOCKBOX_STORE`` or the XDG default."""
        return Store.open(self.store_dir or default_store_dir(os.environ), self)
