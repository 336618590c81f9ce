"""`lockbox hash` and `lockbox nar` against the reference: Nix's own nix-hash and nix-store.

Random trees (hypothesis) and one fixed case per kind of node. nix-hash and nix-store come
from the Debian package nix-bin, which scripts/setup installs; without them these tests
fail rather than skip, so a missing reference is never mistaken for agreement.
"""

from __future__ import annotations

import base64
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockbox.store.nar import write_nar
from tests.conftest import CliResult

pytestmark = pytest.mark.integration

Cli = Callable[..., CliResult]


@dataclass(frozen=True)
class Nix:
    """The reference tools."""

    nix_hash: str
    nix_store: str

    def hex(self, path: Path) -> str:
        return self._run(self.nix_hash, "--type", "sha256", path).decode().strip()

    def base32(self, path: Path) -> str:
        return self._run(self.nix_hash, "--type", "sha256", "--base32", path).decode().strip()

    def dump(self, path: Path) -> bytes:
        return self._run(self.nix_store, "--dump", path)

    @staticmethod
    def _run(*argv: str | Path) -> bytes:
        return subprocess.run(argv, check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def nix() -> Nix:
    tools = {name: shutil.which(name) for name in ("nix-hash", "nix-store")}
    missing = [name for name, found in tools.items() if found is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup (installs nix-bin)")
    return Nix(nix_hash=str(tools["nix-hash"]), nix_store=str(tools["nix-store"]))


def assert_same_as_nix(cli: Cli, nix: Nix, path: Path) -> None:
    """All three spellings of `lockbox hash`, and the NAR itself, equal Nix's."""
    expected_hex = nix.hex(path)
    expected_sri = "sha256-" + base64.b64encode(bytes.fromhex(expected_hex)).decode()
    for flag, expected in (
        ("--hex", expected_hex),
        ("--base32", nix.base32(path)),
        ("--sri", expected_sri),
        (None, expected_sri),
    ):
        result = cli("hash", *([flag] if flag else []), path)
        assert (result.code, result.out.strip(), result.err) == (0, expected, ""), flag
    out = io.BytesIO()
    info = write_nar(path, out)
    assert out.getvalue() == nix.dump(path)
    assert info.sha256.hex == expected_hex


# Random trees ------------------------------------------------------------------------------

# Name fragments chosen to catch ordering and quoting mistakes: case, punctuation that sorts
# before letters, spaces, leading dashes, UTF-8 (whose bytes sort like its code points),
# bytes that are not UTF-8 (which Python decodes to surrogates that sort *before* U+E000),
# and text that locale collation would order differently.
NAME_FRAGMENTS = [
    b"a",
    b"B",
    b"b",
    b"Z",
    b"_",
    b"-",
    b"--x",
    b".",
    b".hidden",
    b" ",
    b"a b",
    b"0",
    b"9",
    b"~",
    b"+",
    b"=",
    b"#",
    b"%20",
    b"\t",
    b"\n",
    b"\\",
    b"'",
    b'"',
    b"*",
    b"?",
    "é".encode(),
    "É".encode(),
    "ß".encode(),
    "日本".encode(),
    "\ue000".encode(),
    "\U0001f600".encode(),
    b"\xff",
    b"\x80",
    b"\xc3",
    b"\xfe\xfe",
]
names = (
    st.lists(st.sampled_from(NAME_FRAGMENTS), min_size=1, max_size=3)
    .map(b"".join)
    .filter(lambda name: name not in (b".", b"..") and len(name) <= 255)
)
modes = st.sampled_from([0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o655, 0o611, 0o100 | 0o444])
small_contents = st.binary(max_size=300)
# Big contents are described, not drawn byte by byte (hypothesis would be slow to draw
# megabytes), and rare: about one file in twenty crosses the reader's 1 MiB buffers.
big_contents = st.tuples(st.integers(0, 2**32), st.integers(1 << 20, 3 << 20)).map(
    lambda seed_size: random.Random(seed_size[0]).randbytes(seed_size[1])
)
contents = st.integers(0, 19).flatmap(lambda draw: big_contents if draw == 19 else small_contents)
link_targets = st.one_of(
    st.sampled_from(
        [
            b"/",
            b"/etc",
            b"/nonexistent/absolute",
            b"..",
            b".",
            b"../..",
            b"missing",
            b"sub/dir/",
            b"a b",
            "é".encode(),
            b"\xff\xfe",
            b"x" * 300,
        ]
    ),
    names,
    names.map(lambda name: b"../" + name),
)


@dataclass(frozen=True)
class File:
    contents: bytes
    mode: int


@dataclass(frozen=True)
class Link:
    target: bytes


Tree = dict[bytes, "File | Link | Tree"]

leaves = st.one_of(
    st.builds(File, contents, modes),
    st.builds(File, contents, modes),
    st.builds(Link, link_targets),
)
trees: st.SearchStrategy[Tree] = st.recursive(
    st.dictionaries(names, leaves, max_size=6),
    lambda children: st.dictionaries(names, st.one_of(leaves, children), max_size=6),
    max_leaves=25,
)


def materialise(tree: Tree, root: bytes) -> None:
    os.mkdir(root)
    for name, node in tree.items():
        path = root + b"/" + name
        if isinstance(node, File):
            with open(path, "wb") as file:
                file.write(node.contents)
            os.chmod(path, node.mode)
        elif isinstance(node, Link):
            os.symlink(node.target, path)
        else:
            materialise(node, path)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees)
def test_random_trees_hash_and_serialise_like_nix(cli: Cli, nix: Nix, tree: Tree) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = os.fsencode(scratch) + b"/tree"
        materialise(tree, root)
        assert_same_as_nix(cli, nix, Path(os.fsdecode(root)))


# One fixed case per kind -------------------------------------------------------------------


def make_file(path: Path, contents: bytes = b"data\n", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents)
    path.chmod(mode)
    return path


FIXED_CASES: dict[str, Callable[[Path], Path]] = {}


def case(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Register a function that builds a path under the given directory and returns it."""
    FIXED_CASES[build.__name__] = build
    return build


@case
def top_level_file(root: Path) -> Path:
    return make_file(root / "file")


@case
def top_level_empty_file(root: Path) -> Path:
    return make_file(root / "empty", b"")


@case
def top_level_executable(root: Path) -> Path:
    return make_file(root / "tool", b"#!/bin/sh\n", 0o755)


@case
def top_level_symlink_to_a_directory(root: Path) -> Path:
    (root / "dir").mkdir()
    (root / "link").symlink_to(root / "dir")
    return root / "link"


@case
def top_level_dangling_symlink(root: Path) -> Path:
    (root / "link").symlink_to("nowhere")
    return root / "link"


@case
def empty_directory(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


@case
def group_and_other_execute_bits_only(root: Path) -> Path:
    return make_file(root / "t" / "f", mode=0o655).parent


@case
def owner_execute_bit_only(root: Path) -> Path:
    return make_file(root / "t" / "f", mode=0o744).parent


@case
def every_kind_of_symlink(root: Path) -> Path:
    make_file(root / "t" / "sub" / "file")
    (root / "t" / "absolute").symlink_to("/etc/hostname")
    (root / "t" / "relative").symlink_to("sub/file")
    (root / "t" / "dangling").symlink_to("../missing")
    (root / "t" / "to-dir").symlink_to("sub")
    (root / "t" / "loop").symlink_to("loop")
    return root / "t"


@case
def nested_directories_with_empty_ones(root: Path) -> Path:
    (root / "t" / "a" / "b" / "c").mkdir(parents=True)
    (root / "t" / "a" / "empty").mkdir()
    make_file(root / "t" / "a" / "b" / "f", b"")
    return root / "t"


@case
def names_that_sort_differently_bytewise_and_as_text(root: Path) -> Path:
    for name in (b"\xff", "\ue000".encode(), "é".encode(), b"Z", b"a", b"-x", b" ", b"a b"):
        make_file(root / "t" / os.fsdecode(name), name)
    return root / "t"


@case
def file_larger_than_a_buffer(root: Path) -> Path:
    return make_file(root / "big", random.Random(1).randbytes((5 << 20) + 3))


@case
def many_files_across_buffers(root: Path) -> Path:
    for index in range(300):
        make_file(root / "t" / f"{index:03d}", random.Random(index).randbytes(9000 + index))
    return root / "t"


@pytest.mark.parametrize("case", FIXED_CASES)
def test_fixed_cases_match_nix(cli: Cli, nix: Nix, tmp_path: Path, case: str) -> None:
    assert_same_as_nix(cli, nix, FIXED_CASES[case](tmp_path))


def test_several_paths_are_listed_one_per_line(cli: Cli, nix: Nix, tmp_path: Path) -> None:
    first = make_file(tmp_path / "one", b"1")
    second = make_file(tmp_path / "two", b"2")
    result = cli("hash", "--hex", first, second)
    assert result.code == 0
    assert result.out.splitlines() == [f"{nix.hex(first)}  {first}", f"{nix.hex(second)}  {second}"]


# What Nix refuses, lockbox refuses with a message ------------------------------------------


def test_fifo_is_refused_by_both(cli: Cli, nix: Nix, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(subprocess.CalledProcessError):
        nix.hex(tmp_path)
    result = cli("hash", tmp_path)
    assert result.code == 1
    assert "pipe is neither a regular file, a directory nor a symlink" in result.err
    assert "Traceback" not in result.err


def test_socket_is_refused_by_both(cli: Cli, nix: Nix, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(os.fspath(tmp_path / "sock"))
        with pytest.raises(subprocess.CalledProcessError):
            nix.hex(tmp_path)
        result = cli("hash", tmp_path)
    assert result.code == 1
    assert "sock is neither a regular file" in result.err


def without_permission_override(argv: list[str]) -> list[str]:
    """Root reads any file whatever its mode; drop the capabilities that let it."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]


@pytest.mark.parametrize("unreadable", ["file", "dir"])
def test_unreadable_paths_are_a_message_not_a_traceback(tmp_path: Path, unreadable: str) -> None:
    make_file(tmp_path / "tree" / "file")
    (tmp_path / "tree" / "dir").mkdir()
    target = tmp_path / "tree" / unreadable
    target.chmod(0)
    try:
        for argv in (
            [sys.executable, "-m", "lockbox", "hash", str(tmp_path / "tree")],
            [sys.executable, "-m", "lockbox", "nar", str(tmp_path / "tree")],
        ):
            process = subprocess.run(
                without_permission_override(argv), capture_output=True, text=True, errors="replace"
            )
            assert process.returncode == 1, process
            assert f"cannot read {target}: Permission denied" in process.stderr
            assert "Traceback" not in process.stderr
    finally:
        target.chmod(0o755)


def test_lockbox_nar_writes_what_nix_store_dumps(nix: Nix, tmp_path: Path) -> None:
    make_file(tmp_path / "t" / "bin" / "run", b"#!/bin/sh\necho hi\n", 0o755)
    make_file(tmp_path / "t" / "lib" / "data.bin", random.Random(2).randbytes(3 << 20))
    (tmp_path / "t" / "lib" / "link").symlink_to("data.bin")
    process = subprocess.run(
        [sys.executable, "-m", "lockbox", "nar", str(tmp_path / "t")],
        capture_output=True,
        check=True,
    )
    assert process.stdout == nix.dump(tmp_path / "t")
