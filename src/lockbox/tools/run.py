"""The one place lockbox starts other programs.

Every external command goes through :func:`run`, which logs the command to the progress
sink and turns a failure into :class:`~lockbox.errors.ToolFailed` carrying the command and
both output streams. Nothing else in lockbox imports :mod:`subprocess`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
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
    on_stderr_line: Callable[[str], None] | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run a command to completion, capturing its output as text.

    With ``on_stderr_line`` each line the command writes to stderr is passed on as it
    comes, for long steps whose tools report progress there; it is captured all the same.
    With ``check`` (the default) a non-zero exit raises :class:`ToolFailed`. ``preexec``
    runs in the child before the command (process-wide settings: umask, CPU affinity). A
    command still running after ``timeout`` seconds is killed and counts as exit code -9,
    streamed or not. The command never reads the terminal: its stdin is ``input``, or
    empty (a ``git clone`` asking for a password fails instead of waiting).
    """
    args = tuple(os.fspath(arg) for arg in argv)
    progress.debug("$ " + shown(args))
    try:
        if on_stderr_line is None:
            process = subprocess.run(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
                preexec_fn=preexec,
                timeout=timeout,
            )
            returncode, stdout, stderr = process.returncode, process.stdout, process.stderr
        else:
            returncode, stdout, stderr = _run_streaming(
                args, cwd, env, input, on_stderr_line, preexec, timeout
            )
    except subprocess.TimeoutExpired as expired:
        returncode, stdout, stderr = -9, _text(expired.stdout), _text(expired.stderr)
        stderr += f"\n(killed after {timeout} s)"
    except FileNotFoundError as error:
        if (
            cwd is not None
            and error.filename is not None
            and os.fspath(error.filename) == os.fspath(cwd)
        ):
            raise ToolFailed(args, -1, "", f"the working directory {cwd} does not exist") from None
        raise ToolMissing(f"{args[0]} is not installed or not on PATH") from None
    result = Completed(args, returncode, stdout, stderr)
    if check and returncode != 0:
        raise ToolFailed(args, returncode, stdout, stderr)
    return result


def shown(args: Sequence[str]) -> str:
    """A command line as a shell would take it back, each multi-line argument cut at its
    first line."""
    return " ".join(
        shlex.quote(arg.split("\n", 1)[0]) + " …" if "\n" in arg else shlex.quote(arg)
        for arg in args
    )


def _run_streaming(
    args: tuple[str, ...],
    cwd: Path | None,
    env: Mapping[str, str] | None,
    input: str | None,
    on_stderr_line: Callable[[str], None],
    preexec: Callable[[], None] | None,
    timeout: float | None,
) -> tuple[int, str, str]:
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        preexec_fn=preexec,  # noqa: PLW1509 only check's varied world sets it: umask, CPUs
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None and process.stderr is not None
    stdout_chunks: list[str] = []
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            stderr_lines.append(line)
            on_stderr_line(line.rstrip("\n"))

    # Both pipes are drained by threads, so neither can fill up and block, and a timeout
    # holds even while a killed command's children keep the pipes open (the pipes are then
    # left to those threads, which end when the children do).
    readers = [
        threading.Thread(
            target=lambda: stdout_chunks.append(process.stdout.read()),  # type: ignore[union-attr]
            daemon=True,
        ),
        threading.Thread(target=read_stderr, daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        if input is not None and process.stdin is not None:
            process.stdin.write(input)
            process.stdin.close()
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        for reader in readers:
            reader.join(timeout=1)
        return -9, "".join(stdout_chunks), "".join(stderr_lines) + f"\n(killed after {timeout} s)"
    except BaseException:
        process.kill()
        process.wait()
        raise
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    return returncode, "".join(stdout_chunks), "".join(stderr_lines)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def which(name: str, hint: str, path: str | None = None) -> Path:
    """Locate an executable on ``path`` (the environment's ``PATH``; the process's when
    None) or fail with ``hint`` saying how to install it."""
    found = shutil.which(name, path=path)
    if found is None:
        raise ToolMissing(f"{name} was not found on PATH; {hint}")
    return Path(found)
