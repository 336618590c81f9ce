"""The report of ``lockbox check``: each rebuilt entry against the registered one.

:mod:`lockbox.check.compare` makes it; the command line renders it as text or JSON
(:mod:`lockbox.cli.main_check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockbox.store.store import Entry

if TYPE_CHECKING:
    from lockbox.deps.treediff import FileChange

KINDS = ("deps", "python", "bytecode", "app")
"""What is rebuilt, in order; each later one needs the earlier ones identical."""

LABELS = {
    "deps": "dependency layer",
    "python": "interpreter entry",
    "bytecode": "dependency layer's bytecode",
    "app": "application",
}
"""How the report names each kind."""


@dataclass
class Compared:
    """One rebuilt entry against the registered one."""

    kind: str
    name: str
    registered_hash: str
    registered_path: Path
    rebuilt_hash: str | None = None
    rebuilt_path: Path | None = None
    error: str | None = None
    """Why it was not rebuilt (a failure, or an earlier entry that differs)."""
    differences: list[FileChange] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    """Differing path → the distribution it belongs to."""
    explanations: dict[str, str] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return self.error is None and self.rebuilt_hash == self.registered_hash

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "same": self.same,
            "registered": {"hash": self.registered_hash, "path": str(self.registered_path)},
            "rebuilt": (
                {"hash": self.rebuilt_hash, "path": str(self.rebuilt_path)}
                if self.rebuilt_hash
                else None
            ),
            "error": self.error,
            "differences": [
                {
                    "path": change.path,
                    "change": change.change,
                    "detail": change.detail,
                    "distribution": self.owners.get(change.path, ""),
                    "explanation": self.explanations.get(change.path),
                }
                for change in self.differences
            ],
        }


@dataclass
class CheckReport:
    project: str
    applied: dict[str, str]
    skipped: dict[str, str]
    entries: list[Compared]
    kept: Path | None
    """Where the rebuilt trees are, when they were kept."""

    @property
    def ok(self) -> bool:
        return all(entry.same for entry in self.entries)

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "ok": self.ok,
            "variations": {"applied": self.applied, "skipped": self.skipped},
            "entries": [entry.as_json() for entry in self.entries],
            "kept": str(self.kept) if self.kept else None,
        }


@dataclass(frozen=True)
class Built:
    """The registered entries of a project's application."""

    deps: Entry
    python: Entry | None = None
    """None when only the dependency layer is checked (``--deps-only``); so are the rest."""
    bytecode: Entry | None = None
    app: Entry | None = None

    def entries(self) -> list[tuple[str, Entry]]:
        """``(kind, entry)`` of each entry there is, in the order of :data:`KINDS`."""
        return [
            (kind, entry)
            for kind, entry in (
                ("deps", self.deps),
                ("python", self.python),
                ("bytecode", self.bytecode),
                ("app", self.app),
            )
            if entry is not None
        ]
