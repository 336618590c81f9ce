"""patchelf, which rewrites the run paths of ELF files (:mod:`lockbox.native.relink`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

_BATCH = 200
"""Files per patchelf call: enough to amortise its start-up, short of argv limits."""


@dataclass(frozen=True)
class Patchelf:
    """patchelf, checked once."""

    executable: Path
    version: str

    @classmethod
    def find(cls, progress: Progress = silent, path: str | None = None) -> Patchelf:
        executable = which(
            "patchelf",
            "install patchelf (Debian: apt-get install patchelf); "
            "lockbox rewrites run paths of ELF files with it",
            path,
        )
        version = run([executable, "--version"], progress=progress).stdout.split()[-1]
        return cls(executable, version)

    def set_runpath(self, files: Sequence[Path], runpath: str, progress: Progress = silent) -> None:
        """Give every file of ``files`` the run path ``runpath`` (``DT_RUNPATH``)."""
        for start in range(0, len(files), _BATCH):
            run(
                [self.executable, "--set-rpath", runpath, *files[start : start + _BATCH]],
                progress=progress,
            )
