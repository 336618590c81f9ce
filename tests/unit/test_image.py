"""Image layers: the tar headers lockbox writes itself are the ones tarfile writes."""

from __future__ import annotations

import tarfile

import pytest

from lockbox.image.tar import MTIME, tar_header


@pytest.mark.parametrize(
    "name, mode, size, kind, link",
    [
        ("a/b/c.py", 0o444, 10, b"0", ""),
        ("usr/lib/x86_64-linux-gnu/", 0o755, 0, b"5", ""),
        ("tmp/", 0o1777, 0, b"5", ""),
        ("lib", 0o777, 0, b"2", "usr/lib"),
        ("x" * 100, 0o555, 123456789, b"0", ""),
        ("y" * 101, 0o444, 1, b"0", ""),  # a PAX header carries the long name
        ("caf\u00e9.txt", 0o444, 3, b"0", ""),  # so does a name that is not ASCII
        ("link", 0o777, 0, b"2", "z" * 150),
        ("n" * 120, 0o777, 0, b"2", "m" * 140),
        ("d" * 98 + "/", 0o755, 0, b"5", ""),  # 99 characters: the length prefix gains a digit
        ("e" * 995, 0o444, 0, b"0", ""),
    ],
)
def test_headers_equal_tarfiles(name: str, mode: int, size: int, kind: bytes, link: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.size, info.type, info.linkname = MTIME, mode, size, kind, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    assert tar_header(name, mode, size, kind, link) == info.tobuf(
        tarfile.PAX_FORMAT, "utf-8", "surrogateescape"
    )
