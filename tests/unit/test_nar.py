"""NAR serialisation: exact bytes on tiny trees, buffer boundaries, and every refusal."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import sys
import threading
from pathlib import Path

import pytest

from lockbox.errors import NarError
from lockbox.store import nar
from lockbox.store.nar import iter_nar, nar_hash, write_nar


def s(data: bytes) -> bytes:
    """A NAR string: its length as 8 little-endian bytes, the bytes, zeros to a multiple of 8."""
    return len(data).to_bytes(8, "little") + data + bytes(-len(data) % 8)


def regular(contents: bytes, executable: bool = False) -> bytes:
    flag = s(b"executable") + s(b"") if executable else b""
    return s(b"(") + s(b"type") + s(b"regular") + flag + s(b"contents") + s(contents) + s(b")")


def symlink(target: bytes) -> bytes:
    return s(b"(") + s(b"type") + s(b"symlink") + s(b"target") + s(target) + s(b")")


def directory(*entries: tuple[bytes, bytes]) -> bytes:
    body = b"".join(
        s(b"entry") + s(b"(") + s(b"name") + s(name) + s(b"node") + node + s(b")")
        for name, node in entries
    )
    return s(b"(") + s(b"type") + s(b"directory") + body + s(b")")


def archive(node: bytes) -> bytes:
    return s(b"nix-archive-1") + node


def dump(path: Path) -> bytes:
    out = io.BytesIO()
    info = write_nar(path, out)
    data = out.getvalue()
    assert info == nar_hash(path)
    assert info.size == len(data)
    assert info.sha256.digest == hashlib.sha256(data).digest()
    assert b"".join(iter_nar(path)) == data
    return data


# The format, written out by hand ---------------------------------------------------------


def test_single_file_nar_byte_for_byte(tmp_path: Path) -> None:
    file = tmp_path / "hello"
    file.write_bytes(b"hi\n")
    file.chmod(0o644)
    assert dump(file) == (
        b"\x0d\0\0\0\0\0\0\0"
        b"nix-archive-1\0\0\0"
        b"\x01\0\0\0\0\0\0\0"
        b"(\0\0\0\0\0\0\0"
        b"\x04\0\0\0\0\0\0\0"
        b"type\0\0\0\0"
        b"\x07\0\0\0\0\0\0\0"
        b"regular\0"
        b"\x08\0\0\0\0\0\0\0"
        b"contents"
        b"\x03\0\0\0\0\0\0\0"
        b"hi\n\0\0\0\0\0"
        b"\x01\0\0\0\0\0\0\0"
        b")\0\0\0\0\0\0\0"
    )


def test_empty_file_has_no_padding(tmp_path: Path) -> None:
    file = tmp_path / "empty"
    file.touch(mode=0o644)
    assert dump(file) == archive(regular(b""))
    assert dump(file).endswith(s(b"contents") + bytes(8) + s(b")"))


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16])
def test_contents_are_padded_to_eight_bytes(tmp_path: Path, size: int) -> None:
    file = tmp_path / "file"
    file.write_bytes(b"x" * size)
    file.chmod(0o644)
    assert dump(file) == archive(regular(b"x" * size))
    assert len(dump(file)) % 8 == 0


@pytest.mark.parametrize(
    ("mode", "executable"),
    [(0o755, True), (0o100, True), (0o500, True), (0o644, False), (0o655, False), (0o611, False)],
)
def test_only_the_owner_execute_bit_makes_a_file_executable(
    tmp_path: Path, mode: int, executable: bool
) -> None:
    # Nix checks S_IXUSR alone: group and other bits never count.
    file = tmp_path / "tool"
    file.write_bytes(b"#!/bin/sh\n")
    file.chmod(mode)
    assert dump(file) == archive(regular(b"#!/bin/sh\n", executable=executable))


def test_top_level_symlink_is_stored_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    assert dump(link) == archive(symlink(os.fsencode(tmp_path / "target")))


def test_empty_directory(tmp_path: Path) -> None:
    assert dump(tmp_path) == archive(directory())


def test_directory_entries_are_sorted_bytewise(tmp_path: Path) -> None:
    names = [b"b", b"a", b"B", b"-dash", b"with space", "é".encode(), "\ue000".encode(), b"\xff"]
    for name in names:
        (tmp_path / os.fsdecode(name)).write_bytes(name)
        (tmp_path / os.fsdecode(name)).chmod(0o644)
    # Bytewise, "\xee\x80\x80" (U+E000) sorts before "\xff"; as text, "\udcff" sorts first.
    expected = sorted(names)
    assert expected.index("\ue000".encode()) < expected.index(b"\xff")
    assert dump(tmp_path) == archive(directory(*((name, regular(name)) for name in expected)))


def test_nested_directories_and_every_kind_of_symlink(tmp_path: Path) -> None:
    (tmp_path / "sub" / "empty").mkdir(parents=True)
    (tmp_path / "sub" / "run").write_bytes(b"go")
    (tmp_path / "sub" / "run").chmod(0o755)
    (tmp_path / "absolute").symlink_to("/nonexistent/absolute")
    (tmp_path / "dangling").symlink_to("missing")
    (tmp_path / "to-dir").symlink_to("sub")
    (tmp_path / "up").symlink_to("../..")
    assert dump(tmp_path) == archive(
        directory(
            (b"absolute", symlink(b"/nonexistent/absolute")),
            (b"dangling", symlink(b"missing")),
            (
                b"sub",
                directory((b"empty", directory()), (b"run", regular(b"go", executable=True))),
            ),
            (b"to-dir", symlink(b"sub")),
            (b"up", symlink(b"../..")),
        )
    )


# Buffer boundaries -----------------------------------------------------------------------


def test_file_larger_than_a_buffer(tmp_path: Path) -> None:
    contents = os.urandom(3 * nar._BUFFER_SIZE + 5)
    file = tmp_path / "big"
    file.write_bytes(contents)
    file.chmod(0o644)
    assert dump(file) == archive(regular(contents))


def test_many_small_files_straddling_buffers(tmp_path: Path) -> None:
    # Odd sizes so that headers, contents and padding fall across buffer edges.
    entries = []
    for index in range(400):
        name = f"f{index:04d}".encode()
        contents = os.urandom(4093 + index)
        (tmp_path / os.fsdecode(name)).write_bytes(contents)
        (tmp_path / os.fsdecode(name)).chmod(0o644)
        entries.append((name, regular(contents)))
    assert dump(tmp_path) == archive(directory(*entries))


# Refusals --------------------------------------------------------------------------------


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "pipe")
    with pytest.raises(NarError, match="pipe is neither a regular file.*FIFOs"):
        nar_hash(tmp_path)
    with pytest.raises(NarError, match="neither a regular file"):
        nar_hash(tmp_path / "dir" / "pipe")


def test_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(os.fspath(tmp_path / "dir" / "sock"))
        with pytest.raises(NarError, match="sock is neither a regular file.*sockets"):
            nar_hash(tmp_path)
        with pytest.raises(NarError, match="neither a regular file"):
            nar_hash(tmp_path / "dir" / "sock")


def test_missing_path_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(NarError, match="cannot read .*missing: No such file or directory"):
        nar_hash(tmp_path / "missing")


def test_path_through_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    with pytest.raises(NarError, match="cannot read .*file/child: Not a directory"):
        nar_hash(tmp_path / "file" / "child")


@pytest.mark.parametrize(
    "path",
    [
        "/proc/self/status",  # says it is empty, yet has contents: it "grew"
        "/sys/devices/system/cpu/online",  # says 4096 bytes, has a few: it "shrank"
    ],
)
def test_file_whose_size_differs_from_its_contents_is_refused(path: str) -> None:
    assert stat.S_ISREG(os.lstat(path).st_mode)
    with pytest.raises(NarError, match="changed size while it was being read"):
        nar_hash(Path(path))


def test_tree_too_deep_to_walk_is_an_error(tmp_path: Path) -> None:
    # Built and removed one level at a time: os.makedirs and rmtree recurse too.
    levels = [os.fspath(tmp_path)]
    for _ in range(sys.getrecursionlimit() + 10):
        levels.append(levels[-1] + "/d")
        os.mkdir(levels[-1])
    try:
        with pytest.raises(NarError, match="nested too deeply"):
            nar_hash(tmp_path)
    finally:
        for level in reversed(levels[1:]):
            os.rmdir(level)


# The reader thread -----------------------------------------------------------------------


def test_reader_thread_stops_when_the_consumer_gives_up(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(bytes(8 * nar._BUFFER_SIZE))
    before = threading.active_count()
    chunks = iter_nar(tmp_path)
    next(chunks)
    chunks.close()
    assert threading.active_count() == before


def test_write_error_stops_the_reader_and_propagates(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(bytes(8 * nar._BUFFER_SIZE))

    class BrokenPipe(io.RawIOBase):
        def write(self, data: object) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    before = threading.active_count()
    with pytest.raises(BrokenPipeError):
        write_nar(tmp_path, BrokenPipe())  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_chunks_from_iter_nar_stay_valid_after_later_ones(tmp_path: Path) -> None:
    contents = os.urandom(3 * nar._BUFFER_SIZE)
    (tmp_path / "big").write_bytes(contents)
    chunks = list(iter_nar(tmp_path / "big"))
    assert len(chunks) > 1
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert b"".join(chunks) == archive(regular(contents))
