"""bin/ of the application: entry-point launchers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lockbox.scripts import Script, entry_point_scripts, write_scripts


def dist_info(site: Path, name: str, text: str) -> None:
    (site / f"{name}-1.0.dist-info").mkdir(parents=True)
    (site / f"{name}-1.0.dist-info" / "entry_points.txt").write_text(text)


def test_console_and_gui_scripts_are_found_and_other_groups_ignored(tmp_path: Path) -> None:
    dist_info(tmp_path, "alpha", "[console_scripts]\na = alpha.cli:main [extra]\n"
              "[gui_scripts]\ng = alpha:gui\n[other]\no = alpha:other\n")
    dist_info(tmp_path, "beta", "[console_scripts]\nb = beta:run.now\nbad = not valid!\n")
    found = entry_point_scripts(tmp_path)
    assert found == [Script("a", "alpha.cli", "main", "alpha"), Script("g", "alpha", "gui", "alpha"),
                     Script("b", "beta", "run.now", "beta")]


def test_launchers_run_with_the_given_python_even_from_a_long_path(tmp_path: Path) -> None:
    # The environment's python is faked by a link to this interpreter.
    for out in (tmp_path / "short", tmp_path / ("long" * 40)):
        (out / "bin").mkdir(parents=True)
        (out / "bin" / "python").symlink_to(sys.executable)
        (out / "lib").mkdir()
        (out / "lib" / "mod.py").write_text("def main():\n    print('ran'); return 3\n")
        write_scripts(out, out, [Script("tool", "mod", "main", "mod")])
        first = (out / "bin" / "tool").read_text().splitlines()[0]
        assert first == (f"#!{out}/bin/python" if len(str(out)) < 100 else "#!/bin/sh")
        result = subprocess.run([out / "bin" / "tool"], capture_output=True, text=True,
                                env={"PYTHONPATH": str(out / "lib")})
        assert (result.returncode, result.stdout) == (3, "ran\n")


def test_a_script_claimed_twice_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    clashes = write_scripts(tmp_path, tmp_path, [Script("x", "a", "m", "a"), Script("x", "b", "m", "b")])
    assert clashes == {"x": ["a", "b"]}
