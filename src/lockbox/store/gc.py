"""Removing entries: garbage collection, and the removal of corrupted entries.

Both hold the gc lock exclusively (:class:`lockbox.store.locks.GcLock`), so no other command
has the store open meanwhile. An entry goes in steps, each atomic: its pending record is
written (:mod:`lockbox.store.pending`), its row deleted, its directory and what was made from
it removed, the record dropped; a crash after any step leaves a directory that the record
proves lockbox made, which the next open removes. The shortcut records go first: one may
name an entry about to go.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.store import pending
from lockbox.store.entries import Entry

if TYPE_CHECKING:
    from lockbox.store.store import Store


@dataclass(frozen=True)
class GcReport:
    """What garbage collection removed, or would remove with ``dry_run``."""

    removed: tuple[Entry, ...]
    kept: int
    freed_nar_bytes: int
    dry_run: bool


def collect(store: Store, dry_run: bool = False, timeout: float | None = None) -> GcReport:
    """Remove every entry that no root reaches. Waits (at most ``timeout`` seconds, if
    given) until no other command has the store open."""
    with store.gc_lock.exclusive(timeout):
        for root_name, target in store.roots().items():
            if store.get(target) is None:
                store.progress.warning(f"root {root_name} points at {target}, which is gone")
        live = store.live()
        dead = tuple(e for e in store.entries() if e.path_name not in live)
        if not dry_run:
            # A record may name an entry about to go: none survives a collection.
            fs.step("forget shortcuts")
            store.remove(store.layout.shortcuts)
            for entry in dead:
                _delete(store, entry)
        return GcReport(dead, len(live), sum(e.nar_size for e in dead), dry_run)


def remove_corrupted(store: Store, corrupted: Iterable[Entry]) -> list[Entry]:
    """Remove ``corrupted`` entries (and the entries that reference them, which hardlink
    or run their files) with the roots that name them, so that a build makes them anew;
    returns what was removed. Waits for writers, as a collection does.

    A dependency layer's files are hardlinks of the store's uv cache (``uv-cache``):
    a file changed in one changed in the other, and a rebuild would link it again. So
    when a layer is removed the cache goes too (it is downloaded again), with the
    record of the files found clean, which names them by inode."""
    with store.gc_lock.exclusive(None):
        every = {entry.path_name: entry for entry in store.entries()}
        doomed = {entry.path_name for entry in corrupted if entry.path_name in every}
        grew = True
        while grew:
            needing = {
                name
                for name, entry in every.items()
                if name not in doomed and doomed.intersection(entry.references)
            }
            grew = bool(needing)
            doomed |= needing
        fs.step("forget shortcuts")
        store.remove(store.layout.shortcuts)
        for root_name, target in store.roots().items():
            if target in doomed:
                store.remove_root(root_name)
        removed = [every[name] for name in sorted(doomed)]
        for entry in removed:
            _delete(store, entry)
        if any(entry.kind == "deps" for entry in removed):
            store.remove(store.layout.uv_cache)
            store.database.forget_scanned()
        return removed


def _delete(store: Store, entry: Entry) -> None:
    # The record first, then the row: a crash after either leaves an unregistered
    # directory that the record proves lockbox made, which the next open removes.
    pending.write(store.layout, entry.path_name)
    store.database.delete(entry.path_name)
    fs.step(f"remove {entry.path_name}")
    store.remove(entry.path)
    store.remove(store.derived_dir(entry))
    pending.drop(store.layout, entry.path_name)
    store.progress.debug(f"removed {entry.path}")
