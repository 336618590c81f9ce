"""``lockbox store verify``: every entry hashed again, and what lockbox did not make found.

Nothing here changes the store: what is corrupted or missing is reported (``--repair``
removes it, :func:`lockbox.store.gc.remove_corrupted`), and what lockbox cannot prove it
made is never removed, only listed (:func:`unknown`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.hashes import Sha256
from lockbox.store import layout, pending, staging
from lockbox.store.entries import Entry
from lockbox.store.nar import nar_hash

if TYPE_CHECKING:
    from lockbox.store.store import Store


@dataclass(frozen=True)
class VerifyReport:
    """What ``store verify`` found."""

    checked: int
    """How many entries were re-hashed."""
    corrupted: tuple[tuple[Entry, Sha256], ...]
    """Entries whose content hashes differently now, with the hash found."""
    missing: tuple[Entry, ...]
    """Registered entries whose directory is gone."""
    unknown: tuple[Path, ...] = ()
    """Files in the store that lockbox did not make (:func:`unknown`): left alone."""

    @property
    def ok(self) -> bool:
        return not self.corrupted and not self.missing


def verify(store: Store) -> VerifyReport:
    """Re-hash every registered entry and compare with its recorded NAR hash."""
    corrupted: list[tuple[Entry, Sha256]] = []
    missing: list[Entry] = []
    entries = store.entries()
    for index, entry in enumerate(entries, 1):
        store.progress.debug(f"[{index}/{len(entries)}] checking {entry.path_name}")
        if not os.path.lexists(entry.path):
            missing.append(entry)
            continue
        found = nar_hash(entry.path).sha256
        if found != entry.nar_hash:
            corrupted.append((entry, found))
    return VerifyReport(len(entries), tuple(corrupted), tuple(missing), tuple(unknown(store)))


def unknown(store: Store) -> list[Path]:
    """Files in the store that lockbox did not make, or cannot prove it made: in its
    root, anything but a registered entry or one a live writer is placing; in its
    staging and pending directories, anything not named as lockbox names them.
    They are never removed; ``lockbox store verify`` reports them."""
    registered = {entry.path_name for entry in store.entries()}
    placing = pending.placing(store.layout)
    found = [
        child
        for child in sorted(store.root.iterdir())
        if child.name != layout.META and child.name not in registered | placing
    ]
    found += staging.unknown(store.layout)
    found += pending.unknown(store.layout, placing)
    return found
