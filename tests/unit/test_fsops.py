"""The file-system helpers of lockbox.fs: walks, copies, replacements and kill points."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lockbox.fs import (
    KILL_AFTER_STEP,
    STEPS_LOG,
    copy_tree,
    replace_tree,
    replacing,
    walk,
    write_atomically,
)


def test_replace_tree_swaps_an_existing_tree_in_one_step(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "file").write_text("new")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "file").write_text("old")
    old = replace_tree(tmp_path / "new", tmp_path / "target")
    assert (tmp_path / "target" / "file").read_text() == "new"
    assert old == tmp_path / "new" and (old / "file").read_text() == "old"


def test_replace_tree_without_a_target_renames(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    assert replace_tree(tmp_path / "new", tmp_path / "target") is None
    assert (tmp_path / "target").is_dir() and not (tmp_path / "new").exists()


_SCRIPT = """
import sys
from pathlib import Path
from lockbox.fs import rename
top = Path(sys.argv[1])
for n in range(3):
    (top / f"a{n}").mkdir()
    rename(top / f"a{n}", top / f"b{n}")
"""


def test_the_kill_point_stops_the_process_at_the_chosen_step(tmp_path: Path) -> None:
    log = tmp_path / "steps"
    env = {**os.environ, STEPS_LOG: str(log)}
    subprocess.run([sys.executable, "-c", _SCRIPT, tmp_path], env=env, check=True)
    assert [line.split()[1:] for line in log.read_text().splitlines()] == [
        ["1", "rename", "b0"],
        ["2", "rename", "b1"],
        ["3", "rename", "b2"],
    ]
    killed = tmp_path / "killed"
    killed.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, killed], env={**os.environ, KILL_AFTER_STEP: "2"}
    )
    assert done.returncode == -9
    assert sorted(p.name for p in killed.iterdir()) == ["a1", "b0"]


def _tree(top: Path) -> Path:
    (top / "b" / "deep").mkdir(parents=True)
    (top / "a").mkdir()
    (top / "z.txt").write_text("z")
    (top / "b" / "run").write_text("#!/bin/sh\n")
    os.chmod(top / "b" / "run", 0o700)
    (top / "b" / "deep" / "x.pyc").write_bytes(b"cache")
    os.symlink("b", top / "to-b")
    os.symlink("nowhere", top / "dangling")
    return top


def test_walk_is_sorted_top_down_and_never_enters_a_link(tmp_path: Path) -> None:
    top = _tree(tmp_path / "top")
    seen = [(os.path.relpath(d, top), dirs, others) for d, dirs, others in walk(top)]
    assert seen == [
        (".", ["a", "b"], ["dangling", "to-b", "z.txt"]),
        ("a", [], []),
        ("b", ["deep"], ["run"]),
        ("b/deep", [], ["x.pyc"]),
    ]
    pruned = []
    for directory, directories, _ in walk(top):
        pruned.append(os.path.relpath(directory, top))
        directories[:] = [name for name in directories if name != "b"]
    assert pruned == [".", "a"]


def test_copy_tree_copies_links_as_links_and_normalises_modes(tmp_path: Path) -> None:
    top = _tree(tmp_path / "top")
    copy = tmp_path / "copy"
    copy_tree(top, copy, ignore=lambda _, names: {n for n in names if n.endswith(".pyc")})
    assert os.readlink(copy / "to-b") == "b" and os.readlink(copy / "dangling") == "nowhere"
    assert stat.S_IMODE(os.stat(copy / "b" / "run").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(copy / "z.txt").st_mode) == 0o644
    assert (copy / "b" / "deep").is_dir() and not (copy / "b" / "deep" / "x.pyc").exists()
    linked = tmp_path / "linked"
    copy_tree(top, linked, link=True)
    assert os.path.samefile(linked / "z.txt", top / "z.txt")


def test_copy_tree_preserves_modes_and_times_when_asked(tmp_path: Path) -> None:
    top = _tree(tmp_path / "top")
    os.utime(top / "z.txt", (1_000_000, 1_000_000))
    os.utime(top / "b", (2_000_000, 2_000_000))
    copy = tmp_path / "copy"
    copy_tree(top, copy, preserve=True)
    assert os.stat(copy / "z.txt").st_mtime == 1_000_000
    assert os.stat(copy / "b").st_mtime == 2_000_000
    assert stat.S_IMODE(os.stat(copy / "b" / "run").st_mode) == 0o700


def test_copy_tree_refuses_special_files_and_writing_through_links(tmp_path: Path) -> None:
    top = _tree(tmp_path / "top")
    os.mkfifo(top / "a" / "pipe")
    with pytest.raises(shutil.SpecialFileError) as caught:
        copy_tree(top, tmp_path / "copy")
    assert caught.value.filename == str(top / "a" / "pipe")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "in-the-way").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "in-the-way" / "b")
    with pytest.raises(NotADirectoryError):
        copy_tree(top / "b", tmp_path / "in-the-way" / "b")
    assert not any((tmp_path / "elsewhere").iterdir())


def test_write_atomically_keeps_the_mode_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomically(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o644
    os.chmod(target, 0o600)
    write_atomically(target, b"newer")
    assert target.read_bytes() == b"newer" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
