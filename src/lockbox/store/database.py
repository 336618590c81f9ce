"""The store's database: what is known of every registered entry, in SQLite.

One row per entry (kind, name, NAR hash and size, addressing, inputs, references, creation
time), with what goes with it: the seal of its tree (:mod:`lockbox.store.seals`), which
inputs built a content-addressed entry, and the files layer builds found clean. Every row
read becomes a path, so a row naming anything but an entry directory of this store is
refused here. Each commit that makes something visible is one step (:func:`lockbox.fs.step`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from lockbox import fs
from lockbox.errors import StoreError
from lockbox.hashes import Sha256
from lockbox.store.entries import Entry, canonical_json, is_path_name
from lockbox.store.layout import Layout

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

_COLUMNS = "path_name, kind, name, nar_hash, nar_size, addressing, inputs, refs, created"


class Database:
    """The open database of the store laid out as ``paths``."""

    def __init__(self, paths: Layout) -> None:
        """Open it, making (or upgrading) its schema if needed."""
        self._paths = paths
        self._db = _connect(paths)

    def close(self) -> None:
        self._db.close()

    # Entries --------------------------------------------------------------------------------
    def get(self, path_name: str) -> Entry | None:
        """The registered entry with this directory name, if any."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE path_name = ?", (path_name,)
        ).fetchone()
        return self._entry(row) if row else None

    def entries(self) -> list[Entry]:
        """Every registered entry, sorted by kind and name."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM entries ORDER BY kind, name, path_name"
        ).fetchall()
        return [self._entry(row) for row in rows]

    def latest(self, kind: str, name: str) -> Entry | None:
        """The most recently registered entry of this kind and name, if any."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE kind = ? AND name = ? "
            "ORDER BY created DESC, rowid DESC LIMIT 1",
            (kind, name),
        ).fetchone()
        return self._entry(row) if row else None

    def insert(self, entry: Entry) -> None:
        """Register ``entry``: the step that makes it visible."""
        fs.step(f"register {entry.path_name}")
        with self._db:
            self._db.execute(
                f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.path_name,
                    entry.kind,
                    entry.name,
                    entry.nar_hash.sri,
                    entry.nar_size,
                    entry.addressing,
                    canonical_json(dict(entry.inputs)),
                    json.dumps(list(entry.references)),
                    entry.created,
                ),
            )

    def delete(self, path_name: str) -> None:
        """Unregister the entry ``path_name``, with its answers and its seal."""
        fs.step(f"unregister {path_name}")
        with self._db:
            self._db.execute("DELETE FROM entries WHERE path_name = ?", (path_name,))
            self._db.execute("DELETE FROM answers WHERE path_name = ?", (path_name,))
            self._db.execute("DELETE FROM seals WHERE path_name = ?", (path_name,))

    def _entry(self, row: tuple[object, ...]) -> Entry:
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
                path=self._paths.entry(path_name),
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
            f"the store database {self._paths.database} is corrupt: in the row "
            f"{path_name!r}, {why}; nothing was changed. Restore the database or delete that "
            "row, then run `lockbox store verify`"
        )

    # Answers --------------------------------------------------------------------------------
    def answers(self, path_name: str) -> dict[str, Mapping[str, object]]:
        """Every set of inputs a build made the entry ``path_name`` from: inputs key → what
        the build recorded."""
        rows = self._db.execute(
            "SELECT inputs_key, record FROM answers WHERE path_name = ?", (path_name,)
        ).fetchall()
        return {key: json.loads(record) for key, record in rows}

    def remember_answer(
        self, path_name: str, inputs_key: str, record: Mapping[str, object]
    ) -> None:
        """Record that a build from ``inputs_key`` made the entry ``path_name``."""
        fs.step(f"answer {path_name}")
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (path_name, inputs_key, record) VALUES (?, ?, ?)",
                (path_name, inputs_key, canonical_json(record)),
            )

    # Files found clean ----------------------------------------------------------------------
    def scanned_files(self, roots: str) -> dict[tuple[int, int, int], str]:
        """Sealed files found free of the build-path ``roots`` (a digest): (device, inode,
        size) → their RECORD hash."""
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

    def forget_scanned(self) -> None:
        """Forget every file found clean (they are named by inode: after the files they
        were went, another could take the inode)."""
        with self._db:
            self._db.execute("DELETE FROM scanned")

    # Seals ----------------------------------------------------------------------------------
    def seal(self, path_name: str) -> str | None:
        """The seal recorded for the entry ``path_name``, if any."""
        row = self._db.execute(
            "SELECT seal FROM seals WHERE path_name = ?", (path_name,)
        ).fetchone()
        return str(row[0]) if row else None

    def remember_seal(self, path_name: str, seal: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO seals (path_name, seal) VALUES (?, ?)", (path_name, seal)
            )


def _connect(paths: Layout) -> sqlite3.Connection:
    path = paths.database
    try:
        db = sqlite3.connect(path, timeout=120, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in range(_SCHEMA_VERSION + 1):
            raise StoreError(
                f"the store at {paths.root} has database schema {version}, "
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
