"""The one place lockbox starts other programs.

Every external command goes through :func:`run`, which logs the command to the progress
sink and turns a failure into :class:`~lockbox.errors.ToolFailed` carrying the command and
both output streams. Nothing else in lockbox imports :mod:`subprocess`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import ToolFailed, ToolMissing
from lockbox.progress import Progress, silent


@dataclass(frozen=True)
class Completed:
    """The result of a command that ran to completion."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    progress: Progress = silent,
) -> Completed:
    """Run a command to completion, capturing its output as text.

    With ``check`` (the default) a non-zero exit raises :class:`ToolFailed`.
    """
    args = tuple(os.fspath(arg) for arg in argv)
    progress.debug("$ " + " ".join(args))
    try:
        process = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{args[0]} is not installed or not on PATH") from None
    result = Completed(args, process.returncode, process.stdout, process.stderr)
    if check and process.returncode != 0:
        raise ToolFailed(args, process.returncode, process.stdout, process.stderr)
    return result


def which(name: str, hint: str) -> Path:
    """Locate an executable on PATH or fail with ``hint`` saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} was not found on PATH; {hint}")
    return Path(found)
