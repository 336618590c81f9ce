"""Running a command with the build paths at fixed places, with bubblewrap.

Compilers, build backends and ``getcwd()`` write the paths they build in into their output.
If those paths depend on where the store and its uv cache are, so do the bytes of the
layer. The sandbox mounts the store's working directory (``STORE/.lockbox``, which holds the
staging areas and the uv cache) at :data:`BUILD_ROOT` (``/tmp/lockbox-build``, an empty
directory on the host that only serves as the mount point), so every build sees the same
paths wherever the store really is; concurrent builds each see their own. Staging area and
cache being one mount, uv can hardlink from its cache instead of copying. The host name is
always :data:`HOSTNAME` (a new UTS namespace): a build that records it records the same
name on every machine. The build code is third-party and treated as hostile
(docs/security.md): it sees the host read-only, without capabilities, in its own PID
namespace, and nothing of the store's records; the network is the host's, since the
dependency phase downloads.

The assembly phase runs its commands in :meth:`Sandbox.offline` instead: a new network
namespace with loopback only, the host's file system read-only, a clean environment, and
the application being assembled mounted at its final path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import SandboxUnavailable, ToolFailed
from lockbox.progress import Progress, silent
from lockbox.run import run, which

SOURCE_DATE_EPOCH = "315532800"
"""The time every phase tells builds it is: 1980-01-01, the earliest a zip file (a wheel) holds."""

REPRODUCIBLE_ENV: Mapping[str, str] = {
    "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C.UTF-8",
}
"""What every command lockbox builds with is told, whatever the caller's environment says."""

BUILD_ROOT = Path("/tmp/lockbox-build")
"""Where a sandboxed build sees the store's working directory."""

HOSTNAME = "lockbox"
"""The host name every sandboxed command sees: builds that record it record this."""

CHECK_ENV = "LOCKBOX_CHECK_ENV"
"""Set by ``lockbox check`` for its rebuild (:mod:`lockbox.variations`): a JSON object of
variables that every build command gets on purpose, over lockbox's fixed environment (the
varied clock, which no environment of lockbox's can fix): the offline sandbox's commands,
the interpreter entry's compilation and every build backend of the dependency phase."""


def check_variables() -> dict[str, str]:
    """The variables ``lockbox check`` passes into build commands; none in a normal build."""
    text = os.environ.get(CHECK_ENV)
    if not text:
        return {}
    import json

    return {str(key): str(value) for key, value in json.loads(text).items()}


def _setenv(variables: Mapping[str, str]) -> list[str]:
    return [word for key, value in sorted(variables.items()) for word in ("--setenv", key, value)]


@dataclass(frozen=True)
class Sandbox:
    """bubblewrap, checked once."""

    executable: Path

    @classmethod
    def find(cls, progress: Progress = silent) -> Sandbox:
        executable = which(
            "bwrap", "install bubblewrap (Debian: apt-get install bubblewrap); "
            "lockbox runs builds in it so that build paths do not depend on the machine",
        )
        try:
            run([executable, "--dev-bind", "/", "/", "--", "true"], progress=progress)
        except ToolFailed as error:
            raise ToolFailed(error.argv, error.returncode, error.stdout,
                             error.stderr + "\nbubblewrap cannot create namespaces here; "
                             "enable unprivileged user namespaces or run as root") from None
        return cls(executable)

    def check_offline(self, progress: Progress = silent) -> None:
        """Fail clearly unless a sandbox without network can be made here."""
        try:
            run([self.executable, "--ro-bind", "/", "/", "--unshare-net", "--", "true"],
                progress=progress)
        except ToolFailed as error:
            raise SandboxUnavailable(
                "cannot make a network namespace for the offline phase "
                f"({error.stderr.strip() or 'bubblewrap failed'}); run as root or enable "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
            ) from None

    def offline(self, argv: Sequence[str | os.PathLike[str]], *, cwd: Path,
                env: Mapping[str, str], writable: Sequence[tuple[Path, Path]] = (),
                hidden: Sequence[Path] = (), read_only: Sequence[Path] = ()) -> list[str]:
        """``argv`` run without network: a new network namespace (loopback only), the host
        read-only, ``/tmp`` and each of ``hidden`` an empty tmpfs, then each of
        ``read_only`` shown again and each ``(host, inside)`` of ``writable`` mounted
        read-write, in ``cwd``, with exactly ``env``."""
        command = [
            os.fspath(self.executable), "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-net", "--unshare-ipc", "--unshare-uts", "--hostname", HOSTNAME,
            "--die-with-parent", "--clearenv",
        ]
        for path in hidden:
            command += ["--tmpfs", os.fspath(path)]
        for path in read_only:
            command += ["--ro-bind", os.fspath(path), os.fspath(path)]
        for host, inside in writable:
            command += ["--bind", os.fspath(host), os.fspath(inside)]
        command += _setenv({**env, **check_variables()})
        command += ["--chdir", os.fspath(cwd), "--"]
        return command + [os.fspath(arg) for arg in argv]

    def wrap(self, argv: Sequence[str | os.PathLike[str]], *, root: Path, cwd: Path,
             keep: Sequence[Path], binds: Sequence[tuple[Path, Path]] = (),
             read_only: Sequence[Path] = ()) -> list[str]:
        """``argv`` run with ``root`` (the store's working directory) mounted at
        :data:`BUILD_ROOT`, of which only the paths of ``keep`` (the build's staging area,
        the uv cache, fetched sources) are visible, each ``(host, inside)`` of ``binds``
        mounted over a directory inside it, in ``cwd``, with the host name :data:`HOSTNAME`.

        The command is third-party build code. It sees the host read-only, with fresh
        ``/tmp``, ``/var/tmp``, ``/run``, ``/dev`` and ``/proc``; it has no capabilities
        (it cannot remount, load modules or change owners) and its own PID namespace (it
        cannot see, signal or trace the host's processes, nor reach their file systems
        through ``/proc``). Of the store it sees its entries read-only; the database, keys,
        records, roots and other builds' staging areas are hidden, at their own path and
        under :data:`BUILD_ROOT`. It keeps the host's network (the dependency phase
        downloads) and can read what root can read where not hidden."""
        command = [
            os.fspath(self.executable), "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", HOSTNAME, "--cap-drop", "ALL", "--new-session", "--die-with-parent",
            "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", *_private_run(),
            # The store's entries, even where a fresh /tmp hid them; its records hidden.
            "--ro-bind", os.fspath(root.parent), os.fspath(root.parent),
            "--tmpfs", os.fspath(root),
            "--dir", os.fspath(BUILD_ROOT),
            "--bind", os.fspath(root), os.fspath(BUILD_ROOT),
        ]
        for path in _hidden_beside(root, keep):
            inside = BUILD_ROOT / path.relative_to(root)
            command += (["--tmpfs", os.fspath(inside)] if path.is_dir()
                        else ["--ro-bind", "/dev/null", os.fspath(inside)])
        for host, inside in binds:
            (root / inside.relative_to(BUILD_ROOT)).mkdir(parents=True, exist_ok=True)
            command += ["--bind", os.fspath(host), os.fspath(inside)]
        for path in read_only:
            command += ["--ro-bind", os.fspath(path), os.fspath(path)]
        command += ["--chdir", os.fspath(cwd), "--"]
        return command + [os.fspath(arg) for arg in argv]


def _private_run() -> list[str]:
    """A fresh ``/run`` (the host's daemons listen on sockets there), with the directory
    that ``/etc/resolv.conf`` leads into shown again: the build resolves names."""
    arguments = ["--tmpfs", "/run"]
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    if resolv.is_relative_to("/run") and resolv.parent.is_dir():
        arguments += ["--ro-bind", os.fspath(resolv.parent), os.fspath(resolv.parent)]
    return arguments


def _hidden_beside(root: Path, keep: Sequence[Path]) -> list[Path]:
    """Every child of ``root``, and of each directory on the way to a path of ``keep``,
    that is not on the way to one: what hides all of ``root`` but ``keep``. Symbolic
    links are left as they are (a mount would follow them)."""
    ways: set[Path] = set()
    for path in keep:
        relative = path.relative_to(root)
        ways.update(root / Path(*relative.parts[:end]) for end in range(1, len(relative.parts) + 1))
    hidden: list[Path] = []
    for directory in sorted({way.parent for way in ways} | {root}):
        with os.scandir(directory) as scan:
            for child in sorted(scan, key=lambda child: child.name):
                path = Path(child.path)
                if path not in ways and not child.is_symlink():
                    hidden.append(path)
    return hidden
