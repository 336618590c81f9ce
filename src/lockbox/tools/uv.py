"""uv, the installer lockbox drives: found and version-checked once, one method per use.

A failed ``uv`` run is read for what went wrong — a stale lock, a download that failed, a
package whose build from source failed (with the tail of its log and, when the cause is a
missing system library, the Debian package that provides it) — and raised as the matching
error, so the user sees the cause instead of uv's whole output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from lockbox.errors import (
    ArtifactMismatch,
    BuildFailed,
    BuildPinsMissing,
    LockOutdated,
    NetworkError,
    ToolFailed,
    ToolMissing,
)
from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

MINIMUM_VERSION = Version("0.8.0")
"""The oldest uv with per-package build variables (``extra-build-variables``)."""

# (pattern in a failed build's log, what to do). The seed build met each of these.
BUILD_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"pg_config"),
        "pg_config was not found: install libpq-dev (Debian), or put the directory holding "
        "pg_config in the recipe's deps.build.<package>.path",
    ),
    (re.compile(r"krb5-config"), "krb5-config was not found: install libkrb5-dev (Debian)"),
    (
        re.compile(
            r"xmlsec1-config|xmlsec1 is not installed|xmlsec/xmlsec\.h|Could not find xmlsec"
        ),
        "the xmlsec library is missing: install libxmlsec1-dev (Debian)",
    ),
    (
        re.compile(r"libxml/\S+\.h|xml2-config"),
        "the libxml2 headers are missing: install libxml2-dev (Debian)",
    ),
    (
        re.compile(r"libxslt/\S+\.h|xslt-config"),
        "the libxslt headers are missing: install libxslt1-dev (Debian)",
    ),
    (
        re.compile(r"gss_acquire_cred_impersonate_name"),
        "gssapi needs its extension header: set deps.build.gssapi.env.CFLAGS = "
        '"-include gssapi/gssapi_ext.h" in the recipe',
    ),
    (
        re.compile(r"Python\.h: No such file"),
        "the interpreter's headers are missing: use a Python built with its headers (python3-dev)",
    ),
    (
        re.compile(
            r"(?:gcc|cc|g\+\+)\S*: (?:command )?not found|error: command '\S*(?:gcc|cc)' failed: No such file"
        ),
        "no C compiler: install build-essential (Debian)",
    ),
)
_MISSING_HEADER = re.compile(r"fatal error: (\S+\.h): No such file or directory")
_FAILED_BUILD = re.compile(r"Failed to build `([^`@= ]+)")
_NETWORK = re.compile(
    r"error sending request|dns error|failed to lookup address|Connection refused|"
    r"tcp connect error|Could not connect|operation timed out|Failed to fetch|"
    r"failed to download|Network unreachable|error trying to connect",
    re.IGNORECASE,
)
_UNPINNED_BUILD = re.compile(r"no trusted hash was provided for: `([^`]+)`")
_HASH_MISMATCH = re.compile(
    r"Hash mismatch for `([^`]+)`\s*Expected:\s*(sha256:[0-9a-f]+)\s*Computed:\s*(sha256:[0-9a-f]+)"
)
_STALE_LOCK = re.compile(r"needs to be updated, but `--(?:locked|check)` was provided")
_UNRESOLVED = re.compile(
    r"No solution found when resolving dependencies|"
    r"Packages were unavailable because the network was disabled"
)
_NOT_FETCHED = re.compile(r"Because (\S+) was not found in the provided package locations")
_OFFLINE = re.compile(
    r"Network connectivity is disabled|not found in the cache|offline mode", re.IGNORECASE
)


@dataclass(frozen=True)
class SyncRequest:
    """What ``uv sync`` installs, beyond the lock itself."""

    python: Path
    """The interpreter to make the environment with."""
    groups: Sequence[str] = ()
    """Dependency groups to install (``dev`` included only if named)."""
    extras: Sequence[str] = ()
    """Extras of the project to install."""
    exclude: Sequence[str] = ()
    """Packages not to install."""
    config_file: Path | None = None
    """A uv.toml with lockbox's settings (per-package build variables)."""
    require_build_hashes: bool = False
    """Refuse any build dependency that uv.lock's manifest does not pin with a hash."""
    frozen: bool = False
    """Install uv.lock as it is, without checking it against pyproject.toml."""
    verbose: bool = False
    """Have uv log what it does (which build environment installs what)."""


@dataclass(frozen=True)
class OfflineInstall:
    """Where ``uv pip`` installs from without the network, and how builds are checked."""

    links: Path
    """The only place packages come from: a find-links directory of fetched files."""
    config_file: Path
    """A uv.toml with the project's settings (less its indexes) and lockbox's."""
    build_constraints: Path | None = None
    """A requirements file pinning every build dependency with its hashes."""
    require_build_hashes: bool = False
    """Refuse any build dependency ``build_constraints`` does not pin with a hash."""

    def argv(self) -> list[str]:
        argv = [
            "--offline",
            "--no-index",
            "--find-links",
            os.fspath(self.links),
            "--config-file",
            os.fspath(self.config_file),
        ]
        if self.build_constraints is not None:
            argv += ["--build-constraints", os.fspath(self.build_constraints)]
        if self.require_build_hashes:
            argv += ["--require-build-hashes", "--preview-features", "build-dependency-hashes"]
        return argv


@dataclass(frozen=True)
class Uv:
    """A uv executable of a supported version."""

    executable: Path
    version: Version

    @classmethod
    def find(cls, progress: Progress = silent, path: str | None = None) -> Uv:
        executable = which(
            "uv", "install it with `pip install uv` or from https://docs.astral.sh/uv/", path
        )
        output = run([executable, "--version"], progress=progress).stdout.split()
        try:
            version = Version(output[1])
        except (IndexError, ValueError):
            raise ToolMissing(
                f"{executable} does not look like uv: `uv --version` said {' '.join(output)!r}"
            ) from None
        if version < MINIMUM_VERSION:
            raise ToolMissing(
                f"uv {version} at {executable} is too old; lockbox needs uv "
                f"{MINIMUM_VERSION} or newer (`pip install -U uv`)"
            )
        return cls(executable, version)

    def sync_argv(self, request: SyncRequest) -> list[str]:
        """The ``uv sync`` command line that installs the locked dependencies, and no
        workspace member, into the environment ``UV_PROJECT_ENVIRONMENT`` names."""
        argv = [
            os.fspath(self.executable),
            "sync",
            "--frozen" if request.frozen else "--locked",
            "--no-install-project",
            "--no-install-workspace",
            "--python",
            os.fspath(request.python),
        ]
        if "dev" not in request.groups:
            argv.append("--no-dev")
        argv += [arg for group in request.groups for arg in ("--group", group)]
        argv += [arg for extra in request.extras for arg in ("--extra", extra)]
        argv += [arg for name in request.exclude for arg in ("--no-install-package", name)]
        if request.config_file is not None:
            argv += ["--config-file", os.fspath(request.config_file)]
        if request.require_build_hashes:
            argv += ["--require-build-hashes", "--preview-features", "build-dependency-hashes"]
        if request.verbose:
            argv.append("-v")
        return argv

    def lock_check_argv(self, request: SyncRequest) -> list[str]:
        """The ``uv lock --check`` command line that fails unless uv.lock is up to date
        with the project, without the network (what ``--locked`` checks)."""
        argv = [
            os.fspath(self.executable),
            "lock",
            "--check",
            "--offline",
            "--python",
            os.fspath(request.python),
        ]
        if request.config_file is not None:
            argv += ["--config-file", os.fspath(request.config_file)]
        return argv

    def export_argv(self, request: SyncRequest, output: Path) -> list[str]:
        """The ``uv export`` command line that writes what ``uv sync`` would install of
        uv.lock — no workspace member, the request's groups and extras, less its
        exclusions — to ``output`` as a requirements file with hashes."""
        argv = [
            os.fspath(self.executable),
            "export",
            "--frozen",
            "--offline",
            "--no-emit-project",
            "--no-emit-workspace",
            "--no-header",
            "--no-annotate",
            "--output-file",
            os.fspath(output),
        ]
        if "dev" not in request.groups:
            argv.append("--no-dev")
        argv += [arg for group in request.groups for arg in ("--group", group)]
        argv += [arg for extra in request.extras for arg in ("--extra", extra)]
        argv += [arg for name in request.exclude for arg in ("--no-emit-package", name)]
        return argv

    def venv_argv(self, python: Path, venv: Path) -> list[str]:
        """The ``uv venv`` command line that makes an empty environment at ``venv``."""
        return [os.fspath(self.executable), "venv", "--python", os.fspath(python), os.fspath(venv)]

    def pip_sync_argv(self, python: Path, requirements: Path, offline: OfflineInstall) -> list[str]:
        """The ``uv pip sync`` command line that installs exactly ``requirements`` (hashes
        checked) for ``python``, from ``offline``'s files only."""
        return [
            os.fspath(self.executable),
            "pip",
            "sync",
            "--python",
            os.fspath(python),
            *offline.argv(),
            os.fspath(requirements),
        ]

    def pip_install_argv(
        self,
        python: Path,
        paths: Sequence[Path],
        offline: OfflineInstall | None = None,
        *,
        config_file: Path | None = None,
        verbose: bool = False,
    ) -> list[str]:
        """The ``uv pip install`` command line that installs the distributions at
        ``paths`` (archives or source trees), and nothing they require, for ``python``:
        from ``offline``'s files, or else with the network and ``config_file``."""
        argv = [
            os.fspath(self.executable),
            "pip",
            "install",
            "--no-deps",
            "--python",
            os.fspath(python),
        ]
        if offline is not None:
            argv += offline.argv()
        elif config_file is not None:
            argv += ["--config-file", os.fspath(config_file)]
        if verbose:
            argv.append("-v")
        return argv + [os.fspath(path) for path in paths]

    def sync(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        progress: Progress = silent,
        on_line: Callable[[str], None] | None = None,
        explain: Callable[[str], Exception] | None = None,
    ) -> str:
        """Run a (possibly sandboxed) ``uv`` command line; return uv's report. A failure
        is raised as what ``explain`` (by default :func:`explain_failure`) reads in it."""
        try:
            return run(
                argv, cwd=cwd, env=env, progress=progress, on_stderr_line=on_line or progress.debug
            ).stderr
        except ToolFailed as error:
            raise (explain or explain_failure)(error.stdout + error.stderr) from None


def explain_lock_check(output: str) -> Exception:
    """The error a failed offline ``uv lock --check`` describes. An up-to-date lock is
    checked without resolving; uv resolves, and so fails offline for want of the index,
    only when pyproject.toml asks for something the lock does not satisfy."""
    if _STALE_LOCK.search(output) or _UNRESOLVED.search(output):
        return _lock_outdated()
    return explain_failure(output)


def _lock_outdated() -> LockOutdated:
    return LockOutdated(
        "uv.lock is out of date with pyproject.toml: uv would change it. Run `uv lock` "
        "in the project, review the change and commit it, then build again"
    )


def explain_failure(output: str) -> Exception:  # noqa: PLR0911 one answer per failure uv names
    """The error a failed ``uv sync`` run's output describes."""
    if _STALE_LOCK.search(output):
        return _lock_outdated()
    unpinned = _UNPINNED_BUILD.search(output)
    if unpinned:
        built = _FAILED_BUILD.search(output)
        by = f" of {built.group(1)}" if built else ""
        return BuildPinsMissing(
            f"the build dependency {unpinned.group(1)}{by} is not pinned in uv.lock's "
            "manifest: run `lockbox lock-build` to refresh the build pins, review and "
            "commit them, then build again"
        )
    missing = _NOT_FETCHED.search(output)
    if missing and "build-system.requires" in output:
        built = _FAILED_BUILD.search(output)
        by = f" of {built.group(1)}" if built else ""
        return BuildPinsMissing(
            f"the build dependency {missing.group(1)}{by} was not fetched: builds run with "
            "no network, from the files fetched before, and those are the locked packages "
            "and uv.lock's build pins. Run `lockbox lock-build` to pin the build "
            "dependencies, review and commit the pins, then build again"
        )
    mismatch = _HASH_MISMATCH.search(output)
    if mismatch:
        build = "build-system.requires" in output or "build dependencies" in output
        what, pins, again = (
            ("build dependency", "uv.lock's build pins", "`lockbox lock-build`")
            if build
            else ("package", "uv.lock", "`uv lock`")
        )
        return ArtifactMismatch(
            f"the index served the {what} {mismatch.group(1)} with bytes {pins} do not list "
            f"(expected {mismatch.group(2)}, got {mismatch.group(3)}): the artifact was "
            "replaced, or another index answered. Nothing was added to the store; if the "
            f"change is legitimate, pin it again with {again} and review the new hashes"
        )
    built = _FAILED_BUILD.search(output)
    if built:
        package = built.group(1)
        tail = "\n".join(output[built.start() :].strip().splitlines()[-40:])
        hints = [hint for pattern, hint in BUILD_HINTS if pattern.search(output)]
        header = _MISSING_HEADER.search(output)
        if header and not hints:
            hints.append(
                f"the header {header.group(1)} is missing: install the Debian -dev "
                "package that provides it (`apt-file search` finds it)"
            )
        return BuildFailed(package, tail, hints)
    if _OFFLINE.search(output) or missing:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        detail = "\n".join(f"  {line}" for line in lines[-8:])
        return NetworkError(
            "the build step needed something that was not fetched before it (it runs with "
            "no network):\n" + detail + "\nevery package must be in uv.lock and every build "
            "dependency pinned by `lockbox lock-build`; nothing was added to the store"
        )
    if _NETWORK.search(output):
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        detail = "\n".join(f"  {line}" for line in lines[-8:])
        return NetworkError(
            "the dependency phase could not download what uv.lock pins:\n"
            + detail
            + "\ncheck the network, proxy settings and the index URLs in uv.lock; "
            "nothing was added to the store"
        )
    lines = output.strip().splitlines()
    return ToolFailed(["uv", "sync"], 1, "", "\n".join(lines[-40:]))
