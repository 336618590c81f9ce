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
namespace, and nothing of the store's records; and no network: the dependency phase
fetches everything before (:mod:`lockbox.deps.fetch`), running no third-party code while it
does. Only ``lockbox lock-build``'s unpinned builds, which must resolve build
dependencies, keep the host's network.

The assembly phase runs its commands in two other sandboxes, both offline: new network
(loopback only), PID, IPC and UTS namespaces, a new session, a clean environment, and
not the host's file system but a new root holding only what the commands need:

- the system's programs, libraries and configuration (:data:`SYSTEM_PATHS`: ``/usr``,
  ``/bin``, ``/sbin``, the ``/lib`` directories, ``/etc``), read-only; the merged-``/usr``
  links as links;
- a ``/proc`` of the new PID namespace (no host process is visible, none can be
  signalled, no host root is reachable through ``/proc/<pid>/root``), a minimal ``/dev``,
  and empty ``/tmp``, ``/var/tmp`` and ``/dev/shm``;
- what the caller mounts: the application at its final path, the interpreter's entry,
  the recipe's library directories. Everything else, the rest of the store included,
  ``/home``, ``/root``, ``/run``, ``/var`` and the host's ``/tmp`` with every Unix socket
  in them, is simply not there; the paths of ``hidden`` are empty even if they are under
  a system path.

:meth:`Sandbox.offline` runs lockbox's own commands there (bytecode compilation): as the
caller, every capability dropped, writing only into the directories it is given.
:meth:`Sandbox.unprivileged` runs what the recipe asks for (``[verify]`` imports and
commands, which run the dependencies' code): nothing is writable but its empty scratch
directories, and it runs as :data:`VERIFY_UID` (``nobody``) with no capabilities at all
and ``no_new_privs``. Run by root, bubblewrap sets the namespaces and mounts up
privileged, then ``setpriv`` (util-linux) changes to that user: a user namespace would
map its user to root, which owns the files, so only a real other user makes files of
mode 0600 and the like unreadable. Run by another user, a user namespace maps
:data:`VERIFY_UID` to that user. Either way it cannot remount, mount or write anything
that outlives it, and when its command ends every process it started ends with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockbox.errors import SandboxUnavailable, ToolFailed
from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

SOURCE_DATE_EPOCH = "315532800"
"""The time every phase tells builds it is: 1980-01-01, the earliest a zip file (a wheel) holds."""

REPRODUCIBLE_ENV: Mapping[str, str] = {
    "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    "PYTHONHASHSEED": "0",
    "TZ": "UTC",
    "LC_ALL": "C.UTF-8",
}
"""What every command lockbox builds with is told, whatever the caller's environment says."""

BUILD_ROOT = Path("/tmp/lockbox-build")
"""Where a sandboxed build sees the store's working directory."""

HOSTNAME = "lockbox"
"""The host name every sandboxed command sees: builds that record it record this."""

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""The host paths the offline sandboxes show, read-only: where the system's programs,
libraries and configuration are. Links (a merged ``/usr``) are shown as the same links."""

VERIFY_UID = 65534
"""The user (and group) verification runs as: ``nobody``, who owns nothing."""

_SCRATCH = ("/tmp", "/var/tmp")
"""Empty, writable by anyone, gone when the command ends."""


@functools.cache
def _setpriv() -> Path:
    return which(
        "setpriv",
        "install util-linux (Debian: apt-get install util-linux); lockbox "
        "changes to an unprivileged user with it to run verification",
    )


def _setenv(variables: Mapping[str, str]) -> list[str]:
    return [word for key, value in sorted(variables.items()) for word in ("--setenv", key, value)]


@dataclass(frozen=True)
class Sandbox:
    """bubblewrap, checked once."""

    executable: Path
    varied: Mapping[str, str] = field(default_factory=dict)
    """Variables every build command gets on purpose, over lockbox's fixed environment:
    ``lockbox check``'s varied clock (:data:`lockbox.environment.CHECK_ENV`); none in a
    normal build."""

    @classmethod
    def find(
        cls,
        progress: Progress = silent,
        path: str | None = None,
        *,
        varied: Mapping[str, str] | None = None,
    ) -> Sandbox:
        executable = which(
            "bwrap",
            "install bubblewrap (Debian: apt-get install bubblewrap); "
            "lockbox runs builds in it so that build paths do not depend on the machine",
            path,
        )
        try:
            run([executable, "--dev-bind", "/", "/", "--", "true"], progress=progress)
        except ToolFailed as error:
            raise ToolFailed(
                error.argv,
                error.returncode,
                error.stdout,
                error.stderr + "\nbubblewrap cannot create namespaces here; "
                "enable unprivileged user namespaces or run as root",
            ) from None
        return cls(executable, dict(varied or {}))

    def check_offline(self, progress: Progress = silent) -> None:
        """Fail clearly unless both offline sandboxes can be made here."""
        for command in (
            self.offline(["true"], cwd=Path("/"), env={}),
            self.unprivileged(["true"], cwd=Path("/"), env={}),
        ):
            try:
                run(command, progress=progress)
            except ToolFailed as error:
                raise SandboxUnavailable(
                    "cannot make the offline sandbox (new network and PID namespaces, "
                    f"{'setpriv to' if os.getuid() == 0 else 'a user namespace as'} uid "
                    f"{VERIFY_UID}): {error.stderr.strip() or 'bubblewrap failed'}; run as "
                    "root with util-linux's setpriv installed, or enable unprivileged user "
                    "namespaces (sysctl kernel.unprivileged_userns_clone=1)"
                ) from None

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
        """``argv``, one of lockbox's own commands, run offline in the system's paths
        (module docstring) as the caller without capabilities: each of ``hidden`` an empty
        tmpfs, then each of ``read_only`` (a path, or ``(host, inside)``) mounted
        read-only, then each ``(host, inside)`` of ``writable`` read-write, in ``cwd``,
        with exactly ``env``."""
        command = self._offline(hidden, read_only, [inside for _, inside in writable])
        command += ["--cap-drop", "ALL"]
        for host, inside in writable:
            command += ["--bind", os.fspath(host), os.fspath(inside)]
        command += _setenv({**env, **self.varied})
        command += ["--chdir", os.fspath(cwd), "--"]
        return command + [os.fspath(arg) for arg in argv]

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
        """``argv``, which runs code lockbox does not vouch for, run offline in the system's
        paths (module docstring) as :data:`VERIFY_UID` with no capabilities: each of
        ``hidden`` an empty tmpfs, then each of ``read_only`` mounted read-only; nothing is
        writable but ``/tmp``, ``/var/tmp`` and each of ``scratch`` (made inside them),
        empty tmpfs directories; in ``cwd``, with exactly ``env``."""
        command = self._offline(hidden, read_only, scratch)
        for path in scratch:
            command += ["--perms", "1777", "--tmpfs", os.fspath(path)]
        # Not the variables of ``lockbox check`` (:attr:`varied`): what runs here writes
        # nothing into an output, and another user could not share libfaketime's clock.
        command += _setenv(env)
        command += ["--chdir", os.fspath(cwd)]
        uid = str(VERIFY_UID)
        if os.getuid() != 0:
            command += ["--unshare-user", "--uid", uid, "--gid", uid, "--cap-drop", "ALL", "--"]
            return command + [os.fspath(arg) for arg in argv]
        # bubblewrap keeps only what setpriv needs to change to the user, and setpriv
        # gives up even that: no capability is left in any set, not even the bounding one.
        setpriv = _setpriv()
        if not any(setpriv.is_relative_to(path) for path in SYSTEM_PATHS):
            command += ["--ro-bind", os.fspath(setpriv), os.fspath(setpriv)]
        command += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
            "--",
            os.fspath(setpriv),
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        return command + [os.fspath(arg) for arg in argv]

    def _offline(
        self,
        hidden: Sequence[Path],
        read_only: Sequence[Path | tuple[Path, Path]],
        later: Sequence[Path],
    ) -> list[str]:
        """The namespaces and mounts both offline sandboxes start with; the directories
        that mounts (these, and the ``later`` ones the caller adds) are made in are made
        searchable by anyone first (bubblewrap would make them root's only)."""
        command = [
            os.fspath(self.executable),
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            HOSTNAME,
            "--unshare-pid",
            "--new-session",
            "--die-with-parent",
            "--clearenv",
        ]
        for system in SYSTEM_PATHS:
            if os.path.islink(system):
                command += ["--symlink", os.readlink(system), system]
            elif os.path.isdir(system):
                command += ["--ro-bind", system, system]
        command += ["--dev", "/dev", "--proc", "/proc"]
        for scratch in _SCRATCH:
            command += ["--perms", "1777", "--tmpfs", scratch]
        pairs = [mount if isinstance(mount, tuple) else (mount, mount) for mount in read_only]
        # What is inside these exists already: a system path, or a tree mounted whole.
        there = [*map(Path, SYSTEM_PATHS), *(inside for _, inside in pairs)]
        made: set[Path] = {Path("/"), *map(Path, _SCRATCH)}

        def parents(target: Path) -> list[str]:
            words: list[str] = []
            for parent in reversed(target.parents):
                if parent in made or any(
                    parent.is_relative_to(mount) for mount in there if mount != target
                ):
                    continue
                made.add(parent)
                words += ["--perms", "0755", "--dir", os.fspath(parent)]
            return words

        for path in hidden:
            command += parents(path) + ["--tmpfs", os.fspath(path)]
            made.add(path)
        for host, inside in pairs:
            command += parents(inside) + ["--ro-bind", os.fspath(host), os.fspath(inside)]
            made.add(inside)
        for path in later:
            command += parents(path)
            made.add(path)
        return command

    def wrap(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        root: Path,
        cwd: Path,
        keep: Sequence[Path],
        binds: Sequence[tuple[Path, Path]] = (),
        read_only: Sequence[Path | tuple[Path, Path]] = (),
        network: bool = True,
        system: Path | None = None,
    ) -> list[str]:
        """``argv`` run with ``root`` (the store's working directory) mounted at
        :data:`BUILD_ROOT`, of which only the paths of ``keep`` (the build's staging area,
        the uv cache, fetched sources) are visible, each ``(host, inside)`` of ``binds``
        mounted over a directory inside it, each of ``read_only`` (a path, or ``(host,
        inside)``) mounted read-only, in ``cwd``, with the host name :data:`HOSTNAME`; with
        ``network=False`` in a new network namespace (loopback only).

        The command is third-party build code. It sees the host read-only, with fresh
        ``/tmp``, ``/var/tmp``, ``/run``, ``/dev`` and ``/proc``; it has no capabilities
        (it cannot remount, load modules or change owners) and its own PID namespace (it
        cannot see, signal or trace the host's processes, nor reach their file systems
        through ``/proc``). Of the store it sees its entries read-only; the database, keys,
        records, roots and other builds' staging areas are hidden, at their own path and
        under :data:`BUILD_ROOT`. It can read what root can read where not hidden; it keeps
        the host's network only when ``network`` (lock-build's unpinned builds).

        With ``system`` (a build root, :mod:`lockbox.deps.buildroot`) it sees not the host's
        file system but that root's system directories, read-only, and of the host only
        what is mounted: ``read_only`` (the interpreter, uv, the project), the store's
        directory and the build root."""
        command = [os.fspath(self.executable)]
        if system is None:
            command += ["--ro-bind", "/", "/"]
        else:
            from lockbox.deps.buildroot import SYSTEM

            for part in SYSTEM:
                path = system / part
                if path.is_symlink():
                    command += ["--symlink", os.readlink(path), f"/{part}"]
                elif path.is_dir():
                    command += ["--ro-bind", os.fspath(path), f"/{part}"]
        command += [
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            HOSTNAME,
            *([] if network else ["--unshare-net"]),
            "--cap-drop",
            "ALL",
            "--new-session",
            "--die-with-parent",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            *(_private_run() if system is None else ["--tmpfs", "/run"]),
            # The store's entries, even where a fresh /tmp hid them; its records hidden.
            "--ro-bind",
            os.fspath(root.parent),
            os.fspath(root.parent),
            "--tmpfs",
            os.fspath(root),
            "--dir",
            os.fspath(BUILD_ROOT),
            "--bind",
            os.fspath(root),
            os.fspath(BUILD_ROOT),
        ]
        for path in _hidden_beside(root, keep):
            inside = BUILD_ROOT / path.relative_to(root)
            command += (
                ["--tmpfs", os.fspath(inside)]
                if path.is_dir()
                else ["--ro-bind", "/dev/null", os.fspath(inside)]
            )
        for host, inside in binds:
            (root / inside.relative_to(BUILD_ROOT)).mkdir(parents=True, exist_ok=True)
            command += ["--bind", os.fspath(host), os.fspath(inside)]
        for mount in read_only:
            host, inside = mount if isinstance(mount, tuple) else (mount, mount)
            command += ["--ro-bind", os.fspath(host), os.fspath(inside)]
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
