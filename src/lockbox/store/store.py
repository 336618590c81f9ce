"""The store: a directory of immutable, hashed entries and the database that describes them.

:class:`Store` is what the rest of lockbox opens and asks; each of its jobs is a module of
its own beside it: where everything is on disk (:mod:`~lockbox.store.layout`), what an
entry is and how it is named (:mod:`~lockbox.store.entries`), the database
(:mod:`~lockbox.store.database`), the locks (:mod:`~lockbox.store.locks`), staging
directories and pending records (:mod:`~lockbox.store.staging`,
:mod:`~lockbox.store.pending`), roots (:mod:`~lockbox.store.roots`), sealing and checking
entries (:mod:`~lockbox.store.seals`), verifying and collecting
(:mod:`~lockbox.store.verify`, :mod:`~lockbox.store.gc`), and what makes a directory a store
(:mod:`~lockbox.store.ownership`).

The store removes only what it can prove it made. It never takes over a non-empty directory
that has no marker. An entry becomes visible in steps, each atomic: its pending record is
written, its staged directory is renamed into place, its row is committed, the record is
dropped; collecting an entry writes the record before the row goes. A directory is a leftover
only if its name is a store path name, its pending record is there and its entry lock is free
(the writer died); a staging directory only if its name is a staging token and its lock is
free. Both are removed whenever the store is opened. Anything else lockbox did not make is
left alone and reported by :meth:`Store.unknown`. Every path name read from the database is
checked before it becomes a path.

Every command holds the shared garbage-collection lock for as long as it has the store open,
so an entry a lookup found stays until the command ends; :meth:`Store.gc` takes the lock
exclusively and so waits for every other command to finish.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from lockbox import default_store, fs
from lockbox.errors import StoreError
from lockbox.hashes import Sha256
from lockbox.progress import Progress, silent
from lockbox.store import gc, pending, records, roots, seals, staging, verify
from lockbox.store.database import Database
from lockbox.store.entries import (
    KINDS,
    Entry,
    canonical_json,
    check_name,
    content_digest,
    inputs_digest,
    is_path_name,
)
from lockbox.store.gc import GcReport
from lockbox.store.layout import Layout
from lockbox.store.locks import GcLock, entry_lock
from lockbox.store.nar import NarInfo, nar_hash
from lockbox.store.ownership import claim
from lockbox.store.verify import VerifyReport

__all__ = [
    "KINDS",
    "Entry",
    "GcReport",
    "Store",
    "VerifyReport",
    "canonical_json",
    "check_name",
    "content_digest",
    "default_store_dir",
    "inputs_digest",
    "is_path_name",
    "remove_tree",
]

remove_tree = fs.remove_tree
"""Kept importable from here for :mod:`lockbox.image.oci`, which still imports it so."""


def default_store_dir(environ: Mapping[str, str]) -> Path:
    """Where the store lives unless ``--store`` says otherwise (:func:`lockbox.default_store`)."""
    return Path(default_store(environ))


class Store:
    """An opened store. Open it with :meth:`Store.open`; close it (or use it as a context
    manager) when done, which lets garbage collection run."""

    def __init__(self, root: Path, progress: Progress) -> None:
        self.root = root
        self.progress = progress
        self.layout = Layout(root)
        """Where each part of the store is."""
        try:
            for directory in (
                self.layout.locks,
                self.layout.tmp,
                self.layout.roots,
                self.layout.pending,
            ):
                directory.mkdir(exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot use the store at {root}: {error.strerror}") from None
        self.gc_lock = GcLock(self.layout, progress)
        """The shared gc lock this store holds until it is closed."""
        try:
            self.database = Database(self.layout)
        except BaseException:
            self.gc_lock.release()
            raise

    # Opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, progress: Progress = silent) -> Store:
        """Open the store at ``root``, creating it if ``root`` is missing or empty, and
        remove what writers that died left behind. A non-empty directory that is not a
        store is refused, never changed."""
        root = root.absolute()
        claim(root)
        store = cls(root, progress)
        try:
            store._make_key()
            store._remove_leftovers()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self.gc_lock.held:
            self.database.close()
            self.gc_lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_key(self) -> None:
        """Give the store its key (:mod:`lockbox.store.records`) if it has none yet."""
        if records.store_key(str(self.layout.meta)) is None:
            self.progress.debug(f"cannot make the key of {self.root}: records are not kept")

    def _remove_leftovers(self) -> None:
        """Remove what writers that died left: staging areas whose lock is free, and entry
        directories whose pending record is there, whose lock is free and that have no row."""
        staging.remove_dead(self.layout, self.remove, self.progress)
        pending.remove_dead(
            self.layout,
            lambda path_name: self.get(path_name) is not None,
            self.remove,
            self.progress,
        )

    def remove(self, path: Path) -> None:
        """Delete ``path`` (a tree, file or symlink) inside the store; never a path outside
        it, never through a symbolic link (:func:`lockbox.fs.remove_tree`)."""
        path = Path(os.path.abspath(path))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise StoreError(
                f"refusing to remove {path}: it is outside the store at {self.root}"
            ) from None
        if not relative.parts:
            raise StoreError(f"refusing to remove the store {self.root} itself")
        current = self.root
        for part in relative.parts[:-1]:
            current = current / part
            if os.path.islink(current):
                raise StoreError(f"refusing to remove {path}: {current} is a symbolic link")
        fs.remove_tree(path)

    # Reading --------------------------------------------------------------------------------
    def get(self, path_name: str) -> Entry | None:
        """The registered entry with this directory name, if any."""
        return self.database.get(path_name)

    def entries(self) -> list[Entry]:
        """Every registered entry, sorted by kind and name."""
        return self.database.entries()

    def latest(self, kind: str, name: str) -> Entry | None:
        """The most recently registered entry of this kind and name, if any."""
        return self.database.latest(kind, name)

    def find_content(self, kind: str, name: str, nar: Sha256) -> Entry | None:
        """The content-addressed entry with this NAR hash, if registered."""
        return self.get(f"{content_digest(kind, name, nar)}-{name}")

    def find_inputs(self, kind: str, name: str, inputs: Mapping[str, object]) -> Entry | None:
        """The input-addressed entry built from exactly these inputs, if registered."""
        return self.get(f"{inputs_digest(kind, name, inputs)}-{name}")

    def resolve(self, reference: str) -> Entry:
        """An entry named by its directory name, its path, or a unique prefix of either."""
        candidate = Path(reference).name if "/" in reference else reference
        entry = self.get(candidate)
        if entry is not None:
            return entry
        matches = [e for e in self.entries() if e.path_name.startswith(candidate)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no entry {reference!r} in the store at {self.root}")
        names = ", ".join(e.path_name for e in matches)
        raise StoreError(f"{reference!r} matches several entries: {names}")

    def answers(self, entry: Entry) -> dict[str, Mapping[str, object]]:
        """Every set of inputs a build made ``entry`` from: inputs key → what the build
        recorded (its toolchain…). A content-addressed entry answers a lookup only for
        inputs that built it."""
        return self.database.answers(entry.path_name)

    def remember_answer(self, entry: Entry, inputs_key: str, record: Mapping[str, object]) -> None:
        """Record that a build from ``inputs_key`` made ``entry``, and what it used."""
        self.database.remember_answer(entry.path_name, inputs_key, record)

    def scanned_files(self, roots: str) -> dict[tuple[int, int, int], str]:
        """Sealed files that a layer build read and found free of the build-path ``roots``
        (a digest): (device, inode, size) → their RECORD hash. uv hardlinks the same files
        from the store's cache into every build, so a rebuild need not read them again."""
        return self.database.scanned_files(roots)

    def remember_scanned(self, roots: str, files: Iterable[tuple[int, int, int, str]]) -> None:
        """Record sealed files found clean: (device, inode, size, RECORD hash) each."""
        self.database.remember_scanned(roots, files)

    @property
    def work_dir(self) -> Path:
        """The store's own working directory (``.lockbox``): staging areas, locks, and the
        uv cache the dependency phase keeps here so that it can hardlink from it."""
        return self.layout.meta

    # Writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh, empty directory inside the store's tmp dir for a writer to fill.

        It is removed on exit unless :meth:`register` moved it into place. While it exists
        its user holds a lock, so only the staging area of a process that died is ever
        removed by another (:meth:`open`)."""
        with staging.staging(self.layout, self.remove) as stage:
            yield stage

    def add_tree(
        self,
        source: Path,
        *,
        name: str,
        kind: str,
        inputs: Mapping[str, object] | None = None,
        references: Iterable[str] = (),
        root: str | None = None,
    ) -> Entry:
        """Copy ``source`` into the store as a new entry (or return the identical one that
        is already there). With ``inputs`` the entry is input-addressed, otherwise
        content-addressed. With ``root`` it is also made a garbage-collection root."""
        if not os.path.lexists(source):
            raise StoreError(f"cannot add {source}: no such file or directory")
        with self.staging() as stage:
            content = stage / "content"
            try:
                fs.copy_tree(source, content)
            except shutil.SpecialFileError as error:
                raise StoreError(
                    f"cannot store {error.filename}: only regular files, directories and "
                    "symlinks can be stored"
                ) from None
            return self.register(
                content, name=name, kind=kind, inputs=inputs, references=references, root=root
            )

    def register(
        self,
        staged: Path,
        *,
        name: str,
        kind: str,
        inputs: Mapping[str, object] | None = None,
        references: Iterable[str] = (),
        root: str | None = None,
        metadata: Mapping[str, object] | None = None,
        nar: NarInfo | None = None,
    ) -> Entry:
        """Make the fully written tree ``staged`` (inside a :meth:`staging` dir) an entry.

        ``metadata`` says what the entry was made from or what its build found; a
        content-addressed entry records it where an input-addressed one records its inputs,
        which then hold it under ``metadata``. ``nar`` is the tree's NAR hash and
        size when the caller has just computed them.

        The tree is normalised (read-only, fixed mtimes), fsynced, hashed, renamed into place
        and recorded. If another writer registered the same entry first, that one is kept
        and returned, and ``staged`` is discarded: both writers succeed. With ``root`` the
        entry is made a garbage-collection root before a collection could see it."""
        refs = self._checked(name, kind, root, references)
        seals.seal_tree(staged)
        if nar is None:
            nar = nar_hash(staged)
        if inputs is None:
            addressing, digest = "content", content_digest(kind, name, nar.sha256)
            recorded_inputs: Mapping[str, object] = metadata or {}
        else:
            addressing, digest = "inputs", inputs_digest(kind, name, inputs)
            # What the build found out (e.g. which host libraries it bundled) is kept beside
            # the inputs; it is not part of the digest.
            recorded_inputs = {**inputs, "metadata": metadata} if metadata else inputs
        path_name = f"{digest}-{name}"
        final = self.layout.entry(path_name)
        with entry_lock(self.layout, path_name):
            existing = self.get(path_name)
            if existing is not None:
                if existing.nar_hash != nar.sha256:
                    self.progress.warning(
                        f"{path_name} was already registered with different content "
                        f"({existing.nar_hash}, this build gave {nar.sha256}); "
                        "the build may not be deterministic — keeping the registered one"
                    )
                self.progress.debug(f"{path_name} is already in the store")
                if root is not None:
                    self.add_root(root, existing)
                return existing
            if os.path.lexists(final):
                if not pending.recorded(self.layout, path_name):
                    raise StoreError(
                        f"{final} is in the store but not registered, and lockbox cannot tell "
                        "that it made it; move it out of the store and try again"
                    )
                self.remove(final)  # a writer died after its rename: its record says so
            pending.write(self.layout, path_name)
            fs.rename(staged, final)
            fs.sync_directory(self.root)
            if final.is_dir() and not final.is_symlink():
                os.chmod(final, 0o555)
            entry = Entry(
                path=final,
                kind=kind,
                name=name,
                nar_hash=nar.sha256,
                nar_size=nar.size,
                addressing=addressing,
                inputs=dict(recorded_inputs),
                references=refs,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self.database.insert(entry)
            seals.remember(self.database, entry)
            pending.drop(self.layout, path_name)
            if root is not None:
                self.add_root(root, entry)
        self.progress.debug(f"registered {final}")
        return entry

    def _checked(
        self, name: str, kind: str, root: str | None, references: Iterable[str]
    ) -> tuple[str, ...]:
        """The sorted references of a new entry, once its names, kind and references are
        checked."""
        check_name(name)
        if root is not None:
            check_name(root)
        if kind not in KINDS:
            raise StoreError(f"unknown entry kind {kind!r}; expected one of {', '.join(KINDS)}")
        refs = tuple(sorted(dict.fromkeys(references)))
        for ref in refs:
            if self.get(ref) is None:
                raise StoreError(f"entry {name} refers to {ref}, which is not in the store")
        return refs

    def keep_aside(self, staged: Path, name: str, nar: Sha256) -> Path:
        """Keep a built tree that will not be registered (its hash was not the declared
        one) under ``.lockbox/rejected/``, replacing an earlier one of the same name, so
        that it can be compared with what was expected. It is never an entry."""
        check_name(name)
        rejected = self.layout.rejected
        rejected.mkdir(exist_ok=True)
        final = rejected / f"{nar.base32[:32]}-{name}"
        for old in rejected.glob(f"*-{name}"):
            self.remove(old)
        seals.seal_tree(staged)
        fs.rename(staged, final)
        return final

    def rejected(self, name: str) -> Path | None:
        """The tree :meth:`keep_aside` kept for ``name``, if any."""
        found = sorted(self.layout.rejected.glob(f"*-{name}"))
        return found[-1] if found else None

    def derived_dir(self, entry: Entry) -> Path:
        """Where files made from ``entry`` may be kept (an image layer of it): removed with
        the entry by :meth:`gc`. Whoever keeps something there checks it before use."""
        return self.layout.derived_dir(entry.path_name)

    # Roots ------------------------------------------------------------------------------------
    def add_root(self, root_name: str, entry: Entry) -> Path:
        """Protect ``entry`` (and what it references) from garbage collection under a name."""
        check_name(root_name)
        with self.staging() as stage:
            return roots.add(self.layout, root_name, entry, stage)

    def root_path(self, root_name: str) -> Path:
        """Where the root named ``root_name`` is (a symbolic link to its entry)."""
        return self.layout.gc_root(root_name)

    def remove_root(self, root_name: str) -> None:
        roots.remove(self.layout, root_name)

    def roots(self) -> dict[str, str]:
        """Root name -> path name of the entry it protects (which may be gone)."""
        return roots.read(self.layout)

    def live(self) -> set[str]:
        """Path names reachable from the roots through references."""
        return roots.live(self.entries(), self.roots())

    # Checking and collecting --------------------------------------------------------------
    def seal(self, entry: Entry) -> str | None:
        """The seal recorded for ``entry`` (:func:`lockbox.store.records.tree_seal`), if any."""
        return self.database.seal(entry.path_name)

    def check_sealed(self, *entries: Entry) -> None:
        """Fail unless each of ``entries`` is as it was registered, before lockbox uses it
        (:func:`lockbox.store.seals.check`)."""
        seals.check(self.database, entries, self.progress)

    def verify(self) -> VerifyReport:
        """Re-hash every registered entry and compare with its recorded NAR hash."""
        return verify.verify(self)

    def unknown(self) -> list[Path]:
        """Files in the store that lockbox did not make, or cannot prove it made; never
        removed (:func:`lockbox.store.verify.unknown`)."""
        return verify.unknown(self)

    def gc(self, dry_run: bool = False, timeout: float | None = None) -> GcReport:
        """Remove every entry that no root reaches (:func:`lockbox.store.gc.collect`)."""
        return gc.collect(self, dry_run, timeout)

    def remove_corrupted(self, corrupted: Iterable[Entry]) -> list[Entry]:
        """Remove ``corrupted`` entries and what needs them
        (:func:`lockbox.store.gc.remove_corrupted`); returns what was removed."""
        return gc.remove_corrupted(self, corrupted)
