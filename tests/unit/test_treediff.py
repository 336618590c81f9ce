"""Comparing trees: changes, owners by RECORD, and the built-in explanation of a change."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lockbox.deps.treediff import builtin_explain, diff_trees, explain, owners, source_of_bytecode


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


SITE = "lib/python3.12/site-packages"


def test_changes_are_added_removed_changed_and_mode(tmp_path: Path) -> None:
    old = tree(tmp_path / "old", {"a": b"1", "b": b"2", "c": b"3"})
    new = tree(tmp_path / "new", {"a": b"1", "c": b"4", "d": b"5"})
    (old / "e").write_bytes(b"same")
    (new / "e").write_bytes(b"same")
    os.chmod(new / "e", 0o755)
    changes = {(c.path, c.change) for c in diff_trees(old, new).files}
    assert changes == {("b", "removed"), ("c", "changed"), ("d", "added"), ("e", "mode")}


def test_owners_come_from_each_distributions_record(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "layer",
        {
            f"{SITE}/pkg/__init__.py": b"",
            f"{SITE}/pkg-1.0.dist-info/RECORD": (
                b"pkg/__init__.py,sha256=x,0\npkg-1.0.dist-info/RECORD,,\n"
                b"../../../bin/pkg-tool,sha256=y,10\n"
            ),
            f"{SITE}/other.py": b"",
        },
    )
    found = owners(root)
    assert found[f"{SITE}/pkg/__init__.py"] == "pkg 1.0"
    assert found["bin/pkg-tool"] == "pkg 1.0"
    assert f"{SITE}/other.py" not in found


def test_bytecode_maps_to_its_source() -> None:
    assert source_of_bytecode("a/b/__pycache__/mod.cpython-312.pyc") == "a/b/mod.py"
    assert source_of_bytecode("a/b/mod.py") is None


def test_builtin_explanation_of_text_is_a_line_diff(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one\nBUILT = '2026'\nthree\n")
    (tmp_path / "b").write_text("one\nBUILT = '2027'\nthree\n")
    text = builtin_explain(tmp_path / "a", tmp_path / "b")
    assert "-BUILT = '2026'" in text and "+BUILT = '2027'" in text


def test_builtin_explanation_of_binary_names_the_first_offset(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"\x7fELF" + bytes(60) + b"\x01\x02")
    (tmp_path / "b").write_bytes(b"\x7fELF" + bytes(60) + b"\x01\x03")
    text = builtin_explain(tmp_path / "a", tmp_path / "b")
    assert text.startswith("binary: 1 bytes differ, the first at offset 0x41 (sizes 66 and 66)")
    assert "01 02" in text and "01 03" in text


@pytest.mark.skipif(shutil.which("diffoscope") is None, reason="diffoscope is not installed")
def test_explanation_uses_diffoscope_when_installed(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("BUILT = '2026'\n")
    (tmp_path / "b").write_text("BUILT = '2027'\n")
    text = explain(tmp_path / "a", tmp_path / "b")
    ours = subprocess.run(
        ["diffoscope", "--text", "-", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
    ).stdout
    assert text.splitlines()[0] == ours.splitlines()[0]
    assert "2027" in text
