"""Relinking: which files get which run path, in how many patchelf calls, and what is copied.

The resolutions are written by hand (what :func:`lockbox.native.resolve.resolve` would say
of the files); the files are small real files, and the fake patchelf rewrites them in place
as the real one does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lockbox.native.elf import ElfInfo
from lockbox.native.relink import relink
from lockbox.native.resolve import Found, Resolution
from tests.fakes import FakePatchelf


def _file(path: Path, data: bytes = b"\x7fELF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + path.name.encode())
    return path


def _info(
    path: Path, *needed: str, runpath: Sequence[str] = (), soname: str | None = None
) -> ElfInfo:
    return ElfInfo(path, 64, "EM_X86_64", "shared", None, needed, tuple(runpath), (), soname)


def _host(path: Path, name: str) -> Found:
    return Found(name, path, "host")


def _resolution(
    files: dict[Path, list[Found]], host: dict[Path, list[Found]], infos: Sequence[ElfInfo]
) -> Resolution:
    return Resolution(files=files, host=host, infos={info.path: info for info in infos})


def test_files_that_get_one_run_path_are_rewritten_in_one_call(tmp_path: Path) -> None:
    root, host = tmp_path / "out", tmp_path / "host"
    libfoo = _file(host / "libfoo.so.1.2.3")  # its soname is libfoo.so.1
    libbar = _file(host / "libbar.so.2")
    one, two = _file(root / "a" / "b" / "one.so"), _file(root / "a" / "b" / "two.so")
    three = _file(root / "c" / "three.so")
    foo = _host(libfoo, "libfoo.so.1")
    resolution = _resolution(
        {one: [foo], two: [foo], three: [foo]},
        {libfoo: [_host(libbar, "libbar.so.2")], libbar: []},
        [
            _info(one, "libfoo.so.1"),
            _info(two, "libfoo.so.1"),
            _info(three, "libfoo.so.1"),
            _info(libfoo, "libbar.so.2", soname="libfoo.so.1"),
            _info(libbar, soname="libbar.so.2"),
        ],
    )
    patchelf = FakePatchelf()

    report = relink(root, resolution, patchelf)

    lib = root / "lib"
    assert patchelf.calls == [
        ([lib / "libfoo.so.1"], "$ORIGIN"),
        ([one, two], "$ORIGIN/../../lib"),
        ([three], "$ORIGIN/../lib"),
    ]
    # Bundled under the name files ask for, once each; libbar needs nothing, so keeps its
    # (empty) run path and is not rewritten.
    assert report.bundled == {"libfoo.so.1": str(libfoo), "libbar.so.2": str(libbar)}
    assert sorted(os.listdir(lib)) == ["libbar.so.2", "libfoo.so.1"]
    assert (lib / "libbar.so.2").read_bytes() == libbar.read_bytes()
    assert (lib / "libfoo.so.1").read_bytes().startswith(libfoo.read_bytes())
    assert (lib / "libfoo.so.1").stat().st_mode & 0o777 == 0o755
    assert report.patched == ["a/b/one.so", "a/b/two.so", "c/three.so", "lib/libfoo.so.1"]


def test_a_run_path_keeps_origin_entries_inside_the_output_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "host" / "libfoo.so.1")
    vendored = _file(root / "pkg.libs" / "libv-1a2b.so")
    sibling = _file(root / "pkg" / "_helper.so")
    ext = _file(root / "pkg" / "ext.so")
    earlier = ("$ORIGIN/../pkg.libs", "$ORIGIN/../../../elsewhere", "/build/venv/lib")
    resolution = _resolution(
        {
            ext: [
                Found("libv-1a2b.so", vendored, "output"),
                Found("_helper.so", sibling, "output"),
                _host(libfoo, "libfoo.so.1"),
            ],
            vendored: [],
            sibling: [],
        },
        {libfoo: []},
        [
            _info(ext, "libv-1a2b.so", "_helper.so", "libfoo.so.1", runpath=earlier),
            _info(vendored),
            _info(sibling),
            _info(libfoo),
        ],
    )
    patchelf = FakePatchelf()

    relink(root, resolution, patchelf)

    assert patchelf.calls == [([ext], "$ORIGIN/../pkg.libs:$ORIGIN:$ORIGIN/../lib")]


def test_a_file_whose_run_path_is_right_already_is_not_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "host" / "libfoo.so.1")
    done = _file(root / "pkg" / "done.so")
    resolution = _resolution(
        {done: [_host(libfoo, "libfoo.so.1")]},
        {libfoo: []},
        [_info(done, "libfoo.so.1", runpath=["$ORIGIN/../lib"]), _info(libfoo)],
    )
    patchelf = FakePatchelf()

    report = relink(root, resolution, patchelf)

    assert patchelf.calls == []
    assert report.patched == []
    assert report.bundled == {"libfoo.so.1": str(libfoo)}


def test_a_hardlinked_file_is_copied_before_it_is_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "host" / "libfoo.so.1")
    shared = _file(tmp_path / "other-entry" / "ext.so", b"\x7fELF shared bytes")
    ext = root / "pkg" / "ext.so"
    ext.parent.mkdir(parents=True)
    os.link(shared, ext)
    os.chmod(shared, 0o555)  # as store entries are
    before = os.stat(shared)
    resolution = _resolution(
        {ext: [_host(libfoo, "libfoo.so.1")]},
        {libfoo: []},
        [_info(ext, "libfoo.so.1"), _info(libfoo)],
    )
    patchelf = FakePatchelf()

    relink(root, resolution, patchelf)

    assert patchelf.calls == [([ext], "$ORIGIN/../lib")]
    after, other = os.stat(ext), os.stat(shared)
    assert after.st_ino != before.st_ino
    assert after.st_mode & 0o777 == 0o755  # its mode, and writable by its owner
    assert ext.read_bytes() == b"\x7fELF shared bytesext.so\0runpath=$ORIGIN/../lib"
    # The other link is untouched: same inode, bytes and mode, and no longer shared.
    assert (other.st_ino, other.st_nlink, other.st_mode & 0o777) == (before.st_ino, 1, 0o555)
    assert shared.read_bytes() == b"\x7fELF shared bytesext.so"
    assert not list(ext.parent.glob(".*"))  # no temporary copy left behind


def test_a_read_only_file_is_made_writable_in_place(tmp_path: Path) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "host" / "libfoo.so.1")
    ext = _file(root / "ext.so")
    os.chmod(ext, 0o444)
    inode = os.stat(ext).st_ino
    resolution = _resolution(
        {ext: [_host(libfoo, "libfoo.so.1")]},
        {libfoo: []},
        [_info(ext, "libfoo.so.1"), _info(libfoo)],
    )

    relink(root, resolution, FakePatchelf())

    assert os.stat(ext).st_ino == inode
    assert os.stat(ext).st_mode & 0o777 == 0o644


def test_without_bundling_run_paths_name_the_host_directories(tmp_path: Path) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "usr" / "lib" / "libfoo.so.1.2")
    libfoo_extra = _file(tmp_path / "usr" / "lib" / "libfoo-extra.so.1")
    libbaz = _file(tmp_path / "opt" / "baz" / "libbaz.so.3")
    vendored = _file(root / "pkg.libs" / "libv.so")
    ext = _file(root / "pkg" / "ext.so")
    resolution = _resolution(
        {
            ext: [
                _host(libfoo, "libfoo.so.1"),
                _host(libfoo_extra, "libfoo-extra.so.1"),
                _host(libbaz, "libbaz.so.3"),
                Found("libv.so", vendored, "output"),
            ],
            vendored: [],
        },
        {libfoo: [_host(libbaz, "libbaz.so.3")], libfoo_extra: [], libbaz: []},
        [
            _info(ext, "libfoo.so.1", "libfoo-extra.so.1", "libbaz.so.3", "libv.so"),
            _info(vendored),
            _info(libfoo, "libbaz.so.3"),
            _info(libfoo_extra),
            _info(libbaz),
        ],
    )
    patchelf = FakePatchelf()

    report = relink(root, resolution, patchelf, bundle=False)

    assert patchelf.calls == [
        ([ext], f"{tmp_path / 'usr' / 'lib'}:{tmp_path / 'opt' / 'baz'}:$ORIGIN/../pkg.libs")
    ]
    assert report.bundled == {}
    assert not (root / "lib").exists()
    assert libfoo.read_bytes() == b"\x7fELFlibfoo.so.1.2"  # host files are never rewritten


def test_a_library_the_output_has_already_is_not_bundled_again(tmp_path: Path) -> None:
    root = tmp_path / "out"
    libfoo = _file(tmp_path / "host" / "libfoo.so.1")
    kept = _file(root / "lib" / "libfoo.so.1", b"\x7fELF bundled before")
    ext = _file(root / "pkg" / "ext.so")
    resolution = _resolution(
        {ext: [_host(libfoo, "libfoo.so.1")]},
        {libfoo: []},
        [_info(ext, "libfoo.so.1"), _info(libfoo)],
    )
    patchelf = FakePatchelf()

    report = relink(root, resolution, patchelf)

    assert report.bundled == {}
    assert kept.read_bytes() == b"\x7fELF bundled beforelibfoo.so.1"
    assert patchelf.calls == [([ext], "$ORIGIN/../lib")]
