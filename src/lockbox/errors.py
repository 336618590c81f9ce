"""The exception tree of lockbox.

Every failure a user can cause or meet is a :class:`LockboxError`. Its ``str()`` is the
message the CLI prints: what went wrong, where, and what to do about it. The CLI shows a
traceback only for exceptions outside this tree, which are bugs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class LockboxError(Exception):
    """Root of all errors lockbox reports to its user."""

    exit_code: int = 1


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file (a recipe or a lock)."""

    file: Path
    """The file the problem is in."""
    key: str
    """Dotted key path of the offending value, or "" for the whole file."""
    line: int | None
    """1-based line of the key in the file, when it can be located."""
    message: str
    """What is wrong and what was expected."""

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f": {self.key}"
        return f"{where}: {self.message}"


class InputError(LockboxError):
    """One or more problems in an input file; all of them are collected before raising."""

    kind = "input"

    def __init__(self, problems: Sequence[Problem], hint: str = "") -> None:
        self.problems = tuple(problems)
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"invalid {self.kind}" if count == 1 else f"invalid {self.kind}: {count} problems"
        lines = [head] + [f"  {problem}" for problem in self.problems]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class RecipeError(InputError):
    """The recipe (lockbox.toml or [tool.lockbox]) is malformed or inconsistent."""

    kind = "recipe"


class LockFileError(InputError):
    """uv.lock is missing, malformed, or does not describe the project."""

    kind = "uv.lock"


class ProjectError(LockboxError):
    """The project directory is not something lockbox can build."""


class PathError(LockboxError):
    """A path from an input leads out of the tree it must stay in."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        self.key = key
        self.path = path
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.key}: {self.path!r} {self.reason}"


class NarError(LockboxError):
    """A tree cannot be serialised as a Nix Archive."""


class HashFormatError(LockboxError):
    """A hash string is not valid SRI, Nix base-32 or hex SHA-256."""


class StoreError(LockboxError):
    """The store cannot be opened or an operation on it failed."""


class StoreCorrupted(StoreError):
    """``store verify`` found entries whose content no longer matches their metadata."""


class PlanError(LockboxError):
    """The lock and the recipe ask for a build that cannot happen; every reason is listed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"cannot plan the build: {self.problems[0]}"
        return "\n".join(
            [f"cannot plan the build: {len(self.problems)} problems"]
            + [f"  {problem}" for problem in self.problems]
        )


class InterpreterNotFound(LockboxError):
    """The recipe's interpreter request matches no Python on this machine."""


class PythonImportError(LockboxError):
    """The interpreter cannot be imported into the store."""


class ToolFailed(LockboxError):
    """An external command exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(str(self))

    def __str__(self) -> str:
        from lockbox.tools.run import shown

        lines = [f"command failed with exit code {self.returncode}: {shown(self.argv)}"]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text.strip():
                lines.append(f"  {label}:")
                lines.extend(f"    {line}" for line in text.rstrip().splitlines())
        return "\n".join(lines)


class ToolMissing(LockboxError):
    """An external tool lockbox needs is not installed."""


class LockOutdated(LockboxError):
    """uv.lock no longer matches the project's pyproject.toml files."""


class NetworkError(LockboxError):
    """A download the dependency phase needs failed."""


class ArtifactMismatch(LockboxError):
    """An index served a file whose hash is not among those uv.lock pins for it."""


class BuildFailed(LockboxError):
    """A package could not be built from source."""

    def __init__(self, package: str | None, log_tail: str, hints: Sequence[str]) -> None:
        self.package = package
        self.log_tail = log_tail
        self.hints = tuple(hints)
        super().__init__(str(self))

    def __str__(self) -> str:
        what = f"building {self.package} from source failed" if self.package else "a build failed"
        lines = [what, "  last lines of its build log:"]
        lines += [f"    {line}" for line in self.log_tail.splitlines()]
        lines += [f"hint: {hint}" for hint in self.hints]
        return "\n".join(lines)


class HashMismatch(LockboxError):
    """A built tree's NAR hash differs from the hash the recipe declares."""

    def __init__(self, what: str, specified: str, got: str, kept: Path | None, fix: str) -> None:
        self.what = what
        self.specified = specified
        self.got = got
        self.kept = kept
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [
            f"hash mismatch in {self.what}:",
            f"  specified: {self.specified}",
            f"  got:       {self.got}",
        ]
        if self.kept is not None:
            lines.append(f"the mismatching output is kept at {self.kept}")
        lines.append(self.fix)
        return "\n".join(lines)


class SandboxUnavailable(LockboxError):
    """The offline phase cannot make the namespaces it runs in."""


class AssemblyError(LockboxError):
    """The application cannot be assembled from the project and the recipe as they are."""


class VerificationFailed(LockboxError):
    """A check of the recipe's [verify] table failed against the assembled application."""

    def __init__(self, check: str, output: str, log: Path) -> None:
        self.check = check
        self.output = output
        self.log = log
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"verification failed: {self.check}"]
        lines += [f"    {line}" for line in self.output.rstrip().splitlines()[-30:]]
        lines.append(f"the whole log is at {self.log}; nothing was registered")
        return "\n".join(lines)


class ImageError(LockboxError):
    """An image cannot be written or pushed."""


class PatchError(LockboxError):
    """A patch that cannot be parsed or does not apply."""


class UnsatisfiedLibraries(LockboxError):
    """Needed shared libraries were found nowhere."""

    def __init__(self, missing: Mapping[str, Sequence[str]]) -> None:
        self.missing = {name: tuple(wanted) for name, wanted in sorted(missing.items())}
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.missing)
        lines = [
            f"{count} {'dependency' if count == 1 else 'dependencies'} could not be satisfied:"
        ]
        for name, wanted in self.missing.items():
            shown = ", ".join(wanted[:3]) + (
                f" and {len(wanted) - 3} more" if len(wanted) > 3 else ""
            )
            lines.append(f"  {name} wanted by {shown}")
        lines.append(
            "install the packages that provide them on the build machine, name "
            "their directories in the recipe's [libraries] paths, or accept their "
            'absence with [libraries] ignore-missing = ["<soname pattern>"]'
        )
        return "\n".join(lines)


class DownloadGone(LockboxError):
    """The server answered 404 or 410 for files a step must download: they are gone."""

    def __init__(self, items: Sequence[object]) -> None:
        self.items = tuple(items)
        """The :class:`lockbox.deps.download.Download` records the server no longer has."""
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{len(self.items)} files are gone from where they were published (404/410):"]
        lines += [
            f"  {getattr(item, 'label', '') or getattr(item, 'name', '')}: "
            f"{getattr(item, 'url', '')}"
            for item in self.items
        ]
        lines.append("the index no longer serves them; nothing was added to the store")
        return "\n".join(lines)


class DownloadFailed(LockboxError):
    """Files could not be downloaded, or arrived with other bytes than pinned."""

    def __init__(self, failures: Sequence[tuple[object, str]]) -> None:
        self.failures = tuple(failures)
        """Each :class:`lockbox.deps.download.Download` that failed, with what went wrong."""
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"could not download {len(self.failures)} files:"]
        lines += [
            f"  {getattr(item, 'label', '') or getattr(item, 'name', '')} "
            f"({getattr(item, 'url', '')}): {reason}"
            for item, reason in self.failures
        ]
        lines.append(
            "check the network, proxy settings and the index URLs; nothing was added to the store"
        )
        return "\n".join(lines)


class FetchError(LockboxError):
    """What the build needs cannot be fetched by hash; every reason is listed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"cannot fetch what the build needs: {len(self.problems)} problems"]
        lines += [f"  {problem}" for problem in self.problems]
        lines.append("nothing was added to the store")
        return "\n".join(lines)


class SourceError(LockboxError):
    """An extra source cannot be fetched."""


class BuildPinsMissing(LockboxError):
    """A build dependency is not pinned (or no longer matches its pin)."""


class LayerError(LockboxError):
    """The installed environment is not what the layer can be made from."""


class BuildRootError(LockboxError):
    """The build root cannot be pinned or made."""


class PinnedPackage(Protocol):
    """A Debian package a build root pins, as :class:`PinnedPackagesGone` names it
    (:class:`lockbox.deps.buildroot.DebPackage`)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def url(self) -> str: ...


class PinnedPackagesGone(BuildRootError):
    """The archive no longer offers packages the build root pins: the archive moved on,
    lockbox did not fail. Re-pinning is the fix."""

    def __init__(self, missing: Sequence[PinnedPackage], project_dir: Path) -> None:
        self.missing = tuple(missing)
        lines = "\n".join(f"  {p.name} {p.version} ({p.url})" for p in self.missing)
        super().__init__(
            f"the Debian archive no longer offers {len(self.missing)} package"
            f"{'s' if len(self.missing) != 1 else ''} the build root pins:\n{lines}\n"
            "This is not a lockbox failure: Debian replaced these versions (a point release "
            "or a security update) and keeps no old ones. Re-pin the build root to what the "
            "archive offers now; the command shows every version change and the new "
            f"deps.hash before it writes anything:\n    lockbox lock-toolchain {project_dir}"
        )


class CheckError(LockboxError):
    """The rebuild could not be made at all."""


class VariationError(LockboxError):
    """A variation was asked for that does not exist."""
