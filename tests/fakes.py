"""Fakes of the tools the phases are given, for unit tests of the phases.

Each fake has its tool's interface (:mod:`lockbox.tools`) and records exactly what it was
asked; what it does instead of the tool is small and real (files written, commands run on
the host), so a phase that misuses the answer fails as it would with the tool.
:class:`FakeToolbox` hands out only the fakes it is given; asking it for any other tool is
an error, which is how a test says "this must run without that tool".
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.version import Version

from lockbox.environment import Environment
from lockbox.inputs.interpreters import Interpreter
from lockbox.progress import Progress, silent
from lockbox.tools.toolbox import Toolbox


class Touched(Exception):
    """A phase used a tool (or an input) it must do without."""


class FakeToolbox(Toolbox):
    """A :class:`~lockbox.tools.toolbox.Toolbox` that finds nothing: the tools given by
    keyword are handed out, asking for any other raises :class:`Touched`."""

    def __init__(
        self, environment: Environment | None = None, progress: Progress = silent, **given: Any
    ) -> None:
        super().__init__(environment or Environment(), progress, **given)
        self.given = dict(given)

    def _get(self, name: str, find: Callable[[], Any]) -> Any:
        if name not in self.given:
            raise Touched(f"the phase asked for {name}")
        return self.given[name]


@dataclass
class FakePatchelf:
    """patchelf that rewrites in place as the real one does: it appends the run path to
    each file, so a file that shares its inode with another shows it there too."""

    version: str = "0.18.0"
    executable: Path = Path("/fake/bin/patchelf")
    calls: list[tuple[list[Path], str]] = field(default_factory=list)
    """Each ``set_runpath`` call: the files, in order, and the run path."""

    def set_runpath(self, files: Sequence[Path], runpath: str, progress: Progress = silent) -> None:
        self.calls.append((list(files), runpath))
        for file in files:
            with open(file, "ab") as stream:
                stream.write(f"\0runpath={runpath}".encode())


@dataclass
class FakeGit:
    """git whose every repository holds ``files`` (relative path → text): a checkout
    writes them and a ``.git`` directory into the target and answers ``commit`` (by
    default the revision asked for, as a full commit does)."""

    files: Mapping[str, str]
    commit: str | None = None
    executable: Path = Path("/fake/bin/git")
    calls: list[tuple[str, str, Path]] = field(default_factory=list)
    """Each checkout: repository, revision, target."""

    def checkout(self, repository: str, rev: str, target: Path, progress: Progress = silent) -> str:
        self.calls.append((repository, rev, target))
        target.mkdir(parents=True, exist_ok=True)
        if any(target.iterdir()):
            from lockbox.deps.sources import SourceError

            raise SourceError(f"cannot check out {repository} at {rev}: {target} is not empty")
        (target / ".git").mkdir()
        (target / ".git" / "HEAD").write_text(f"{rev}\n")
        for relative, text in self.files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return self.commit or rev

    def revision(self, directory: Path) -> str | None:
        head = directory / ".git" / "HEAD"
        return head.read_text().strip() if head.is_file() else None


@dataclass(frozen=True)
class SandboxCall:
    """One command line asked of :class:`FakeSandbox`, as it was asked."""

    kind: str
    """``offline`` or ``unprivileged``."""
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    hidden: tuple[Path, ...] = ()
    read_only: tuple[tuple[Path, Path], ...] = ()
    """Each read-only mount as ``(host, inside)``."""
    writable: tuple[tuple[Path, Path], ...] = ()
    scratch: tuple[Path, ...] = ()


def on_the_host(call: SandboxCall) -> list[str]:
    """What ``call`` asks for, run on the host without namespaces: in its ``cwd``, with
    exactly its ``env``, each path under a mount's inside replaced by its host path (in
    the words of the command and the values of the environment)."""
    mounts = sorted(
        (
            (os.fspath(inside), os.fspath(host))
            for host, inside in (*call.writable, *call.read_only)
        ),
        key=lambda mount: len(mount[0]),
        reverse=True,
    )

    def host(word: str) -> str:
        for inside, outside in mounts:
            if word == inside or word.startswith(inside + "/"):
                return outside + word[len(inside) :]
        return word

    def host_list(value: str) -> str:
        return ":".join(map(host, value.split(":")))

    env = [f"{key}={host_list(value)}" for key, value in sorted(call.env.items())]
    chdir = 'cd "$1" && shift && exec "$@"'
    return ["/usr/bin/env", "-i", *env, "/bin/sh", "-c", chdir, "sh", host(os.fspath(call.cwd))] + [
        host(word) for word in call.argv
    ]


class FakeSandbox:
    """The offline sandboxes of :class:`lockbox.tools.sandbox.Sandbox`: every command line
    asked for is recorded in :attr:`calls` and answered by ``answer`` (by default
    :func:`on_the_host`)."""

    def __init__(
        self,
        answer: Callable[[SandboxCall], list[str]] = on_the_host,
        varied: Mapping[str, str] | None = None,
    ) -> None:
        self.answer = answer
        self.varied = dict(varied or {})
        self.calls: list[SandboxCall] = []
        self.checked = 0
        """How many times the phase checked that the sandboxes can be made."""

    def check_offline(self, progress: Progress = silent) -> None:
        self.checked += 1

    def offline(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path,
        env: Mapping[str, str],
        writable: Sequence[tuple[Path, Path]] = (),
        hidden: Sequence[Path] = (),
        read_only: Sequence[Path | tuple[Path, Path]] = (),
    ) -> list[str]:
        return self._asked(
            SandboxCall(
                "offline",
                tuple(os.fspath(arg) for arg in argv),
                cwd,
                dict(env),
                tuple(hidden),
                _pairs(read_only),
                tuple(writable),
            ),
            # What the real one does: lockbox check's variables over the phase's own.
            {**env, **self.varied},
        )

    def unprivileged(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path,
        env: Mapping[str, str],
        hidden: Sequence[Path] = (),
        read_only: Sequence[Path | tuple[Path, Path]] = (),
        scratch: Sequence[Path] = (),
    ) -> list[str]:
        return self._asked(
            SandboxCall(
                "unprivileged",
                tuple(os.fspath(arg) for arg in argv),
                cwd,
                dict(env),
                tuple(hidden),
                _pairs(read_only),
                scratch=tuple(scratch),
            ),
            dict(env),
        )

    def _asked(self, call: SandboxCall, env: Mapping[str, str]) -> list[str]:
        """Record ``call`` as the phase asked it; answer it as run with ``env``."""
        self.calls.append(call)
        return self.answer(replace(call, env=env))


def _pairs(mounts: Sequence[Path | tuple[Path, Path]]) -> tuple[tuple[Path, Path], ...]:
    return tuple(mount if isinstance(mount, tuple) else (mount, mount) for mount in mounts)


def running_interpreter(**changes: Any) -> Interpreter:
    """The interpreter running the tests, as :func:`lockbox.inputs.interpreters.probe`
    would describe its base installation (without starting it), with ``changes``."""
    executable = Path(os.path.realpath(sys.executable))
    fields: dict[str, Any] = {
        "executable": executable,
        "version": Version(platform.python_version()),
        "markers": dict(default_environment()),
        "sysconfig": {},
        "paths": {},
        "prefix": executable.parent.parent,
    }
    return Interpreter(**{**fields, **changes})


def fake_installation(
    prefix: Path, started: Path, stdlib: Mapping[str, str | bytes]
) -> Interpreter:
    """A Python installation at ``prefix`` with the standard library ``stdlib`` (relative
    path → text or bytes) and an executable that writes its arguments (``argv``, one a
    line) and environment (``env``) into ``started``, then runs the interpreter running
    the tests with those arguments (a standard library this small could not start one)."""
    short = f"python{sys.version_info.major}.{sys.version_info.minor}"
    directory = prefix / "lib" / short
    for relative, content in {"os.py": "SEP = '/'\n", **stdlib}.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    started.mkdir(parents=True, exist_ok=True)
    executable = prefix / "bin" / short
    executable.parent.mkdir(parents=True)
    executable.write_text(
        "#!/bin/sh\n"
        f"env > {started}/env\n"
        f"printf '%s\\n' \"$@\" > {started}/argv\n"
        f'exec {os.path.realpath(sys.executable)} "$@"\n'
    )
    executable.chmod(0o755)
    return running_interpreter(
        executable=executable, paths={"stdlib": str(directory)}, prefix=prefix
    )
