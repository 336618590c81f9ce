"""Verification: the checks of the recipe's ``[verify]`` table, which gate the build.

Each import runs in a fresh interpreter of the assembled application and prints the
module's distribution version and file; each command runs in the application's root. All of
them run in the unprivileged offline sandbox (:meth:`lockbox.tools.sandbox.Sandbox.unprivileged`), with the
application at its final path. Everything they print goes to one log; the first failure
stops verification and raises :class:`~lockbox.errors.VerificationFailed`, which names the
log. The assembly phase then registers nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import ToolFailed, VerificationFailed
from lockbox.inputs.recipe import Verify
from lockbox.progress import Progress, silent

_IMPORT = """\
import importlib, importlib.metadata, sys
name = sys.argv[1]
module = importlib.import_module(name)
top = name.split(".")[0]
dists = importlib.metadata.packages_distributions().get(top, [])
version = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in sorted(set(dists)))
print(f"{name}: {version or 'no distribution'}, {getattr(module, '__file__', None) or 'built-in'}")
"""


@dataclass(frozen=True)
class Check:
    what: str
    """How the check is named to the user, e.g. ``import lxml.etree``."""
    output: str


Runner = Callable[[Sequence[str], Path], str]
"""Runs a command (in the sandbox) in a directory; returns its output or raises ToolFailed."""


def verify(
    verify: Verify, out: Path, log: Path, run_in_sandbox: Runner, progress: Progress = silent
) -> list[Check]:
    """Run every import and command of ``verify`` against the application at ``out``,
    appending their output to ``log``."""
    python = os.fspath(out / "bin" / "python")
    checks: list[tuple[str, list[str]]] = [
        (f"import {module}", [python, "-c", _IMPORT, module]) for module in verify.imports
    ]
    # A command's first word is found on the sandbox's PATH, which starts with out/bin.
    checks += [(" ".join(command), list(command)) for command in verify.commands]
    done: list[Check] = []
    with open(log, "a", encoding="utf-8") as sink:
        for what, argv in checks:
            progress.info(f"verifying: {what}")
            sink.write(f"$ {what}\n")
            try:
                output = run_in_sandbox(argv, out)
            except ToolFailed as error:
                text = (error.stdout + error.stderr).rstrip()
                sink.write(text + f"\n(exit code {error.returncode})\n")
                raise VerificationFailed(
                    f"{what} (exit code {error.returncode})", text, log
                ) from None
            sink.write(output.rstrip() + "\n")
            if what.startswith("import "):
                progress.info(f"  {(output.strip().splitlines() or [''])[-1]}")  # version, file
            elif output.strip():
                progress.debug(output.rstrip())
            done.append(Check(what, output))
    return done
