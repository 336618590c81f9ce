"""Confining input paths to their tree: hostile names and trees with symbolic links."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockbox.errors import PathError
from lockbox.fs import make_directory, open_for_writing
from lockbox.inputs.paths import confined, confined_glob


def _tree(root: Path, outside: Path) -> Path:
    """A tree with a real directory, files, and links leading inside and out of it."""
    (root / "real/sub").mkdir(parents=True)
    (root / "real/file.txt").write_text("inside\n")
    (root / "real/sub/deep.txt").write_text("deep\n")
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("decoy\n")
    (root / "out").symlink_to(outside)
    (root / "real/up").symlink_to("../..")
    (root / "inlink").symlink_to("real")
    (root / "real/secret").symlink_to(outside / "secret")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path / "root", tmp_path / "outside")


@pytest.mark.parametrize(
    "relative, reason",
    [
        ("/etc/passwd", "is absolute"),
        ("../x", "leads out of the project"),
        ("real/../../x", "leads out of the project"),
        ("out/secret", "goes through out, a symbolic link to .*which leads out of the project"),
        (
            "real/up/outside/secret",
            "goes through real/up, a symbolic link to ../.., which leads out",
        ),
        ("inlink/file.txt", "goes through inlink, a symbolic link to real; lockbox follows no"),
        ("real/secret", "goes through real/secret, a symbolic link"),
        ("real/file.txt/x", "goes through real/file.txt, which is not a directory"),
        ("", "names the project itself"),
        ("./.", "names the project itself"),
    ],
)
def test_hostile_paths_are_refused_with_the_key_and_path(
    tree: Path, relative: str, reason: str
) -> None:
    with pytest.raises(PathError, match=reason) as raised:
        confined(tree, relative, "recipe app.root[0]", within="the project")
    assert str(raised.value).startswith(f"recipe app.root[0]: {relative!r} ")


def test_inside_paths_are_returned_normalised(tree: Path) -> None:
    assert confined(tree, "real/./sub//deep.txt", "k", within="t") == tree / "real/sub/deep.txt"
    assert confined(tree, "real/new/dir/file", "k", within="t") == tree / "real/new/dir/file"
    assert confined(tree, "real/secret", "k", within="t", link_ok=True) == tree / "real/secret"
    with pytest.raises(PathError):
        confined(tree, "out/secret", "k", within="t", link_ok=True)


def test_glob_matches_links_as_themselves_and_never_descends_through_them(tree: Path) -> None:
    found = confined_glob(tree, "*/secret", "recipe app.delete[0]", within="the output")
    assert found == [tree / "real/secret"]  # out/secret is behind a link
    assert tree / "out/secret" not in confined_glob(tree, "**/secret", "k", within="t")
    assert confined_glob(tree, "**/deep.txt", "k", within="t") == [tree / "real/sub/deep.txt"]
    assert confined_glob(tree, "real", "k", within="t") == [tree / "real"]
    assert confined_glob(tree, "real/*.txt", "k", within="t") == [tree / "real/file.txt"]
    assert confined_glob(tree, "nothing/*", "k", within="t") == []
    with pytest.raises(PathError, match="goes through out, a symbolic link"):
        confined_glob(tree, "out/*", "k", within="t")
    with pytest.raises(PathError, match="is absolute"):
        confined_glob(tree, "/etc/*", "k", within="t")
    with pytest.raises(PathError, match="leads out"):
        confined_glob(tree, "real/../../*", "k", within="t")


def test_writes_do_not_follow_a_link(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_for_writing(tree / "real/secret")
    with pytest.raises(NotADirectoryError):
        make_directory(tree / "out")
    make_directory(tree / "real/sub")  # an existing directory is fine
    assert (tmp_path / "outside/secret").read_text() == "decoy\n"


_NAMES = st.sampled_from(
    [
        "real",
        "sub",
        "out",
        "up",
        "inlink",
        "secret",
        "file.txt",
        "..",
        ".",
        "",
        "x",
        "*",
        "**",
        "s*",
        "[so]*",
    ]
)
_RELATIVE = st.lists(_NAMES, min_size=0, max_size=6).map("/".join)
_LINKS = st.lists(
    st.tuples(
        st.sampled_from(["l1", "real/l2", "real/sub/l3"]),
        st.sampled_from(
            [
                "..",
                "../..",
                "../../..",
                "/",
                "real",
                "sub",
                "../outside",
                "/tmp",
                "secret",
                "file.txt",
            ]
        ),
    ),
    max_size=3,
    unique_by=lambda link: link[0],
)


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(relative=_RELATIVE, links=_LINKS, link_ok=st.booleans())
def test_no_generated_path_leads_out(
    relative: str, links: list[tuple[str, str]], link_ok: bool
) -> None:
    base = Path(tempfile.mkdtemp())
    try:
        root = _tree(base / "root", base / "outside")
        for name, target in links:
            (root / name).symlink_to(target)
        try:
            path = confined(root, relative, "k", within="t", link_ok=link_ok)
        except PathError:
            pass
        else:
            assert _inside(path.parent, root) and path.is_relative_to(root)
            if not link_ok:
                assert _inside(path, root)
        for pattern in (relative, f"**/{relative}"):
            try:
                matches = confined_glob(root, pattern, "k", within="t")
            except PathError:
                continue
            for match in matches:
                assert _inside(match.parent, root), match
                assert all(
                    not parent.is_symlink()
                    for parent in match.parents
                    if parent.is_relative_to(root) and parent != root
                ), match
    finally:
        shutil.rmtree(base)
