"""bin/ of the application: entry-point launchers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lockbox.assemble.scripts import Script, entry_point_scripts, write_scripts


def dist_info(site: Path, name: str, text: str) -> None:
    (site / f"{name}-1.0.dist-info").mkdir(parents=True)
    (site / f"{name}-1.0.dist-info" / "entry_points.txt").write_text(text)


def test_console_and_gui_scripts_are_found_and_other_groups_ignored(tmp_path: Path) -> None:
    dist_info(
        tmp_path,
        "alpha",
        "[console_scripts]\na = alpha.cli:main [extra]\n"
        "[gui_scripts]\ng = alpha:gui\n[other]\no = alpha:other\n",
    )
    dist_info(tmp_path, "beta", "[console_scripts]\nb = beta:run.now\nbad = not valid!\n")
    found = entry_point_scripts(tmp_path)
    assert found == [
        Script("a", "alpha.cli", "main", "alpha"),
        Script("g", "alpha", "gui", "alpha"),
        Script("b", "beta", "run.now", "beta"),
    ]


def test_launchers_run_the_python_beside_them_after_the_tree_moves(tmp_path: Path) -> None:
    # The environment's python is faked by a link to this interpreter.
    out = tmp_path / "before"
    (out / "bin").mkdir(parents=True)
    (out / "bin" / "python").symlink_to(sys.executable)
    (out / "lib").mkdir()
    (out / "lib" / "mod.py").write_text(
        "import sys\ndef main():\n    print(sys.argv[0]); return 3\n"
    )
    write_scripts(out, [Script("tool", "mod", "main", "mod")])
    assert (out / "bin" / "tool").read_text().startswith("#!/bin/sh\n")
    moved = tmp_path / ("moved-" + "x" * 200)
    out.rename(moved)
    (tmp_path / "elsewhere").symlink_to(moved / "bin" / "tool")  # run through a link, too
    for launcher in (moved / "bin" / "tool", tmp_path / "elsewhere"):
        result = subprocess.run(
            [launcher],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(moved / "lib"), "PATH": "/usr/bin:/bin"},
        )
        assert (result.returncode, result.stdout) == (3, f"{launcher}\n"), result.stderr


def test_a_script_claimed_twice_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    clashes = write_scripts(tmp_path, [Script("x", "a", "m", "a"), Script("x", "b", "m", "b")])
    assert clashes == {"x": ["a", "b"]}
