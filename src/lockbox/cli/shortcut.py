"""Repeated builds answered from a record of the last lookup.

A build whose dependency layer and application are both in the store still reads the
recipe, ``pyproject.toml``, ``uv.lock`` and the project's sources, looks for the interpreter
and asks it what it is, and hashes all of that (about 0.2 s). None of it can change the
answer unless a file it read, a directory it listed, the interpreter, an environment
variable that steers it or lockbox itself changed. So such a run leaves a record in
``STORE/.lockbox/shortcuts/``: the status signature (type, device, inode, size, mtime and
ctime, as git's index keeps them) of every path it consulted, of the store entries it found
and of the root that protects them, the values of those environment variables, and what it
said. The next identical command (same arguments, directory and store) compares the
signatures and, when all match, says the same and stops, having imported nothing but this
module. Anything else runs the full lookup, which writes a new record.

A path changed in the last two seconds before the recording run started, or while it ran,
is not trusted (its change may share a timestamp with the run): no record is written then.

A record is signed with the store's key (:mod:`lockbox.store.records`): one edited, cut short,
appended to or copied from another store or command is not acted upon — it is removed, the
full lookup runs and writes a new one — and the result it names must be an entry directly
in the store. The entries a command uses (the application and its interpreter, or the
dependency layer) must still be as they were registered: the record holds the seal the
store keeps of each (:func:`lockbox.store.records.tree_seal`, the status of every file) and a
tree whose status differs is not answered for; the full lookup then re-hashes it and stops
if it is corrupted (:meth:`lockbox.store.store.Store.check_sealed`). That walk is most of what
answering costs for a large application (about 0.3 s for 30 000 files).

This module is imported before anything else of the command line, so it uses only ``os``,
``sys``, :mod:`lockbox.store.records` and :mod:`lockbox.store.layout`, and is kept to what a repeated ``build`` or ``run``
needs.
"""

from __future__ import annotations

import os
import sys

from lockbox.environment import LOOKUP
from lockbox.store import layout, records

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

FORMAT = "lockbox-shortcut 2"

ENVIRONMENT = LOOKUP
"""The variables a lookup depends on (:data:`lockbox.environment.LOOKUP`)."""

_SETTLE_NS = 2_000_000_000
"""How long before the recording run a consulted path must have stopped changing."""

_LINK = 0o120000


class Request:
    """A command the shortcut may answer: ``build [--deps-only] [--no-bundle] [PROJECT]`` or
    ``run [PROJECT] -- COMMAND…``, with ``--store DIR`` and ``-q`` before it; or the lookup
    another command (``image``) starts with."""

    def __init__(
        self,
        command: str,
        options: list[str],
        project: str,
        store: str,
        quiet: bool,
        run: list[str],
        environ: dict[str, str],
        cwd: str,
        started_ns: int,
    ) -> None:
        self.command = command
        self.options = options
        self.project = project
        self.store = store
        self.quiet = quiet
        self.run = run
        self.started_ns = started_ns
        self.key = [
            f"command {command}{''.join(' ' + option for option in sorted(options))}",
            f"project {project}",
            f"cwd {cwd}",
            f"store {store}",
            *(
                f"env {name}={environ[name]}" if name in environ else f"env {name}"
                for name in ENVIRONMENT
            ),
        ]
        digest = 0
        for line in self.key:
            digest = _fnv(digest, line)
        self.meta = os.path.join(store, layout.META)
        self.place = f"{layout.SHORTCUTS}/{digest:016x}"
        self.path = os.path.join(self.meta, self.place)
        self.distrusted = False
        """Whether a record was found that the store did not sign (it was removed)."""

    def distrust_notice(self) -> str:
        """What to say of a record that was not the store's (:attr:`distrusted`)."""
        return (
            f"ignored and removed the record {self.path}: it does not carry the store's "
            "signature (it was changed, or copied from another store); the command runs "
            "in full"
        )

    @classmethod
    def parse(cls, argv: list[str], environ: dict[str, str], started_ns: int) -> Request | None:
        """The request ``argv`` makes, or None when it is not one the shortcut answers (the
        full command line then parses it, errors included)."""
        rest = list(argv)
        options = _global_options(rest)
        if options is None:
            return None
        store, quiet = options
        if not rest or rest[0] not in ("build", "run"):
            return None
        command, arguments = rest[0], rest[1:]
        flags: list[str] = []
        project = None
        run: list[str] = []
        if command == "run":
            if "--" not in arguments:
                return None
            split = arguments.index("--")
            arguments, run = arguments[:split], arguments[split + 1 :]
            if not run or run[0].startswith("-"):
                return None
        for argument in arguments:
            if command == "build" and argument in ("--deps-only", "--no-bundle"):
                flags.append(argument)
            elif argument.startswith("-") or project is not None:
                return None
            else:
                project = argument
        return cls.make(
            command,
            project or ".",
            store,
            environ,
            started_ns,
            options=flags,
            quiet=quiet,
            run=run,
        )

    @classmethod
    def make(
        cls,
        command: str,
        project: str,
        store: str | None,
        environ: dict[str, str],
        started_ns: int,
        *,
        options: list[str] | None = None,
        quiet: bool = False,
        run: list[str] | None = None,
    ) -> Request | None:
        """The request of ``command`` on ``project`` (as typed) in ``store`` (None: the
        default), or None when its key cannot be written down."""
        try:
            cwd = os.getcwd()
        except OSError:
            return None
        if not store:
            from lockbox import default_store

            store = default_store(environ)
        texts = [project, store, cwd, *(environ.get(name, "") for name in ENVIRONMENT)]
        if any("\n" in text or "\r" in text for text in texts):
            return None
        return cls(
            command,
            options or [],
            project,
            os.path.abspath(store),
            quiet,
            run or [],
            environ,
            cwd,
            started_ns,
        )

    # Answering --------------------------------------------------------------------------
    def answer(self) -> str | None:
        """Say what the recorded run said and return its result, if every recorded
        signature still holds; otherwise None, having said nothing."""
        found = self.lookup()
        if found is None:
            return None
        result, said = found
        self.say(said)
        return result

    def say(self, said: list[tuple[str, str]]) -> None:
        """Print what a recorded run printed, as it did (``-q`` keeps stderr quiet)."""
        for kind, text in said:
            if kind == "say":
                sys.stdout.write(text + "\n")
            elif not self.quiet:
                sys.stderr.write(text + "\n")
        sys.stdout.flush()
        sys.stderr.flush()

    def lookup(self) -> tuple[str, list[tuple[str, str]]] | None:  # noqa: PLR0911 each way a record is not trusted
        """The recorded result and what the run said, if the record is signed by the store
        and every recorded signature still holds."""
        body, distrusted = records.read(self.meta, self.place)
        self.distrusted = self.distrusted or distrusted
        if body is None:
            return None
        lines = body.decode("utf-8", "surrogateescape").split("\n")
        if lines[: len(self.key) + 1] != [FORMAT, *self.key]:
            return None
        said: list[tuple[str, str]] = []
        result = None
        for line in lines[len(self.key) + 1 :]:
            kind, _, rest = line.partition(" ")
            if kind in ("in", "out", "seal"):
                if not _still_holds(kind, rest):
                    return None
            elif kind in ("say", "info"):
                said.append((kind, rest))
            elif kind == "result":
                result = rest
            elif kind == "end":
                break
            else:
                return None
        else:
            return None  # cut short: written by a run that died, or damaged
        if result is None or os.path.abspath(os.path.dirname(result)) != self.store:
            return None
        return result, said

    # Recording --------------------------------------------------------------------------
    def record(
        self,
        inputs: list[str],
        outputs: list[str],
        said: list[tuple[str, str]],
        result: str,
        sealed: dict[str, str] | None = None,
    ) -> bool:
        """Write the record of a run that found everything in the store: ``inputs`` are
        the paths it consulted, ``outputs`` the store paths it found (and the roots), ``said``
        what it printed ("say" on stdout, "info" on stderr), ``result`` what it found,
        ``sealed`` the entries it uses with the seal the store recorded for each.
        Returns False (and writes nothing) when an input changed too recently to trust."""
        settled = self.started_ns - _SETTLE_NS
        lines = [FORMAT, *self.key]
        for kind, paths in (("in", inputs), ("out", outputs)):
            for path in dict.fromkeys(paths):
                if "\n" in path or "\r" in path:
                    return False
                if kind == "in" and _changed_since(path, settled):
                    return False
                lines.append(f"{kind} {signature(path)} {path}")
        for path, seal in (sealed or {}).items():
            if "\n" in path or "\r" in path:
                return False
            lines.append(f"seal {seal} {path}")
        for kind, text in said:
            if "\n" in text or "\r" in text:
                return False
            lines.append(f"{kind} {text}")
        lines += [f"result {result}", "end", ""]
        return records.write(
            self.meta, self.place, "\n".join(lines).encode("utf-8", "surrogateescape")
        )


def _global_options(rest: list[str]) -> tuple[str | None, bool] | None:
    """The store and quietness the options at the start of ``rest`` give (taken off it),
    or None for an option the shortcut does not know."""
    store = None
    quiet = False
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-q", "--quiet"):
            quiet = True
        elif option == "--store" and rest:
            store = rest.pop(0)
        elif option.startswith("--store="):
            store = option[len("--store=") :]
        else:
            return None
    return store, quiet


def _still_holds(kind: str, rest: str) -> bool:
    """Whether the recorded signature (``in``/``out``) or seal (``seal``) of a path, ``rest``
    being ``RECORDED PATH``, is still what the path has."""
    recorded, _, path = rest.partition(" ")
    if kind != "seal":
        return signature(path) == recorded
    try:
        return records.tree_seal(path) == recorded
    except OSError:
        return False


def signature(path: str) -> str:
    """What stands for ``path``'s content and identity: type and mode, device, inode, size,
    mtime and ctime (of the link and of what it points to, for a symbolic link); ``-`` when
    it does not exist."""
    try:
        info = os.lstat(path)
    except OSError:
        return "-"
    text = (
        f"{info.st_mode:o}:{info.st_dev}:{info.st_ino}:{info.st_size}:"
        f"{info.st_mtime_ns}:{info.st_ctime_ns}"
    )
    if info.st_mode & 0o170000 == _LINK:
        try:
            target = os.stat(path)
        except OSError:
            return text + ">-"
        text += (
            f">{target.st_mode:o}:{target.st_dev}:{target.st_ino}:{target.st_size}:"
            f"{target.st_mtime_ns}:{target.st_ctime_ns}"
        )
    return text


def _changed_since(path: str, since_ns: int) -> bool:
    for follow in (False, True):
        try:
            info = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        if info.st_mtime_ns >= since_ns or info.st_ctime_ns >= since_ns:
            return True
    return False


def _fnv(value: int, text: str) -> int:
    """A 64-bit FNV-1a over ``text``, continuing from ``value``: a file name for the key (the
    key itself is written in the record and compared whole)."""
    value = value or 0xCBF29CE484222325
    for byte in text.encode("utf-8", "surrogateescape") + b"\n":
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def run_in_app(app: str, command: list[str], environ: Mapping[str, str]) -> int:
    """Replace this process by ``command`` run in the application ``app``'s root with its
    ``bin/`` first on ``PATH``, in ``environ`` otherwise; returns 127 (having said why) only
    if it cannot start."""
    bin_dir = os.path.join(app, "bin")
    env = {
        **environ,
        "PATH": f"{bin_dir}{os.pathsep}{environ.get('PATH', '')}",
        "VIRTUAL_ENV": app,
    }
    env.pop("PYTHONHOME", None)
    executable = command[0]
    if "/" not in executable and os.path.exists(os.path.join(bin_dir, executable)):
        executable = os.path.join(bin_dir, executable)
    os.chdir(app)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(executable, command, env)
    except OSError as error:
        sys.stderr.write(f"error: cannot run {command[0]}: {error.strerror}\n")
        return 127
