"""The atomic replacement and the kill points of lockbox.fs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lockbox.fs import KILL_AFTER_STEP, STEPS_LOG, replace_tree


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
