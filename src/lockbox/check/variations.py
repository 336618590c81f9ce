"""The varied world ``lockbox check`` rebuilds in.

A rebuild proves little if it runs in the same conditions as the first build. Like the
reproducible-builds project's ``reprotest``, ``lockbox check`` changes what may differ
between two machines or two users, and rebuilds there. Each variation is on by default
and can be switched off; one the machine cannot make is skipped with the reason why.

=============  =========================================================================
``build-path`` the project is copied to a new directory; the scratch store is elsewhere
``time``       a clock 397 days ahead for build commands (libfaketime), ``SOURCE_DATE_EPOCH``
               unchanged
``umask``      ``0002`` (``0022`` if the caller's is already ``0002``)
``tz``         ``TZ=GMT+12`` (``GMT-14`` if the caller's is already that)
``locale``     ``LANG``/``LC_ALL``/``LANGUAGE`` French (Switzerland)
``hostname``   a new UTS namespace with another host name
``user``       another user id (user namespace), ``USER``/``LOGNAME``, an empty ``HOME``
``env``        extra variables, and every variable in reverse order
``cpus``       one CPU (the scheduler affinity) instead of all
``file-order`` directory listings shuffled (``disorderfs``) where the rebuild writes
=============  =========================================================================

lockbox fixes some of these on its own (the time zone and locale of builds, the host name
inside its sandboxes, the build environment's variables): varying them checks that the
fixing holds. The clock cannot be fixed from outside, so the time variation is passed into every
build command lockbox starts (build backends, compilers, compileall, the checks), through
:data:`lockbox.tools.sandbox.CHECK_ENV`; not into lockbox itself, nor into uv, which checks TLS
certificates that a clock a year ahead would find expired.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.errors import ToolFailed, VariationError
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox

VARIATIONS = (
    "build-path",
    "time",
    "umask",
    "tz",
    "locale",
    "hostname",
    "user",
    "env",
    "cpus",
    "file-order",
)
"""Every variation, in the order they are applied and reported."""

CLOCK_OFFSET = "+397d"
"""How far ahead the varied clock is: a different year, month and day."""
HOSTNAME = "lockbox-varied"
UID = 4321
"""The user id (and group id) of the varied user inside its user namespace."""
USER = "lockbox-varied"
EXTRA_ENV = {"LOCKBOX_VARIED": "1", "CFLAGS_UNUSED": "-O0", "XDG_RUNTIME_DIR": "/nonexistent"}
"""Variables added to the rebuild's environment (none of them may change a build)."""
FAKETIME_LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)


def parse_variations(skipped: Iterable[str]) -> tuple[str, ...]:
    """The variations to apply: all but ``skipped`` (names, or comma-separated lists)."""
    names = {name.strip() for item in skipped for name in item.split(",") if name.strip()}
    unknown = sorted(names - set(VARIATIONS))
    if unknown:
        raise VariationError(
            f"no variation named {', '.join(unknown)}; the variations are {', '.join(VARIATIONS)}"
        )
    return tuple(name for name in VARIATIONS if name not in names)


@dataclass
class World:
    """How to start a process in the varied world, and what was varied."""

    directory: Path
    """Where the rebuild writes: a ``disorderfs`` view of :attr:`backing` with ``file-order``."""
    backing: Path
    """The real directory behind :attr:`directory`: what stays after the rebuild."""
    env: dict[str, str]
    """The whole environment, in the order it is passed on."""
    prefix: list[str] = field(default_factory=list)
    """Run the command through this (bubblewrap making namespaces), if not empty."""
    umask: int | None = None
    cpus: set[int] | None = None
    applied: dict[str, str] = field(default_factory=dict)
    """Each variation applied → what it changed, for the report."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Each variation asked for but not applied → why."""

    def argv(self, argv: list[str]) -> list[str]:
        return [*self.prefix, *argv]

    def preexec(self) -> None:
        """Run in the child between fork and exec: the process-wide variations."""
        if self.umask is not None:
            os.umask(self.umask)
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)


@contextlib.contextmanager
def varied_world(
    enabled: Iterable[str], work: Path, tools: Toolbox, progress: Progress = silent
) -> Iterator[World]:
    """The world for a rebuild writing under ``work`` (made here), the caller's environment
    being the toolbox's (whose bubblewrap makes the namespaces). A ``disorderfs`` mount is undone on exit; what was written stays in
    :attr:`World.backing`."""
    enabled = set(enabled)
    backing = work / "tree"
    backing.mkdir(parents=True)
    environ = tools.environment
    env = dict(environ)
    world = World(directory=backing, backing=backing, env=env)

    if "build-path" in enabled:
        world.applied["build-path"] = f"rebuilt under {backing}, the project copied there"
    if "time" in enabled:
        _vary_clock(world, env)
    if "umask" in enabled:
        current = os.umask(0o022)
        os.umask(current)
        world.umask = 0o022 if current == 0o002 else 0o002
        world.applied["umask"] = f"umask {world.umask:04o} (was {current:04o})"
    if "tz" in enabled:
        tz = "GMT-14" if environ.get("TZ") == "GMT+12" else "GMT+12"
        env["TZ"] = tz
        world.applied["tz"] = f"TZ={tz}"
    if "locale" in enabled:
        env.update({"LANG": "fr_CH.UTF-8", "LC_ALL": "fr_CH.UTF-8", "LANGUAGE": "fr_CH:fr"})
        world.applied["locale"] = "LANG=LC_ALL=fr_CH.UTF-8"
    namespaces: list[str] = []
    if "hostname" in enabled:
        namespaces += ["--unshare-uts", "--hostname", HOSTNAME]
        world.applied["hostname"] = f"host name {HOSTNAME}"
    if "user" in enabled:
        home = work / "home"
        home.mkdir()
        env.update({"HOME": str(home), "USER": USER, "LOGNAME": USER})
        namespaces += ["--unshare-user", "--uid", str(UID), "--gid", str(UID)]
        world.applied["user"] = f"uid {UID}, USER={USER}, HOME={home}"
    if namespaces:
        world.prefix = _bubblewrap(namespaces, world, tools.sandbox, progress)
    if "env" in enabled:
        env.update(EXTRA_ENV)
        world.applied["env"] = (
            f"{len(EXTRA_ENV)} extra variables ({', '.join(EXTRA_ENV)}), order reversed"
        )
    if "cpus" in enabled:
        _vary_cpus(world)
    # Reversed, after every addition: the order the rebuild sees differs from the caller's.
    world.env = dict(reversed(env.items())) if "env" in enabled else env

    with contextlib.ExitStack() as stack:
        if "file-order" in enabled:
            stack.enter_context(_vary_file_order(work, world, progress))
        for name, reason in world.skipped.items():
            progress.warning(f"variation {name} skipped: {reason}")
        yield world


def _vary_clock(world: World, env: dict[str, str]) -> None:
    from lockbox.environment import CHECK_ENV

    library = next((path for path in FAKETIME_LIBRARIES if os.path.exists(path)), None)
    if library is None:
        world.skipped["time"] = "libfaketime is not installed (Debian: apt-get install faketime)"
        return
    # Not lockbox's own process, nor uv: only what they start to build.
    clock = {"LD_PRELOAD": library, "FAKETIME": CLOCK_OFFSET}
    env[CHECK_ENV] = json.dumps(clock, sort_keys=True)
    world.applied["time"] = (
        f"clock {CLOCK_OFFSET} (libfaketime) for every build command, SOURCE_DATE_EPOCH kept"
    )


def _vary_cpus(world: World) -> None:
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        world.skipped["cpus"] = "this machine gives lockbox one CPU only"
        return
    world.cpus = {min(available)}
    world.applied["cpus"] = f"1 CPU instead of {len(available)}"


@contextlib.contextmanager
def _vary_file_order(work: Path, world: World, progress: Progress) -> Iterator[None]:
    """While the context lasts, :attr:`World.directory` is a disorderfs view of the backing
    tree, or the variation is skipped, saying why."""
    reason = _disorderfs_missing()
    if reason:
        world.skipped["file-order"] = reason
        yield
        return
    view = work / "view"
    view.mkdir()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_disorderfs(world.backing, view, progress))
        except ToolFailed as error:
            world.skipped["file-order"] = (
                f"disorderfs could not mount: {error.stderr.strip() or error}"
            )
        else:
            world.directory = view
            world.applied["file-order"] = "directory entries shuffled (disorderfs)"
        yield


def _bubblewrap(
    namespaces: list[str], world: World, sandbox: Sandbox, progress: Progress
) -> list[str]:
    from lockbox.tools.run import run

    prefix = [
        os.fspath(sandbox.executable),
        "--dev-bind",
        "/",
        "/",
        *namespaces,
        "--die-with-parent",
        "--",
    ]
    probe = run([*prefix, "true"], check=False, progress=progress)
    if probe.returncode != 0:
        for name in ("hostname", "user"):
            if name in world.applied:
                del world.applied[name]
                world.skipped[name] = (
                    f"bubblewrap cannot make the namespace here: {probe.stderr.strip()}"
                )
        return []
    return prefix


def _disorderfs_missing() -> str:
    from shutil import which

    if which("disorderfs") is None:
        return "disorderfs is not installed (Debian: apt-get install disorderfs)"
    if not os.path.exists("/dev/fuse"):
        return "this machine has no /dev/fuse for disorderfs"
    if which("fusermount") is None and which("fusermount3") is None:
        return "fusermount is not installed (Debian: apt-get install fuse3)"
    return ""


@contextlib.contextmanager
def _disorderfs(backing: Path, view: Path, progress: Progress) -> Iterator[None]:
    from shutil import which

    from lockbox.tools.run import run

    # Shuffled, not reversed: a fixed reversal could agree with some other fixed order.
    # multi-user: the varied user (another uid) may use the mount too.
    run(
        [
            "disorderfs",
            "--shuffle-dirents=yes",
            "--reverse-dirents=no",
            "--multi-user=yes",
            "-q",
            os.fspath(backing),
            os.fspath(view),
        ],
        progress=progress,
    )
    try:
        yield
    finally:
        unmount = which("fusermount3") or which("fusermount") or "fusermount"
        run([unmount, "-u", "-z", os.fspath(view)], check=False, progress=progress)


def scratch_name() -> str:
    """A new directory name, different on every rebuild."""
    import uuid

    return uuid.uuid4().hex[:12]
