"""dpkg, Debian's package manager: which package a host file comes from, and in what version.

The programs (``dpkg``, ``dpkg-query``) answer what only they know — this machine's
architecture, a package's files and version. Which package owns a file is read from the
package database itself (:func:`lockbox.deps.toolchain.package_owners`), the one owner
lookup lockbox has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

if TYPE_CHECKING:
    from collections.abc import Iterable


@dataclass(frozen=True)
class Dpkg:
    """dpkg and dpkg-query of a Debian host."""

    dpkg: Path
    query: Path

    @classmethod
    def find(cls, path: str | None = None) -> Dpkg:
        hint = "lockbox reads what the host's Debian packages hold with dpkg (a Debian host)"
        return cls(which("dpkg", hint, path), which("dpkg-query", hint, path))

    def architecture(self, progress: Progress = silent) -> str:
        """This machine's Debian architecture (``amd64``, ``arm64``, …)."""
        return run([self.dpkg, "--print-architecture"], progress=progress).stdout.strip()

    def files(self, package: str, progress: Progress = silent) -> list[str]:
        """The paths the installed ``package`` holds; none when it is not installed."""
        listed = run([self.query, "-L", package], check=False, progress=progress)
        return listed.stdout.split() if listed.returncode == 0 else []

    def version(self, package: str, progress: Progress = silent) -> str:
        """The installed version of ``package``."""
        return run(
            [self.query, "-W", "-f", "${Version}", package], progress=progress
        ).stdout.strip()

    def owners_of(self, files: Iterable[str]) -> dict[str, str]:
        """The package owning each of ``files`` that one owns (its name without the
        architecture), from the package database."""
        from lockbox.deps.toolchain import dpkg_names, package_owners

        owners = package_owners()
        found: dict[str, str] = {}
        for file in files:
            owner = next((owners[name] for name in dpkg_names(file) if name in owners), None)
            if owner is not None:
                found[file] = owner
        return found
