"""The store: a directory of immutable, hashed entries and the database that describes them.

Where each of its parts is on disk is :mod:`lockbox.store.layout`.

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
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import time
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lockbox import default_store, fs
from lockbox.errors import StoreCorrupted, StoreError
from lockbox.hashes import Sha256, nix_base32_encode
from lockbox.progress import Progress, silent
from lockbox.store import layout, records
from lockbox.store.layout import Layout
from lockbox.store.nar import NarInfo, nar_hash

remove_tree = fs.remove_tree
"""Kept importable from here for :mod:`lockbox.image.oci`, which still imports it so."""

KINDS = ("source", "toolchain", "python", "deps", "bytecode", "libraries", "app")
"""What an entry can be: an imported tree, a build root of Debian packages, an interpreter, a dependency layer, the compiled
bytecode of a dependency layer, an app."""

_SCHEMA_VERSION = 2  # 2 added the seals table
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path_name TEXT PRIMARY KEY,   -- "<digest>-<name>", the directory name
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    nar_hash TEXT NOT NULL,       -- SRI
    nar_size INTEGER NOT NULL,
    addressing TEXT NOT NULL,     -- "content" or "inputs"
    inputs TEXT NOT NULL,         -- canonical JSON
    refs TEXT NOT NULL,           -- JSON list of path names of other entries
    created TEXT NOT NULL         -- ISO 8601, UTC; metadata only, never in an output
);
CREATE INDEX IF NOT EXISTS entries_by_hash ON entries (kind, name, nar_hash);
CREATE TABLE IF NOT EXISTS scanned (  -- sealed files a layer build read and found clean
    roots TEXT NOT NULL,          -- digest of the build-path roots they were scanned for
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    record_hash TEXT NOT NULL,    -- "sha256=<urlsafe base64>", as in a RECORD
    PRIMARY KEY (roots, dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers (  -- which inputs built a content-addressed entry
    path_name TEXT NOT NULL,
    inputs_key TEXT NOT NULL,     -- digest of the inputs a build started from
    record TEXT NOT NULL,         -- canonical JSON: what that build found it used
    PRIMARY KEY (path_name, inputs_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seals (  -- what an entry's tree looked like once registered
    path_name TEXT PRIMARY KEY,
    seal TEXT NOT NULL            -- lockbox.store.records.tree_seal of the entry's directory
) WITHOUT ROWID;
"""

_FORMAT = 1
_MARKER_TEXT = f"""\
# A lockbox store: lockbox made this directory and alone changes what is in it.
format = {_FORMAT}
"""
_CREATING = re.compile(re.escape(layout.META + layout.CREATING_SUFFIX) + "[0-9a-f]{32}")
"""A store being created: its metadata directory before it is renamed into place."""
_DIGEST_BYTES = 20  # 32 base-32 characters, as Nix store path digests
_PATH_NAME = re.compile(r"[0123456789abcdfghijklmnpqrsvwxyz]{32}-(?!\.)[A-Za-z0-9+\-._?=]{1,200}")
"""The name of an entry in the store's root: ``<digest>-<name>``, never a path."""
_TOKEN = re.compile(r"[0-9a-f]{32}")
"""The name of a staging directory (its lock file adds ``.lock``)."""

_open_stores: dict[tuple[int, int], int] = {}
"""How many :class:`Store` objects of this process have each store open, by the device and
inode of its gc lock: a collection must not wait for a lock its own process holds."""


def is_path_name(text: str) -> bool:
    """Whether ``text`` is a store entry's directory name (``<digest>-<name>``)."""
    return _PATH_NAME.fullmatch(text) is not None


def default_store_dir(environ: Mapping[str, str]) -> Path:
    """Where the store lives unless ``--store`` says otherwise (:func:`lockbox.default_store`)."""
    return Path(default_store(environ))


@dataclass(frozen=True)
class Entry:
    """A registered store entry."""

    path: Path
    """Absolute path of the entry directory (or file)."""
    kind: str
    """One of :data:`KINDS`."""
    name: str
    """Human-readable name; the directory is ``<digest>-<name>``."""
    nar_hash: Sha256
    """SHA-256 of the entry's NAR serialisation."""
    nar_size: int
    """Size of the entry's NAR serialisation in bytes."""
    addressing: str
    """``content`` (digest from the NAR hash) or ``inputs`` (digest from the inputs)."""
    inputs: Mapping[str, object] = field(default_factory=dict)
    """What the entry was made from (lock hash, interpreter, recipe, …)."""
    references: tuple[str, ...] = ()
    """Path names of the other entries this one needs at run time."""
    created: str = ""
    """When the entry was registered (ISO 8601, UTC)."""

    @property
    def path_name(self) -> str:
        return self.path.name


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
    """Files in the store that lockbox did not make (:meth:`Store.unknown`): left alone."""

    @property
    def ok(self) -> bool:
        return not self.corrupted and not self.missing


@dataclass(frozen=True)
class GcReport:
    """What garbage collection removed, or would remove with ``dry_run``."""

    removed: tuple[Entry, ...]
    kept: int
    freed_nar_bytes: int
    dry_run: bool


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no insignificant white space: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(fingerprint: str) -> str:
    return nix_base32_encode(hashlib.sha256(fingerprint.encode()).digest()[:_DIGEST_BYTES])


def content_digest(kind: str, name: str, nar: Sha256) -> str:
    """Digest of a content-addressed entry: it depends only on kind, name and NAR hash."""
    return _digest(f"lockbox-store:1:content:{kind}:{name}:{nar.hex}")


def inputs_digest(kind: str, name: str, inputs: Mapping[str, object]) -> str:
    """Digest of an input-addressed entry: known before it is built, so a build with
    unchanged inputs is a lookup."""
    return _digest(f"lockbox-store:1:inputs:{kind}:{name}:{canonical_json(inputs)}")


def check_name(name: str) -> str:
    """Refuse names that would not make a single, portable directory name."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=")
    if not name or name.startswith(".") or not set(name) <= allowed or len(name) > 200:
        raise StoreError(
            f"invalid entry name {name!r}: use letters, digits and + - . _ ? =, "
            "not starting with a dot, at most 200 characters"
        )
    return name


class Store:
    """An opened store. Open it with :meth:`Store.open`; close it (or use it as a context
    manager) when done, which lets garbage collection run."""

    def __init__(self, root: Path, progress: Progress) -> None:
        self.root = root
        self.progress = progress
        self.layout = Layout(root)
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
        self._gc_fd: int | None = self._hold_shared()
        try:
            self._db = self._connect()
        except BaseException:
            self._release()
            raise

    # Opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, progress: Progress = silent) -> Store:
        """Open the store at ``root``, creating it if ``root`` is missing or empty, and
        remove what writers that died left behind. A non-empty directory that is not a
        store is refused, never changed."""
        root = root.absolute()
        _claim(root)
        store = cls(root, progress)
        try:
            store._make_key()
            store._remove_leftovers()
        except BaseException:
            store.close()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        path = self.layout.database
        try:
            db = sqlite3.connect(path, timeout=120, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in range(_SCHEMA_VERSION + 1):
                raise StoreError(
                    f"the store at {self.root} has database schema {version}, "
                    f"this lockbox knows {_SCHEMA_VERSION}; use a matching lockbox"
                )
            if version < _SCHEMA_VERSION:
                # A new database, or an older one: the schema only ever adds tables.
                fs.step("create database" if version == 0 else "upgrade database")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open the store database {path}: {error}") from None
        return db

    def close(self) -> None:
        if self._gc_fd is not None:
            self._db.close()
            self._release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Locks ----------------------------------------------------------------------------------
    def _hold_shared(self) -> int:
        """Take the shared gc lock for the life of this object (waiting while a collection
        runs), and count this object among the process's holders."""
        fd = os.open(self.layout.gc_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress.info(f"waiting for the garbage collection of {self.root} to finish")
                fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        info = os.fstat(fd)
        self._gc_key = (info.st_dev, info.st_ino)
        _open_stores[self._gc_key] = _open_stores.get(self._gc_key, 0) + 1
        return fd

    def _release(self) -> None:
        fd, self._gc_fd = self._gc_fd, None
        if fd is None:
            return
        os.close(fd)
        count = _open_stores.get(self._gc_key, 0) - 1
        if count > 0:
            _open_stores[self._gc_key] = count
        else:
            _open_stores.pop(self._gc_key, None)

    @contextlib.contextmanager
    def _exclusive(self, timeout: float | None) -> Iterator[None]:
        """Turn this object's shared gc lock into an exclusive one until the block ends:
        wait (saying for how many) until no other command has the store open."""
        fd = self._gc_fd
        assert fd is not None, "the store is closed"
        if _open_stores.get(self._gc_key, 0) > 1:
            raise StoreError(
                f"this process has the store at {self.root} open more than once; "
                "collect garbage only through its one open store"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A refused conversion has dropped the shared lock: nothing is held meanwhile.
            others = _lock_holders(fd)
            what = (
                f"{others} other lockbox command{'s' if others != 1 else ''}"
                if others
                else "other lockbox commands"
            )
            self.progress.info(f"waiting for {what} using the store at {self.root} to finish")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        fcntl.flock(fd, fcntl.LOCK_SH)
                        raise StoreError(
                            f"{what} still have the store at {self.root} open after "
                            f"{timeout:g} s; collect garbage when they have finished"
                        ) from None
                    time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def _flock(self, path: Path, operation: int) -> Iterator[bool]:
        """Hold an flock on ``path``; yields False if a non-blocking attempt failed.
        The kernel drops the lock when the process dies, even by SIGKILL."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise StoreError(
                f"cannot lock {path}: {error.strerror}; lockbox made no such "
                "file there: move it out of the store"
            ) from None
        try:
            try:
                fcntl.flock(fd, operation)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _entry_lock(
        self, path_name: str, blocking: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        return self._flock(self.layout.entry_lock(path_name), flags)

    # Intents ----------------------------------------------------------------------------------
    def _pending(self, path_name: str) -> Path:
        return self.layout.pending_record(path_name)

    def _write_pending(self, path_name: str) -> None:
        """Record, durably, that ``ROOT/<path_name>`` may soon be on disk unregistered: the
        proof that lockbox made it, should its writer die. Called with the entry lock held."""
        fs.step(f"pending {path_name}")
        fd = os.open(self._pending(path_name), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.close(fd)
        fs.sync_directory(self.layout.pending)

    def _drop_pending(self, path_name: str) -> None:
        fs.step(f"settled {path_name}")
        self._pending(path_name).unlink(missing_ok=True)

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
    def _row_to_entry(self, row: tuple[object, ...]) -> Entry:
        """The entry a database row describes. Every row becomes a path here, so this is
        where a row naming anything but an entry directory of this store is refused."""
        path_name, kind, name, nar, size, addressing, inputs, refs, created = row
        if not isinstance(path_name, str) or not is_path_name(path_name):
            raise self._corrupt(path_name, "its path name is not <digest>-<name>")
        try:
            references = json.loads(str(refs))
            if not isinstance(references, list) or not all(
                isinstance(ref, str) and is_path_name(ref) for ref in references
            ):
                raise ValueError("a reference is not the path name of an entry")
            return Entry(
                path=self.root / path_name,
                kind=str(kind),
                name=str(name),
                nar_hash=Sha256.parse(str(nar)),
                nar_size=int(str(size)),
                addressing=str(addressing),
                inputs=json.loads(str(inputs)),
                references=tuple(references),
                created=str(created),
            )
        except (ValueError, TypeError) as error:
            raise self._corrupt(path_name, str(error)) from None

    def _corrupt(self, path_name: object, why: str) -> StoreError:
        return StoreError(
            f"the store database {self.layout.database} is corrupt: in the row "
            f"{path_name!r}, {why}; nothing was changed. Restore the database or delete that "
            "row, then run `lockbox store verify`"
        )

    _COLUMNS = "path_name, kind, name, nar_hash, nar_size, addressing, inputs, refs, created"

    def get(self, path_name: str) -> Entry | None:
        """The registered entry with this directory name, if any."""
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM entries WHERE path_name = ?", (path_name,)
        ).fetchone()
        return self._row_to_entry(row) if row else None

    def entries(self) -> list[Entry]:
        """Every registered entry, sorted by kind and name."""
        rows = self._db.execute(
            f"SELECT {self._COLUMNS} FROM entries ORDER BY kind, name, path_name"
        ).fetchall()
        return [self._row_to_entry(row) for row in rows]

    def find_content(self, kind: str, name: str, nar: Sha256) -> Entry | None:
        """The content-addressed entry with this NAR hash, if registered."""
        return self.get(f"{content_digest(kind, name, nar)}-{name}")

    def answers(self, entry: Entry) -> dict[str, Mapping[str, object]]:
        """Every set of inputs a build made ``entry`` from: inputs key → what the build
        recorded (its toolchain…). A content-addressed entry answers a lookup only for
        inputs that built it."""
        rows = self._db.execute(
            "SELECT inputs_key, record FROM answers WHERE path_name = ?", (entry.path_name,)
        ).fetchall()
        return {key: json.loads(record) for key, record in rows}

    def remember_answer(self, entry: Entry, inputs_key: str, record: Mapping[str, object]) -> None:
        """Record that a build from ``inputs_key`` made ``entry``, and what it used."""
        fs.step(f"answer {entry.path_name}")
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (path_name, inputs_key, record) VALUES (?, ?, ?)",
                (entry.path_name, inputs_key, canonical_json(record)),
            )

    def scanned_files(self, roots: str) -> dict[tuple[int, int, int], str]:
        """Sealed files that a layer build read and found free of the build-path ``roots``
        (a digest): (device, inode, size) → their RECORD hash. uv hardlinks the same files
        from the store's cache into every build, so a rebuild need not read them again."""
        rows = self._db.execute(
            "SELECT dev, ino, size, record_hash FROM scanned WHERE roots = ?", (roots,)
        ).fetchall()
        return {(dev, ino, size): record_hash for dev, ino, size, record_hash in rows}

    def remember_scanned(self, roots: str, files: Iterable[tuple[int, int, int, str]]) -> None:
        """Record sealed files found clean: (device, inode, size, RECORD hash) each."""
        # One transaction: the connection commits every statement on its own otherwise.
        fs.step("scanned files")
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO scanned (roots, dev, ino, size, record_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                ((roots, *row) for row in files),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def latest(self, kind: str, name: str) -> Entry | None:
        """The most recently registered entry of this kind and name, if any."""
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM entries WHERE kind = ? AND name = ? "
            "ORDER BY created DESC, rowid DESC LIMIT 1",
            (kind, name),
        ).fetchone()
        return self._row_to_entry(row) if row else None

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
        _seal(staged)
        fs.rename(staged, final)
        return final

    def rejected(self, name: str) -> Path | None:
        """The tree :meth:`keep_aside` kept for ``name``, if any."""
        found = sorted(self.layout.rejected.glob(f"*-{name}"))
        return found[-1] if found else None

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
        removed by another (:meth:`_remove_leftovers`)."""
        while True:
            token = uuid.uuid4().hex
            lock_path = self.layout.staging_lock(token)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Between the open and the flock, another process may have taken the fresh lock
            # file for a dead writer's and removed it: then this lock protects nothing.
            if fs.names_file(lock_path, fd):
                break
            os.close(fd)
        stage = self.layout.staging(token)
        try:
            stage.mkdir()
            yield stage
        finally:
            try:
                self.remove(stage)
                lock_path.unlink(missing_ok=True)
            finally:
                os.close(fd)

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
        check_name(name)
        if root is not None:
            check_name(root)
        if kind not in KINDS:
            raise StoreError(f"unknown entry kind {kind!r}; expected one of {', '.join(KINDS)}")
        refs = tuple(sorted(dict.fromkeys(references)))
        for ref in refs:
            if self.get(ref) is None:
                raise StoreError(f"entry {name} refers to {ref}, which is not in the store")
        _seal(staged)
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
        final = self.root / path_name
        with self._entry_lock(path_name):
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
                if not os.path.isfile(self._pending(path_name)):
                    raise StoreError(
                        f"{final} is in the store but not registered, and lockbox cannot tell "
                        "that it made it; move it out of the store and try again"
                    )
                self.remove(final)  # a writer died after its rename: its record says so
            self._write_pending(path_name)
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
            fs.step(f"register {path_name}")
            with self._db:
                self._db.execute(
                    f"INSERT INTO entries ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        path_name,
                        kind,
                        name,
                        nar.sha256.sri,
                        nar.size,
                        addressing,
                        canonical_json(dict(recorded_inputs)),
                        json.dumps(list(refs)),
                        entry.created,
                    ),
                )
            self._remember_seal(entry)
            self._drop_pending(path_name)
            if root is not None:
                self.add_root(root, entry)
        self.progress.debug(f"registered {final}")
        return entry

    # Roots ------------------------------------------------------------------------------------
    def add_root(self, root_name: str, entry: Entry) -> Path:
        """Protect ``entry`` (and what it references) from garbage collection under a name."""
        check_name(root_name)
        link = self.root_path(root_name)
        # Made in a staging directory, not beside the link (lockbox.fs.replacing): what a
        # writer killed here leaves is swept with its staging directory.
        with self.staging() as stage:
            os.symlink(entry.path, stage / "root")
            fs.step(f"root {root_name}")
            os.replace(stage / "root", link)
        return link

    def derived_dir(self, entry: Entry) -> Path:
        """Where files made from ``entry`` may be kept (an image layer of it): removed with
        the entry by :meth:`gc`. Whoever keeps something there checks it before use."""
        return self.layout.derived_dir(entry.path_name)

    def root_path(self, root_name: str) -> Path:
        """Where the root named ``root_name`` is (a symbolic link to its entry)."""
        return self.layout.gc_root(root_name)

    def remove_root(self, root_name: str) -> None:
        link = self.layout.gc_root(root_name)
        if not link.is_symlink():
            raise StoreError(f"there is no root named {root_name!r} in {self.root}")
        fs.step(f"unroot {root_name}")
        link.unlink()

    def roots(self) -> dict[str, str]:
        """Root name -> path name of the entry it protects (which may be gone)."""
        result = {}
        for link in sorted(self.layout.roots.iterdir()):
            if link.is_symlink() and not link.name.startswith("."):
                result[link.name] = Path(os.readlink(link)).name
        return result

    # Seals ---------------------------------------------------------------------------------
    def _make_key(self) -> None:
        """Give the store its key (:mod:`lockbox.store.records`) if it has none yet."""
        if records.store_key(str(self.layout.meta)) is None:
            self.progress.debug(f"cannot make the key of {self.root}: records are not kept")

    def _remember_seal(self, entry: Entry) -> None:
        """Record what ``entry``'s tree looks like now that it is sealed and in place."""
        seal = records.tree_seal(str(entry.path))
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO seals (path_name, seal) VALUES (?, ?)",
                (entry.path_name, seal),
            )

    def seal(self, entry: Entry) -> str | None:
        """The seal recorded for ``entry`` (:func:`lockbox.store.records.tree_seal`), if any."""
        row = self._db.execute(
            "SELECT seal FROM seals WHERE path_name = ?", (entry.path_name,)
        ).fetchone()
        return str(row[0]) if row else None

    def check_sealed(self, *entries: Entry) -> None:
        """Fail unless each of ``entries`` is as it was registered, before lockbox uses it.

        The cheap check first: the status of every path of the entry (name, inode, size,
        mtime, mode: :func:`lockbox.store.records.tree_seal`) against the seal recorded when it
        was registered. Only when they differ — a file written, replaced, added, removed or
        made writable, or the store copied elsewhere (new inodes) — is the entry re-hashed:
        the same NAR hash makes the new status the seal, another raises
        :class:`~lockbox.errors.StoreCorrupted`. An entry registered before seals were kept
        is re-hashed once. A file rewritten with its size kept and its mtime and mode put
        back is not noticed here; ``lockbox store verify`` re-hashes everything."""
        for entry in entries:
            try:
                found = records.tree_seal(str(entry.path))
            except OSError:
                raise StoreCorrupted(
                    f"the store entry {entry.path} is registered but missing; run "
                    f"`lockbox store verify` and `lockbox store verify --repair` to remove "
                    "it and what needs it, then build again"
                ) from None
            recorded = self.seal(entry)
            if recorded == found:
                continue
            self.progress.debug(
                f"re-hashing {entry.path_name}: its files changed status since it was registered"
                if recorded
                else f"re-hashing {entry.path_name}, registered without a seal"
            )
            nar = nar_hash(entry.path).sha256
            if nar != entry.nar_hash:
                raise StoreCorrupted(self._corruption(entry, nar))
            self._remember_seal(entry)

    def _corruption(self, entry: Entry, found: Sha256) -> str:
        """What to say of ``entry``, whose content hashes to ``found`` now."""
        changed = _unsealed_files(entry.path)
        if changed:
            shown = ", ".join(changed[:10]) + (
                f" and {len(changed) - 10} more" if len(changed) > 10 else ""
            )
            which = f"changed since: {shown}"
        else:
            which = "no file shows which changed (its mtime and mode were put back)"
        return (
            f"the store entry {entry.path} is corrupted: it was registered with NAR hash "
            f"{entry.nar_hash}, its content now hashes to {found}; {which}. Nothing was "
            "used from it. Run `lockbox store verify` to check the whole store, then "
            "`lockbox store verify --repair` to remove the corrupted entries and what needs "
            "them, and build again"
        )

    def remove_corrupted(self, corrupted: Iterable[Entry]) -> list[Entry]:
        """Remove ``corrupted`` entries (and the entries that reference them, which hardlink
        or run their files) with the roots that name them, so that a build makes them anew;
        returns what was removed. Waits for writers, as a collection does.

        A dependency layer's files are hardlinks of the store's uv cache (``uv-cache``):
        a file changed in one changed in the other, and a rebuild would link it again. So
        when a layer is removed the cache goes too (it is downloaded again), with the
        record of the files found clean, which names them by inode."""
        with self._exclusive(None):
            every = {entry.path_name: entry for entry in self.entries()}
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
            self.remove(self.layout.shortcuts)
            for root_name, target in self.roots().items():
                if target in doomed:
                    self.remove_root(root_name)
            removed = [every[name] for name in sorted(doomed)]
            for entry in removed:
                self._delete(entry)
            if any(entry.kind == "deps" for entry in removed):
                self.remove(self.layout.uv_cache)
                with self._db:
                    self._db.execute("DELETE FROM scanned")
            return removed

    # Checking and collecting --------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Re-hash every registered entry and compare with its recorded NAR hash."""
        corrupted: list[tuple[Entry, Sha256]] = []
        missing: list[Entry] = []
        entries = self.entries()
        for index, entry in enumerate(entries, 1):
            self.progress.debug(f"[{index}/{len(entries)}] checking {entry.path_name}")
            if not os.path.lexists(entry.path):
                missing.append(entry)
                continue
            found = nar_hash(entry.path).sha256
            if found != entry.nar_hash:
                corrupted.append((entry, found))
        return VerifyReport(len(entries), tuple(corrupted), tuple(missing), tuple(self.unknown()))

    def live(self) -> set[str]:
        """Path names reachable from the roots through references."""
        by_name = {entry.path_name: entry for entry in self.entries()}
        stack = [name for name in self.roots().values() if name in by_name]
        reachable: set[str] = set()
        while stack:
            name = stack.pop()
            if name in reachable:
                continue
            reachable.add(name)
            stack.extend(ref for ref in by_name[name].references if ref in by_name)
        return reachable

    def gc(self, dry_run: bool = False, timeout: float | None = None) -> GcReport:
        """Remove every entry that no root reaches. Waits (at most ``timeout`` seconds, if
        given) until no other command has the store open."""
        with self._exclusive(timeout):
            for root_name, target in self.roots().items():
                if self.get(target) is None:
                    self.progress.warning(f"root {root_name} points at {target}, which is gone")
            live = self.live()
            dead = tuple(e for e in self.entries() if e.path_name not in live)
            if not dry_run:
                # A record may name an entry about to go: none survives a collection.
                fs.step("forget shortcuts")
                self.remove(self.layout.shortcuts)
                for entry in dead:
                    self._delete(entry)
            return GcReport(dead, len(live), sum(e.nar_size for e in dead), dry_run)

    def _delete(self, entry: Entry) -> None:
        # The record first, then the row: a crash after either leaves an unregistered
        # directory that the record proves lockbox made, which the next open removes.
        self._write_pending(entry.path_name)
        fs.step(f"unregister {entry.path_name}")
        with self._db:
            self._db.execute("DELETE FROM entries WHERE path_name = ?", (entry.path_name,))
            self._db.execute("DELETE FROM answers WHERE path_name = ?", (entry.path_name,))
            self._db.execute("DELETE FROM seals WHERE path_name = ?", (entry.path_name,))
        fs.step(f"remove {entry.path_name}")
        self.remove(entry.path)
        self.remove(self.derived_dir(entry))
        self._drop_pending(entry.path_name)
        self.progress.debug(f"removed {entry.path}")

    def _registered(self) -> set[str]:
        return {entry.path_name for entry in self.entries()}

    def _remove_leftovers(self) -> None:
        """Remove what writers that died left: staging areas whose lock is free, and entry
        directories whose pending record is there, whose lock is free and that have no row."""
        tmp = self.layout.tmp
        tokens = {name.removesuffix(layout.LOCK_SUFFIX) for name in os.listdir(tmp)}
        for token in sorted(t for t in tokens if _TOKEN.fullmatch(t)):
            lock_path = self.layout.staging_lock(token)
            if os.path.lexists(lock_path) and not fs.is_plain_file(lock_path):
                continue  # not a lock lockbox made: unknown
            with self._flock(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
                if got:
                    stage = self.layout.staging(token)
                    if os.path.lexists(stage):
                        self.progress.debug(f"removing unfinished staging directory {stage}")
                    self.remove(stage)
                    lock_path.unlink(missing_ok=True)
        pending = self.layout.pending
        for path_name in sorted(os.listdir(pending)):
            if not is_path_name(path_name) or not fs.is_plain_file(pending / path_name):
                continue
            with self._entry_lock(path_name, blocking=False) as got:
                # Under the lock: its writer is gone, and has committed or never will.
                if got:
                    if self.get(path_name) is None and os.path.lexists(self.root / path_name):
                        self.progress.debug(
                            f"removing unregistered leftover {self.root / path_name}"
                        )
                        self.remove(self.root / path_name)
                    self._drop_pending(path_name)

    def unknown(self) -> list[Path]:
        """Files in the store that lockbox did not make, or cannot prove it made: in its
        root, anything but a registered entry or one a live writer is placing; in its
        staging and pending directories, anything not named as lockbox names them.
        They are never removed; ``lockbox store verify`` reports them."""
        registered = self._registered()
        pending = self.layout.pending
        placing = {
            name
            for name in os.listdir(pending)
            if is_path_name(name) and fs.is_plain_file(pending / name)
        }
        found = [
            child
            for child in sorted(self.root.iterdir())
            if child.name != layout.META and child.name not in registered | placing
        ]
        tmp = self.layout.tmp
        found += [
            tmp / name
            for name in sorted(os.listdir(tmp))
            if not _TOKEN.fullmatch(name.removesuffix(layout.LOCK_SUFFIX))
            or name.endswith(layout.LOCK_SUFFIX)
            and not fs.is_plain_file(tmp / name)
        ]
        found += [pending / name for name in sorted(os.listdir(pending)) if name not in placing]
        return found


def _claim(root: Path) -> None:
    """Make sure ``root`` is a store: one with a marker, or a missing or empty directory,
    made a store here. Refuses any other directory without touching it. Two processes
    creating one store take turns through an flock on ``root`` itself."""
    paths = Layout(root)
    try:
        if not os.path.lexists(root):
            root.mkdir(parents=True)
            os.chmod(root, 0o755)  # whatever the umask: no one else may write a store
        _check_owner(root)
        if os.path.isdir(paths.meta) and not os.path.islink(paths.meta):
            _check_owner(paths.meta)
        if _read_marker(root):
            return
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise StoreError(
            f"cannot create the store at {root}: {error.strerror}; "
            "choose another place with --store or LOCKBOX_STORE"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _read_marker(root):
            return
        names = sorted(os.listdir(root))
        meta = paths.meta
        if (
            layout.META in names
            and not meta.is_symlink()
            and meta.is_dir()
            and fs.is_plain_file(paths.database)
        ):
            # A store made before stores had a marker: its database says it is one. Taking
            # it over removes nothing: only what a pending record proves is ever removed.
            # Not lockbox.fs.write_atomically: the rename is one of the store's steps.
            staged = meta / f".{layout.MARKER}.{uuid.uuid4().hex}"
            staged.write_text(_MARKER_TEXT, encoding="utf-8")
            fs.rename(staged, paths.marker)
            return
        for name in names:
            if _CREATING.fullmatch(name):  # a creation that died (the flock is ours)
                fs.remove_tree(root / name)
        if any(not _CREATING.fullmatch(name) for name in names):
            raise StoreError(
                f"{root} is not a lockbox store (it has no {layout.META}/{layout.MARKER}) and is not "
                "empty; lockbox makes a store only in a new or empty directory, and never "
                "touches files it did not make: choose another place with --store or "
                "LOCKBOX_STORE"
            )
        creating = paths.creating(uuid.uuid4().hex)
        creating.mkdir(0o755)
        os.chmod(creating, 0o755)
        (creating / layout.MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        fs.sync_directory(creating)
        fs.rename(creating, meta)
        fs.sync_directory(root)
    except OSError as error:
        raise StoreError(
            f"cannot create the store at {root}: {error.strerror}; "
            "choose another place with --store or LOCKBOX_STORE"
        ) from None
    finally:
        os.close(fd)


def _check_owner(path: Path) -> None:
    """Refuse a store another user could change: ``path`` (the store or its working
    directory) must be a directory of the user running lockbox that no one else may write."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(
            f"{path} is not a directory; choose another place for the store "
            "with --store or LOCKBOX_STORE"
        )
    if info.st_uid != os.geteuid():
        raise StoreError(
            f"{path} belongs to user {info.st_uid}, not to the user running lockbox "
            f"({os.geteuid()}): another user could change what lockbox builds and runs; "
            "use a store of your own with --store or LOCKBOX_STORE"
        )
    if info.st_mode & 0o022:
        raise StoreError(
            f"{path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}), who "
            f"could change what lockbox builds and runs; make it yours alone "
            f"(chmod go-w {path}) or choose another store"
        )


def _read_marker(root: Path) -> bool:
    """Whether ``root`` has a store marker of the format this lockbox knows."""
    paths = Layout(root)
    meta, marker = paths.meta, paths.marker
    if meta.is_symlink() or not fs.is_plain_file(marker):
        return False
    try:
        found = tomllib.loads(marker.read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StoreError(f"cannot read the store marker {marker}: {error}") from None
    if found != _FORMAT:
        raise StoreError(
            f"the store at {root} has format {found!r}, this lockbox knows {_FORMAT}; "
            "use a matching lockbox or another --store"
        )
    return True


def _lock_holders(fd: int) -> int:
    """How many flocks are held on the file open as ``fd``, as ``/proc/locks`` lists them;
    0 where it cannot tell."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.readlines()
    except OSError:
        return 0
    return sum(
        1 for line in lines if "->" not in line and "FLOCK" in line and wanted in line.split()
    )


def _seal(top: Path) -> None:
    """Make a staged tree immutable and durable: files 0444 (0555 if executable), mtimes
    fixed at 1 s past the epoch, then everything on its file system flushed to disk at once.
    The top directory stays writable until it is renamed, because moving a directory
    rewrites its ``..``."""
    if stat.S_ISDIR(os.lstat(top).st_mode):
        # Bottom-up: a directory's mtime is fixed after what is in it.
        for directory, _, others in reversed(list(fs.walk(top))):
            for name in others:
                path = os.path.join(directory, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    mode = 0o555 if info.st_mode & stat.S_IXUSR else 0o444
                    if stat.S_IMODE(info.st_mode) != mode:
                        os.chmod(path, mode)
                if info.st_mtime != 1:
                    os.utime(path, (1, 1), follow_symlinks=False)
            os.utime(directory, (1, 1))
            if directory != os.fspath(top):
                os.chmod(directory, 0o555)
    elif top.is_file() or top.is_symlink():
        if top.is_file() and not top.is_symlink():
            info = os.stat(top)
            os.chmod(top, 0o555 if info.st_mode & stat.S_IXUSR else 0o444)
        os.utime(top, (1, 1), follow_symlinks=False)
    fs.sync_file_system(top)


def _unsealed_files(top: Path) -> list[str]:
    """The paths under ``top`` (a store entry) that no longer look sealed: writable, or
    with another mtime than the 1 s :func:`_seal` gives them. A guess at what changed: a
    file rewritten with its mtime and mode put back does not show."""
    if not stat.S_ISDIR(os.lstat(top).st_mode):
        return []
    found = []
    for directory, directories, others in fs.walk(top):
        for name in directories + others:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if info.st_mtime_ns != 1_000_000_000 or info.st_mode & 0o222:
                found.append(os.path.relpath(path, top))
    return sorted(found)
