"""Applying unified diffs strictly: exact context, offsets, atomicity, and parity with GNU patch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lockbox.errors import LockboxError, PatchError
from lockbox.patches import PatchReport, apply_patch

TEN = "".join(f"line {n}\n" for n in range(1, 11))


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def _patch(tmp_path: Path, text: str | bytes, name: str = "fix.diff") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file's bytes and every entry's mode, by relative path."""
    return {
        path.relative_to(root).as_posix(): (
            None if path.is_dir() else path.read_bytes(),
            path.stat().st_mode,
        )
        for path in sorted(root.rglob("*"))
    }


TWO_HUNKS = """\
diff --git a/pkg/mod.py b/pkg/mod.py
index 1111111..2222222 100644
--- a/pkg/mod.py
+++ b/pkg/mod.py
@@ -1,3 +1,3 @@
-line 1
+LINE ONE
 line 2
 line 3
@@ -8,3 +8,4 @@ def section():
 line 8
 line 9
+line 9.5
 line 10
"""


def test_a_modify_with_two_hunks(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"pkg/mod.py": TEN})
    (tree / "pkg/mod.py").chmod(0o755)
    report = apply_patch(_patch(tmp_path, TWO_HUNKS), tree)
    assert report == PatchReport(files=("pkg/mod.py",), hunks=2, offsets=())
    expected = TEN.replace("line 1\n", "LINE ONE\n", 1).replace("line 9\n", "line 9\nline 9.5\n")
    assert (tree / "pkg/mod.py").read_text() == expected
    assert (tree / "pkg/mod.py").stat().st_mode & 0o777 == 0o755  # the mode is kept
    assert sorted(p.name for p in (tree / "pkg").iterdir()) == ["mod.py"]  # no temp files left


def test_hunks_apply_at_an_offset_when_lines_were_inserted_above(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"pkg/mod.py": "new 1\nnew 2\nnew 3\n" + TEN})
    report = apply_patch(_patch(tmp_path, TWO_HUNKS), tree)
    assert report.hunks == 2
    assert report.offsets == (
        "pkg/mod.py hunk 1 applied 3 lines later",
        "pkg/mod.py hunk 2 applied 3 lines later",
    )
    assert (tree / "pkg/mod.py").read_text().startswith("new 1\nnew 2\nnew 3\nLINE ONE\nline 2\n")
    assert "line 9\nline 9.5\nline 10\n" in (tree / "pkg/mod.py").read_text()


def test_the_nearest_exact_match_wins_even_when_it_is_earlier(tmp_path: Path) -> None:
    # The context now occurs twice: 2 lines earlier and 4 lines later than stated.
    shorter = TEN.replace("line 2\n", "").replace("line 3\n", "")
    tree = _tree(tmp_path / "tree", {"mod.py": shorter + "x\nx\nx\nline 8\nline 9\nline 10\n"})
    patch = "--- a/mod.py\n+++ b/mod.py\n@@ -8,3 +8,4 @@\n line 8\n line 9\n+line 9.5\n line 10\n"
    report = apply_patch(_patch(tmp_path, patch), tree)
    assert report.offsets == ("mod.py hunk 1 applied 2 lines earlier",)
    assert (tree / "mod.py").read_text() == (
        shorter.replace("line 9\n", "line 9\nline 9.5\n") + "x\nx\nx\nline 8\nline 9\nline 10\n"
    )


def test_create_and_delete_files(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"old/gone.txt": "a\nb\n", "keep.txt": "k\n"})
    patch = """\
diff --git a/old/gone.txt b/old/gone.txt
deleted file mode 100644
index 1111111..0000000
--- a/old/gone.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-a
-b
diff --git a/new/dir/made.txt b/new/dir/made.txt
new file mode 100644
index 0000000..2222222
--- /dev/null
+++ b/new/dir/made.txt
@@ -0,0 +1,2 @@
+hello
+world
"""
    report = apply_patch(_patch(tmp_path, patch), tree)
    assert report.files == ("old/gone.txt", "new/dir/made.txt")
    assert not (tree / "old").exists()  # emptied directories go, as with GNU patch
    assert (tree / "new/dir/made.txt").read_text() == "hello\nworld\n"
    assert (tree / "new/dir/made.txt").stat().st_mode & 0o777 == 0o644


def test_creating_an_existing_file_or_deleting_a_changed_one_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"made.txt": "x\n", "gone.txt": "a\nb\nc\n"})
    before = _snapshot(tree)
    create = "--- /dev/null\n+++ b/made.txt\n@@ -0,0 +1 @@\n+hello\n"
    with pytest.raises(PatchError, match="cannot create made.txt: it already exists"):
        apply_patch(_patch(tmp_path, create), tree)
    delete = "--- a/gone.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
    with pytest.raises(PatchError, match="cannot delete gone.txt"):
        apply_patch(_patch(tmp_path, delete), tree)
    missing = "--- a/nowhere.txt\n+++ b/nowhere.txt\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(PatchError, match="nowhere.txt does not exist"):
        apply_patch(_patch(tmp_path, missing), tree)
    assert _snapshot(tree) == before


def test_no_newline_at_end_of_file_in_both_directions(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path / "tree", {"adds.txt": "a\nb", "drops.txt": "a\nb\n", "crlf.txt": "a\r\nb\r"}
    )
    patch = """\
--- a/adds.txt
+++ b/adds.txt
@@ -1,2 +1,2 @@
 a
-b
\\ No newline at end of file
+b
--- a/drops.txt
+++ b/drops.txt
@@ -1,2 +1,3 @@
 a
 b
+c
\\ No newline at end of file
--- a/crlf.txt
+++ b/crlf.txt
@@ -1,2 +1,2 @@
-a\r
+A\r
 b\r
\\ No newline at end of file
"""
    apply_patch(_patch(tmp_path, patch), tree)
    assert (tree / "adds.txt").read_bytes() == b"a\nb\n"
    assert (tree / "drops.txt").read_bytes() == b"a\nb\nc"
    assert (tree / "crlf.txt").read_bytes() == b"A\r\nb\r"


def test_a_missing_final_newline_is_context_that_must_match(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"f.txt": "a\nb\n"})
    patch = "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n-a\n+A\n b\n\\ No newline at end of file\n"
    with pytest.raises(PatchError, match=r"expected at line 2:\n    b'b'\n  found:\n    b'b\\n'"):
        apply_patch(_patch(tmp_path, patch), tree)


def test_a_failing_hunk_is_fully_described_and_leaves_the_tree_untouched(tmp_path: Path) -> None:
    accounts = "gatekeeper/accounts/migrations/0002_drop_group.py"
    tree = _tree(
        tmp_path / "tree", {"first.txt": "one\ntwo\n", accounts: TEN.replace("line 9", "line nine")}
    )
    patch = """\
Subject: [PATCH] drop the group

--- a/first.txt
+++ b/first.txt
@@ -1,2 +1,2 @@
-one
+ONE
 two
--- a/gatekeeper/accounts/migrations/0002_drop_group.py
+++ b/gatekeeper/accounts/migrations/0002_drop_group.py
@@ -1,2 +1,2 @@
-line 1
+LINE 1
 line 2
@@ -8,3 +8,4 @@ class Migration:
 line 8
 line 9
+line 9.5
 line 10
--- /dev/null
+++ b/later.txt
@@ -0,0 +1 @@
+later
"""
    before = _snapshot(tree)
    with pytest.raises(PatchError) as caught:
        apply_patch(_patch(tmp_path, patch), tree, label="patches/fix.diff")
    message = str(caught.value)
    assert message.startswith(
        f"patches/fix.diff: hunk 2 of {accounts} (@@ -8,3 +8,4 @@, patch line 15) does not apply: "
        "expected at line 9:\n    line 9\n  found:\n    line nine\n"
    )
    assert message.endswith("regenerate it against the current source")
    assert isinstance(caught.value, LockboxError)
    assert _snapshot(tree) == before  # first.txt and hunk 1 applied in memory only


@pytest.mark.parametrize(
    ("header", "line"), [("@@ -1,2 +1,2 @@", 7), ("@@ -1,2 +1,1 @@", 6), ("@@ -1,4 +1,4 @@", 3)]
)
def test_hunk_counts_that_disagree_with_the_header_are_malformed(
    tmp_path: Path, header: str, line: int
) -> None:
    tree = _tree(tmp_path / "tree", {"f.txt": "a\nb\nc\n"})
    patch = f"--- a/f.txt\n+++ b/f.txt\n{header}\n a\n-b\n+B\n c\n"
    with pytest.raises(PatchError, match=rf"^fix\.diff: patch line {line}: hunk does not match"):
        apply_patch(_patch(tmp_path, patch), tree, label="fix.diff")
    assert (tree / "f.txt").read_text() == "a\nb\nc\n"


@pytest.mark.parametrize("name", ["../outside.txt", "ok/../../outside.txt"])
def test_paths_leaving_the_tree_are_refused(tmp_path: Path, name: str) -> None:
    tree = _tree(tmp_path / "tree", {"inside.txt": "x\n"})
    patch = f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+escaped\n"
    with pytest.raises(PatchError, match="leads out of the tree"):
        apply_patch(_patch(tmp_path, patch), tree)
    absolute = "--- /dev/null\n+++ /tmp/outside.txt\n@@ -0,0 +1 @@\n+escaped\n"
    with pytest.raises(PatchError, match="leads out of the tree"):
        apply_patch(_patch(tmp_path, absolute), tree, strip=0)
    assert not (tmp_path / "outside.txt").exists()


def test_a_symlink_leading_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    tree = _tree(tmp_path / "tree", {"inside.txt": "x\n"})
    (tree / "link").symlink_to(tmp_path / "elsewhere")
    patch = "--- /dev/null\n+++ b/link/planted.txt\n@@ -0,0 +1 @@\n+planted\n"
    with pytest.raises(PatchError, match="symbolic link or leads out of the tree"):
        apply_patch(_patch(tmp_path, patch), tree)
    assert not (tmp_path / "elsewhere/planted.txt").exists()


def test_strip_zero_keeps_the_whole_name_and_strip_one_drops_the_prefix(tmp_path: Path) -> None:
    patch = (
        "--- src/f.txt\t2024-01-02 03:04:05.000000000 +0100\n"
        "+++ src/f.txt\t2024-01-02 03:04:06 +0100\n@@ -1 +1 @@\n-a\n+b\n"
    )
    zero = _tree(tmp_path / "zero", {"src/f.txt": "a\n"})
    assert apply_patch(_patch(tmp_path, patch), zero, strip=0).files == ("src/f.txt",)
    assert (zero / "src/f.txt").read_text() == "b\n"
    one = _tree(tmp_path / "one", {"f.txt": "a\n"})
    assert apply_patch(_patch(tmp_path, patch), one, strip=1).files == ("f.txt",)
    assert (one / "f.txt").read_text() == "b\n"
    with pytest.raises(PatchError, match="cannot strip 2 components from src/f.txt"):
        apply_patch(_patch(tmp_path, patch), one, strip=2)


def test_binary_patches_and_renames_are_not_supported(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"a.bin": b"\x00"})
    binary = "diff --git a/a.bin b/a.bin\nindex 1..2 100644\nGIT binary patch\nliteral 1\nIc0\n"
    with pytest.raises(PatchError, match="patch line 3: binary patches are not supported"):
        apply_patch(_patch(tmp_path, binary), tree)
    rename = "diff --git a/a.bin b/b.bin\nsimilarity index 100%\nrename from a.bin\nrename to b\n"
    with pytest.raises(PatchError, match="not supported"):
        apply_patch(_patch(tmp_path, rename), tree)
    with pytest.raises(PatchError, match="no file changes found"):
        apply_patch(_patch(tmp_path, "just some text\n"), tree)


@pytest.mark.skipif(not (shutil.which("patch") and shutil.which("diff")), reason="needs GNU tools")
def test_the_result_matches_gnu_patch(tmp_path: Path) -> None:
    body = "".join(f"def f{n}():\n    return {n}\n\n" for n in range(40))
    old = _tree(
        tmp_path / "old",
        {
            "pkg/core.py": body,
            "pkg/util.py": "x = 1\ny = 2",
            "docs/gone.md": "# gone\n\ntext\n",
            "same.txt": "unchanged\n",
        },
    )
    new = _tree(
        tmp_path / "new",
        {
            "pkg/core.py": body.replace("return 3\n", "return 'three'\n")
            .replace("f30", "g30")
            .replace("return 17\n", "return 17\n    # seventeen\n"),
            "pkg/util.py": "x = 1\ny = 3\n",
            "pkg/sub/added.py": "print('hi')\n",
            "same.txt": "unchanged\n",
        },
    )
    # -N writes added and removed files with epoch timestamps instead of /dev/null.
    diff = subprocess.run(["diff", "-ruN", "old", "new"], cwd=tmp_path, capture_output=True)
    assert diff.returncode == 1, diff.stderr
    patch = _patch(tmp_path, diff.stdout)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    shutil.copytree(old, ours)
    shutil.copytree(old, theirs)
    report = apply_patch(patch, ours)
    subprocess.run(
        ["patch", "-p1", "--batch", "--silent", "-i", str(patch)], cwd=theirs, check=True
    )
    assert _snapshot(ours) == _snapshot(theirs)
    assert {name: data for name, (data, _) in _snapshot(ours).items()} == {
        name: data for name, (data, _) in _snapshot(new).items()
    }
    assert report.files == ("docs/gone.md", "pkg/core.py", "pkg/sub/added.py", "pkg/util.py")
