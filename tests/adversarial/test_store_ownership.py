"""The store removes only what it can prove it created.

A folder that is not a store, an emptied database, a database row naming a path outside the
store, an entry replaced by a symlink, files lockbox never wrote: opening, verifying and
collecting must leave all of them alone and say what is wrong.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from lockbox.cli import main
from lockbox.errors import StoreError
from lockbox.fs import remove_tree
from lockbox.store.store import Store
from tests.unit.test_store import make_tree


def listing(root: Path) -> dict[str, bytes | str | None]:
    """Every path under ``root`` with its content (files), target (symlinks) or None."""
    found: dict[str, bytes | str | None] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = os.readlink(path)
            elif path.is_file():
                found[relative] = path.read_bytes()
            else:
                found[relative] = None
    return found


def run(capfd: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    capfd.readouterr()
    code = main([os.fspath(a) for a in argv])
    return code, capfd.readouterr().err


def test_an_existing_folder_is_refused_and_left_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    make_tree(folder / "2024")
    (folder / "notes.txt").write_text("keep me\n")
    before = listing(folder)
    code, err = run(capfd, "--store", folder, "store", "ls")
    assert code == 1
    assert str(folder) in err and "--store" in err and "not a lockbox store" in err
    assert "Traceback" not in err
    assert listing(folder) == before


def test_a_folder_with_a_lockbox_dir_that_is_not_a_store_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    (folder / ".lockbox" / "tmp" / "junk").mkdir(parents=True)
    (folder / "0000000000000000000000000000000a-demo").mkdir()
    before = listing(folder)
    with pytest.raises(StoreError, match="not a lockbox store"):
        Store.open(folder)
    assert listing(folder) == before


def test_an_empty_folder_becomes_a_store(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with Store.open(folder) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
    with Store.open(folder) as store:
        assert store.get(entry.path_name) is not None


def test_an_emptied_database_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
    with sqlite3.connect(root / ".lockbox" / "db.sqlite") as db:
        db.execute("DELETE FROM entries")
    with Store.open(root) as store:
        assert entry.path.exists()
        assert store.unknown() == [entry.path]
        store.gc()
    assert entry.path.exists()
    (root / ".lockbox" / "db.sqlite").unlink()
    with Store.open(root) as store:
        assert store.unknown() == [entry.path]
    assert entry.path.exists()


@pytest.mark.parametrize(
    "path_name",
    [
        "../victim",
        "../../victim",
        "/tmp/victim",
        "0000000000000000000000000000000a-x/../../victim",
        "",
        ".lockbox",
        "not-a-digest-name",
    ],
)
def test_a_row_naming_a_path_outside_is_a_corrupt_database(tmp_path: Path, path_name: str) -> None:
    root = tmp_path / "a" / "store"
    Store.open(root).close()
    victim = tmp_path / "a" / "victim"
    make_tree(victim)
    before = listing(tmp_path / "a" / "victim")
    with sqlite3.connect(root / ".lockbox" / "db.sqlite") as db:
        db.execute(
            "INSERT INTO entries VALUES (?, 'source', 'x', ?, 0, 'content', '{}', '[]', '')",
            (path_name, "sha256-" + "A" * 43 + "="),
        )
    with Store.open(root) as store:
        with pytest.raises(StoreError, match="corrupt") as raised:
            store.gc()
        assert repr(path_name) in str(raised.value)
        with pytest.raises(StoreError, match="corrupt"):
            store.verify()
    assert listing(tmp_path / "a" / "victim") == before


def test_a_reference_naming_a_path_outside_is_a_corrupt_database(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
    with sqlite3.connect(root / ".lockbox" / "db.sqlite") as db:
        db.execute(
            "UPDATE entries SET refs = ? WHERE path_name = ?", ('["../victim"]', entry.path_name)
        )
    with Store.open(root) as store, pytest.raises(StoreError, match="corrupt"):
        store.entries()


def test_an_entry_replaced_by_a_symlink_is_unlinked_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = make_tree(tmp_path / "outside")
    before = listing(outside)
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
        os.chmod(root, 0o755)
        remove_tree(entry.path)
        os.symlink(outside, entry.path)
        assert not store.verify().ok
        store.gc()
    assert not os.path.lexists(entry.path)
    assert listing(outside) == before


def test_a_symlink_inside_a_dead_entry_is_not_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside")
    before = listing(outside)
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    os.symlink(outside, source / "d" / "escape")
    os.symlink(outside / "file.txt", source / "file")
    with Store.open(tmp_path / "store") as store:
        entry = store.add_tree(source, name="demo", kind="source")
        store.gc()
    assert not entry.path.exists()
    assert listing(outside) == before


def test_remove_tree_does_not_follow_a_symlink_swapped_in_for_a_directory(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside")
    before = listing(outside)
    tree = make_tree(tmp_path / "tree")
    remove_tree(tree / "sub")  # a plain tree goes
    (tree / "sub").symlink_to(outside, target_is_directory=True)
    remove_tree(tree)
    assert not os.path.lexists(tree)
    assert listing(outside) == before


def test_unknown_files_are_reported_and_left_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    strays = [
        root / "0000000000000000000000000000000a-demo",
        root / "README",
        root / ".lockbox" / "tmp" / "not-a-token",
        root / ".lockbox" / "tmp" / "x.lock",
    ]
    make_tree(strays[0])
    strays[1].write_text("hello\n")
    make_tree(strays[2])
    strays[3].write_text("")
    before = listing(root)
    code, err = run(capfd, "--store", root, "store", "verify")
    assert code == 0, err
    for stray in strays:
        assert str(stray) in err
    assert "unknown" in err
    code, err = run(capfd, "--store", root, "gc")
    assert code == 0, err
    assert all(os.path.lexists(stray) for stray in strays)
    after = listing(root)
    assert {k: v for k, v in after.items() if not k.startswith(".lockbox/")} == {
        k: v for k, v in before.items() if not k.startswith(".lockbox/")
    }


def test_a_dead_writers_entry_is_removed_only_with_its_pending_record(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    name = "0000000000000000000000000000000a-demo"
    placed, stray = root / name, root / "0000000000000000000000000000000b-demo"
    make_tree(placed)
    make_tree(stray)
    (root / ".lockbox" / "pending").mkdir(exist_ok=True)
    (root / ".lockbox" / "pending" / name).write_text("")
    # A pending record of a live writer: its entry lock is held.
    live = "0000000000000000000000000000000c-demo"
    make_tree(root / live)
    (root / ".lockbox" / "pending" / live).write_text("")
    fd = os.open(root / ".lockbox" / "locks" / f"{live}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with Store.open(root) as store:
            assert not placed.exists()
            assert stray.exists() and (root / live).exists()
            assert store.unknown() == [stray]
    finally:
        os.close(fd)
    assert not (root / ".lockbox" / "pending" / name).exists()


def test_a_pending_record_with_a_hostile_name_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "a" / "store"
    Store.open(root).close()
    victim = make_tree(tmp_path / "a" / "victim")
    before = listing(victim)
    pending = root / ".lockbox" / "pending"
    pending.mkdir(exist_ok=True)
    os.symlink("../../victim", pending / "0000000000000000000000000000000a-demo")
    (pending / "..victim").write_text("")
    Store.open(root).close()
    assert listing(victim) == before


def test_the_store_refuses_to_remove_outside_itself(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside")
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(StoreError, match="outside"):
            store.remove(outside)
        with pytest.raises(StoreError, match="outside"):
            store.remove(store.root / ".." / "outside")
    assert outside.exists()


def test_a_dead_writers_lone_staging_lock_or_directory_is_removed(tmp_path: Path) -> None:
    """A writer killed between creating its staging lock and its directory, or between
    removing them, leaves one of the two: the next open removes it, every time."""
    root = tmp_path / "store"
    Store.open(root).close()
    tmp = root / ".lockbox" / "tmp"
    (tmp / f"{'ab' * 16}.lock").write_text("")
    make_tree(tmp / ("cd" * 16))
    Store.open(root).close()
    assert os.listdir(tmp) == []


def test_locks_that_are_not_files_are_reported_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "a" / "store"
    Store.open(root).close()
    victim = make_tree(tmp_path / "a" / "victim")
    before = listing(victim)
    token = "ef" * 16
    (root / ".lockbox" / "tmp" / f"{token}.lock").mkdir()
    make_tree(root / ".lockbox" / "tmp" / token)
    os.symlink(victim, root / ".lockbox" / "tmp" / f"{'01' * 16}.lock")
    with Store.open(root) as store:
        assert root / ".lockbox" / "tmp" / f"{token}.lock" in store.unknown()
        assert (root / ".lockbox" / "tmp" / token).exists()
    name = "0000000000000000000000000000000a-demo"
    (root / ".lockbox" / "pending" / name).write_text("")
    (root / ".lockbox" / "locks" / f"{name}.lock").symlink_to(victim / "file.txt")
    with pytest.raises(StoreError, match="cannot lock"):
        Store.open(root)
    assert listing(victim) == before


def test_a_store_made_before_markers_is_taken_over_without_removing_anything(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
    (root / ".lockbox" / "store.toml").unlink()
    stray = root / "0000000000000000000000000000000a-demo"
    make_tree(stray)
    with Store.open(root) as store:
        assert store.get(entry.path_name) == entry
        assert store.unknown() == [stray]
    assert (root / ".lockbox" / "store.toml").is_file()


def test_a_marker_of_another_format_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    (root / ".lockbox" / "store.toml").write_text("format = 2\n")
    with pytest.raises(StoreError, match="format 2"):
        Store.open(root)


@pytest.mark.parametrize("where", ["root", ".lockbox"])
def test_a_store_another_user_can_write_is_refused(
    tmp_path: Path, where: str, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    os.chmod(root if where == "root" else root / ".lockbox", 0o777)
    before = listing(root)
    code, err = run(capfd, "--store", root, "store", "ls")
    assert code != 0 and "can be written by other users" in err and "chmod go-w" in err
    assert "Traceback" not in err and listing(root) == before


def test_a_store_of_another_user_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    os.chown(root, 65534, 65534)
    code, err = run(capfd, "--store", root, "store", "ls")
    assert code != 0 and "belongs to user 65534" in err


def test_a_new_store_is_writable_by_its_user_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        Store.open(tmp_path / "store").close()
        Store.open(tmp_path / "store").close()  # a second open accepts what the first made
    finally:
        os.umask(old)
    assert not os.stat(tmp_path / "store").st_mode & 0o022
    assert not os.stat(tmp_path / "store" / ".lockbox").st_mode & 0o022
