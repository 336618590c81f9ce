"""The store: adding, addressing, roots, garbage collection, verification, leftovers."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from lockbox.errors import StoreError
from lockbox.store.nar import nar_hash
from lockbox.store.store import Store, content_digest, default_store_dir, inputs_digest


def make_tree(root: Path, seed: str = "a") -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "file.txt").write_text(f"content {seed}\n")
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "sub" / "run.sh", 0o755)
    os.symlink("../file.txt", root / "sub" / "link")
    (root / "empty").mkdir()
    return root


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_add_tree_copies_seals_and_records(store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    entry = store.add_tree(source, name="demo", kind="source")

    assert entry.path.parent == store.root
    assert entry.path.name == f"{content_digest('source', 'demo', entry.nar_hash)}-demo"
    assert entry.nar_hash == nar_hash(source).sha256
    assert entry.nar_size == nar_hash(source).size
    assert (entry.path / "sub" / "link").is_symlink()
    assert os.readlink(entry.path / "sub" / "link") == "../file.txt"
    assert stat.S_IMODE(os.stat(entry.path / "file.txt").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(entry.path / "sub" / "run.sh").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(entry.path / "sub").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o555
    assert os.lstat(entry.path / "file.txt").st_mtime == 1
    assert store.get(entry.path_name) == entry
    assert list(store.root.joinpath(".lockbox", "tmp").iterdir()) == []


def test_adding_the_same_content_twice_reuses_the_entry(store: Store, tmp_path: Path) -> None:
    first = store.add_tree(make_tree(tmp_path / "one"), name="demo", kind="source")
    second = store.add_tree(make_tree(tmp_path / "two"), name="demo", kind="source")
    assert first == second
    assert len(store.entries()) == 1


def test_different_content_or_name_gives_different_entries(store: Store, tmp_path: Path) -> None:
    a = store.add_tree(make_tree(tmp_path / "a", "a"), name="demo", kind="source")
    b = store.add_tree(make_tree(tmp_path / "b", "b"), name="demo", kind="source")
    c = store.add_tree(make_tree(tmp_path / "c", "a"), name="other", kind="source")
    assert len({a.path, b.path, c.path}) == 3


def test_a_single_file_can_be_an_entry(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "tool.sh"
    source.write_text("#!/bin/sh\n")
    os.chmod(source, 0o755)
    entry = store.add_tree(source, name="tool.sh", kind="source")
    assert entry.path.is_file()
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o555
    assert entry.nar_hash == nar_hash(source).sha256


def test_input_addressed_entries_are_found_by_their_inputs(store: Store, tmp_path: Path) -> None:
    inputs = {"lock": "sha256-x", "python": "3.13.0"}
    entry = store.add_tree(make_tree(tmp_path / "a"), name="app", kind="app", inputs=inputs)
    assert entry.addressing == "inputs"
    assert entry.path.name.startswith(inputs_digest("app", "app", inputs))
    assert store.find_inputs("app", "app", dict(reversed(inputs.items()))) == entry
    assert store.find_inputs("app", "app", {**inputs, "python": "3.12.0"}) is None


def test_find_content_by_declared_hash(store: Store, tmp_path: Path) -> None:
    entry = store.add_tree(make_tree(tmp_path / "a"), name="deps", kind="deps")
    assert store.find_content("deps", "deps", entry.nar_hash) == entry
    assert store.find_content("deps", "other", entry.nar_hash) is None


def test_references_must_exist(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not in the store"):
        store.add_tree(make_tree(tmp_path / "a"), name="app", kind="app", references=["nope-x"])
    assert store.entries() == []


def test_special_files_and_bad_names_are_refused(store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "a")
    os.mkfifo(source / "fifo")
    with pytest.raises(StoreError, match="only regular files, directories and symlinks"):
        store.add_tree(source, name="demo", kind="source")
    with pytest.raises(StoreError, match="invalid entry name"):
        store.add_tree(tmp_path / "a" / "file.txt", name="../escape", kind="source")
    with pytest.raises(StoreError, match="unknown entry kind"):
        store.add_tree(tmp_path / "a" / "file.txt", name="f", kind="nonsense")
    assert store.entries() == []
    assert list(store.root.joinpath(".lockbox", "tmp").iterdir()) == []


def test_gc_keeps_roots_and_their_references(store: Store, tmp_path: Path) -> None:
    dep = store.add_tree(make_tree(tmp_path / "d", "d"), name="deps", kind="deps")
    app = store.add_tree(
        make_tree(tmp_path / "a", "a"),
        name="app",
        kind="app",
        inputs={"x": 1},
        references=[dep.path_name],
        root="myapp",
    )
    loose = store.add_tree(make_tree(tmp_path / "l", "l"), name="loose", kind="source")

    dry = store.gc(dry_run=True)
    assert [e.path_name for e in dry.removed] == [loose.path_name]
    assert loose.path.exists()

    report = store.gc()
    assert [e.path_name for e in report.removed] == [loose.path_name]
    assert report.kept == 2
    assert not loose.path.exists()
    assert {e.path_name for e in store.entries()} == {app.path_name, dep.path_name}

    for entry in (dep, loose):  # what is derived from an entry goes with it, and only then
        if entry is not loose:
            store.derived_dir(entry).mkdir(parents=True)
            (store.derived_dir(entry) / "layer.blob").write_bytes(b"x")
    shortcuts = store.work_dir / "shortcuts"
    shortcuts.mkdir()
    store.gc()
    assert (store.derived_dir(dep) / "layer.blob").exists()
    assert not shortcuts.exists()  # records of lookups go with every collection

    store.remove_root("myapp")
    store.gc()
    assert store.entries() == []
    assert not app.path.exists() and not dep.path.exists()
    assert not store.derived_dir(dep).exists()


def test_verify_reports_corrupted_and_missing_entries(store: Store, tmp_path: Path) -> None:
    good = store.add_tree(make_tree(tmp_path / "g", "g"), name="good", kind="source")
    bad = store.add_tree(make_tree(tmp_path / "b", "b"), name="bad", kind="source")
    gone = store.add_tree(make_tree(tmp_path / "m", "m"), name="gone", kind="source")
    assert store.verify().ok

    os.chmod(bad.path, 0o755)
    os.chmod(bad.path / "file.txt", 0o644)
    (bad.path / "file.txt").write_text("tampered\n")
    os.chmod(gone.path, 0o755)
    for child in sorted(gone.path.rglob("*"), reverse=True):
        os.chmod(child.parent, 0o755)
    import shutil

    shutil.rmtree(gone.path)

    report = store.verify()
    assert not report.ok
    assert [entry.path_name for entry, _ in report.corrupted] == [bad.path_name]
    assert report.corrupted[0][1] == nar_hash(bad.path).sha256
    assert [entry.path_name for entry in report.missing] == [gone.path_name]
    assert report.checked == 3
    assert good.path.exists()


def test_open_removes_leftovers_of_dead_writers(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    # A writer that died after its rename but before its commit: its pending record says so.
    unregistered = root / "0000000000000000000000000000000a-demo"
    make_tree(unregistered)
    os.chmod(unregistered / "sub", 0o555)
    (root / ".lockbox" / "pending" / unregistered.name).touch()
    # A writer that died while staging: a directory whose lock nobody holds.
    orphan = root / ".lockbox" / "tmp" / ("de" * 16)
    make_tree(orphan)
    (root / ".lockbox" / "tmp" / f"{'de' * 16}.lock").touch()
    # A live writer: its staging lock is held.
    live = root / ".lockbox" / "tmp" / ("ca" * 16)
    live.mkdir()
    fd = os.open(root / ".lockbox" / "tmp" / f"{'ca' * 16}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        Store.open(root).close()
    finally:
        os.close(fd)
    assert not unregistered.exists()
    assert not orphan.exists()
    assert not (root / ".lockbox" / "tmp" / f"{'de' * 16}.lock").exists()
    assert not (root / ".lockbox" / "pending" / unregistered.name).exists()
    assert live.exists()


def test_store_location_defaults() -> None:
    assert default_store_dir({"LOCKBOX_STORE": "/x/y"}) == Path("/x/y")
    assert default_store_dir({"XDG_DATA_HOME": "/d"}) == Path("/d/lockbox/store")
    assert default_store_dir({}) == Path.home() / ".local/share/lockbox/store"


def test_an_unusable_store_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the store"):
        Store.open(blocker / "store")


def test_scanned_files_are_remembered_per_set_of_roots(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    store.remember_scanned("roots-a", [(1, 2, 3, "sha256=x"), (1, 4, 5, "sha256=y")])
    store.remember_scanned("roots-a", [(1, 2, 3, "sha256=z")])
    assert store.scanned_files("roots-a") == {(1, 2, 3): "sha256=z", (1, 4, 5): "sha256=y"}
    assert store.scanned_files("roots-b") == {}


def test_a_store_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    Store.open(tmp_path / "store").close()
    db = sqlite3.connect(tmp_path / "store" / ".lockbox" / "db.sqlite")
    db.execute("DROP TABLE seals")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_text("x")
    with Store.open(tmp_path / "store") as store:
        entry = store.add_tree(tree, name="tree", kind="source")
        store.check_sealed(entry)
    db = sqlite3.connect(tmp_path / "store" / ".lockbox" / "db.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM seals").fetchone()[0] == 1
