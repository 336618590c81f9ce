"""Where each part of a store is on disk: the one place their names are spelled.

Layout of a store rooted at ``ROOT``::

    ROOT/<digest>-<name>/         an entry: read-only, never changed once registered
    ROOT/.lockbox/store.toml      the marker: this directory is a store lockbox made
    ROOT/.lockbox/db.sqlite       metadata of every registered entry
    ROOT/.lockbox/gc.lock         shared by every command that has the store open,
                                  exclusive for garbage collection
    ROOT/.lockbox/locks/          one lock file per entry name, held while it is placed
    ROOT/.lockbox/pending/<name>  a writer's (or collector's) intent: ROOT/<name> may be on
                                  disk without being registered
    ROOT/.lockbox/tmp/<token>/    staging directories, each beside the lock its user holds
    ROOT/.lockbox/roots/<name>    garbage-collection roots: symlinks to entries
    ROOT/.lockbox/shortcuts/      records of lookups that answer repeated commands
                                  (lockbox.cli.shortcut); removed by every collection
    ROOT/.lockbox/derived/<entry> files made from an entry (its image layer), removed with it
    ROOT/.lockbox/key             the store's secret: signs the records kept beside the
                                  database (lockbox.store.records)
    ROOT/.lockbox/needed/         records of the libraries ELF files need (lockbox.native.hostlibs)
    ROOT/.lockbox/rejected/       the last layer of each name whose hash was not the declared one
    ROOT/.lockbox/uv-cache/       the dependency phase's uv cache (lockbox.deps.install)
    ROOT/.lockbox/fetched/        files the dependency phase downloaded, by hash (lockbox.deps.fetch)
    ROOT/.lockbox/sources/        extra sources fetched by URL or from git (lockbox.deps.sources)
    ROOT/.lockbox/logs/           verification logs of applications (lockbox.assemble.app)
    ROOT/.lockbox/checks/         ``lockbox check``'s rebuilds (lockbox.check.rebuild)

:class:`Layout` gives these paths for one store. The names alone are for the modules that
run before anything else of lockbox is imported (:mod:`lockbox.cli.shortcut`,
:mod:`lockbox.store.records`) and work on path strings: this module imports nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported: see lockbox.cli.shortcut
if TYPE_CHECKING:
    from pathlib import Path

META = ".lockbox"
"""The store's working directory, in its root; everything but the entries is in it."""
MARKER = "store.toml"
DATABASE = "db.sqlite"
GC_LOCK = "gc.lock"
LOCKS = "locks"
PENDING = "pending"
TMP = "tmp"
ROOTS = "roots"
SHORTCUTS = "shortcuts"
DERIVED = "derived"
KEY = "key"
NEEDED = "needed"
REJECTED = "rejected"
UV_CACHE = "uv-cache"
FETCHED = "fetched"
SOURCES = "sources"
LOGS = "logs"
CHECKS = "checks"

LOCK_SUFFIX = ".lock"
"""What a lock file adds to the name of what it locks (an entry, a staging directory)."""
CREATING_SUFFIX = "-new-"
"""What the working directory of a store being made is named with, before its token:
``ROOT/.lockbox-new-<token>``, renamed to ``ROOT/.lockbox`` once complete."""


class Layout:
    """The paths of the store rooted at :attr:`root` (an absolute path)."""

    __slots__ = ("_root",)

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    @property
    def meta(self) -> Path:
        return self._root / META

    @property
    def marker(self) -> Path:
        return self.meta / MARKER

    @property
    def database(self) -> Path:
        return self.meta / DATABASE

    @property
    def gc_lock(self) -> Path:
        return self.meta / GC_LOCK

    @property
    def locks(self) -> Path:
        return self.meta / LOCKS

    @property
    def pending(self) -> Path:
        return self.meta / PENDING

    @property
    def tmp(self) -> Path:
        return self.meta / TMP

    @property
    def roots(self) -> Path:
        return self.meta / ROOTS

    @property
    def shortcuts(self) -> Path:
        return self.meta / SHORTCUTS

    @property
    def derived(self) -> Path:
        return self.meta / DERIVED

    @property
    def rejected(self) -> Path:
        return self.meta / REJECTED

    @property
    def uv_cache(self) -> Path:
        return self.meta / UV_CACHE

    @property
    def fetched(self) -> Path:
        return self.meta / FETCHED

    @property
    def sources(self) -> Path:
        return self.meta / SOURCES

    @property
    def logs(self) -> Path:
        return self.meta / LOGS

    @property
    def checks(self) -> Path:
        return self.meta / CHECKS

    def entry(self, path_name: str) -> Path:
        """Where the entry named ``path_name`` (``<digest>-<name>``) is."""
        return self._root / path_name

    def entry_lock(self, path_name: str) -> Path:
        """The lock held while the entry ``path_name`` is placed or collected."""
        return self.locks / f"{path_name}{LOCK_SUFFIX}"

    def pending_record(self, path_name: str) -> Path:
        """The record that ``ROOT/<path_name>`` may be on disk without being registered."""
        return self.pending / path_name

    def staging(self, token: str) -> Path:
        """The staging directory named ``token``."""
        return self.tmp / token

    def staging_lock(self, token: str) -> Path:
        """The lock its user holds while the staging directory ``token`` exists."""
        return self.tmp / f"{token}{LOCK_SUFFIX}"

    def gc_root(self, root_name: str) -> Path:
        """The garbage-collection root named ``root_name`` (a symbolic link to its entry)."""
        return self.roots / root_name

    def derived_dir(self, path_name: str) -> Path:
        """Where files made from the entry ``path_name`` are kept."""
        return self.derived / path_name

    def creating(self, token: str) -> Path:
        """The working directory of the store being made, before it is renamed into place."""
        return self._root / f"{META}{CREATING_SUFFIX}{token}"
