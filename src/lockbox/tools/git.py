"""git, which checks out the git sources of uv.lock and the recipe's extra sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import SourceError, ToolFailed
from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which


@dataclass(frozen=True)
class Git:
    """A git executable."""

    executable: Path

    @classmethod
    def find(cls, path: str | None = None) -> Git:
        return cls(
            which(
                "git",
                "install git (Debian: apt-get install git); lockbox checks out git sources with it",
                path,
            )
        )

    def checkout(self, repository: str, rev: str, target: Path, progress: Progress = silent) -> str:
        """Clone ``repository`` into ``target`` and check out ``rev`` (detached); return
        the commit checked out. No code of the repository runs: clone hooks come from git's
        own templates, and filters only from configuration the repository cannot set."""
        git = [str(self.executable), "-c", "advice.detachedHead=false"]
        try:
            run(
                [*git, "clone", "--quiet", "--no-checkout", repository, str(target)],
                progress=progress,
            )
            run(
                [*git, "-C", str(target), "checkout", "--quiet", "--detach", rev],
                progress=progress,
            )
            head = run([*git, "-C", str(target), "rev-parse", "HEAD"], progress=progress)
        except ToolFailed as error:
            raise SourceError(
                f"cannot check out {repository} at {rev}: {error.stderr.strip()}"
            ) from None
        return head.stdout.strip()

    def revision(self, directory: Path) -> str | None:
        """The commit checked out in ``directory``, if it is a git work tree."""
        head = run([str(self.executable), "-C", str(directory), "rev-parse", "HEAD"], check=False)
        return head.stdout.strip() or None if head.returncode == 0 else None
