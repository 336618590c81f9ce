"""Reading what ELF files need, on real files built by the system C compiler.

Expected values come from binutils' ``readelf`` wherever it can say them, so the tests
check lockbox against an independent reader rather than against itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.native.elf import ElfInfo, host_machine, read_elf, scan_tree

_LIBFOO = """
#include <stdio.h>
int foo(void) { puts("foo"); return 42; }
"""
_MAIN = """
int foo(void);
int main(void) { return foo(); }
"""
# Self-contained, so the static links need nothing but libc.a.
_STANDALONE = """
#include <stdio.h>
int main(void) { puts("static"); return 0; }
"""

_EM_AARCH64 = 183
_E_MACHINE_OFFSET = 18


@dataclass(frozen=True)
class Built:
    """The files compiled once for the whole module."""

    libfoo: Path
    app: Path
    """Linked against libfoo with ``$ORIGIN/lib`` as DT_RUNPATH."""
    app_old_dtags: Path
    """The same, with ``--disable-new-dtags``: the search path lands in DT_RPATH."""
    app_no_pie: Path
    """A classic ET_EXEC executable."""
    obj: Path


def _cc(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cc", *map(str, args)], cwd=cwd, capture_output=True, text=True)


def _cc_ok(*args: str | Path, cwd: Path) -> None:
    result = _cc(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr


def _readelf(option: str, path: Path) -> str:
    return subprocess.run(
        ["readelf", "-W", option, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def _readelf_dynamic(path: Path, kind: str) -> list[str]:
    """The bracketed values of one kind of dynamic entry (NEEDED, RUNPATH, ...), in order."""
    return re.findall(rf"\({kind}\)\s+[^\[]*\[([^\]]*)\]", _readelf("-d", path))


def _readelf_interpreter(path: Path) -> str | None:
    found = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", _readelf("-l", path))
    return found.group(1) if found else None


def _static_link(output: str, *flags: str, cwd: Path) -> Path:
    """A static executable, or a skip when the toolchain has no static libc to link."""
    (cwd / "standalone.c").write_text(_STANDALONE)
    result = _cc(*flags, "-o", output, "standalone.c", cwd=cwd)
    if result.returncode != 0:
        if re.search(r"cannot find -lc\b|libc\.a|rcrt1\.o|crt1\.o", result.stderr):
            pytest.skip(
                f"static libc is not installed (libc.a, libc6-dev): {result.stderr.strip()}"
            )
        raise AssertionError(result.stderr)
    return cwd / output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("elf")
    (work / "foo.c").write_text(_LIBFOO)
    (work / "main.c").write_text(_MAIN)
    _cc_ok("-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", "libfoo.so", "foo.c", cwd=work)
    # Both dtags flags are explicit: which one ld defaults to differs between toolchains.
    _cc_ok(
        "-o",
        "app",
        "main.c",
        "-L.",
        "-lfoo",
        "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN/lib",
        cwd=work,
    )
    _cc_ok(
        "-o",
        "app-old-dtags",
        "main.c",
        "-L.",
        "-lfoo",
        "-Wl,--disable-new-dtags",
        "-Wl,-rpath,$ORIGIN/lib",
        cwd=work,
    )
    _cc_ok("-no-pie", "-o", "app-no-pie", "main.c", "-L.", "-lfoo", cwd=work)
    _cc_ok("-c", "-o", "foo.o", "foo.c", cwd=work)
    return Built(
        libfoo=work / "libfoo.so",
        app=work / "app",
        app_old_dtags=work / "app-old-dtags",
        app_no_pie=work / "app-no-pie",
        obj=work / "foo.o",
    )


def _system_loader() -> str:
    env = read_elf(Path("/usr/bin/env"))
    assert env is not None and env.interpreter is not None
    return env.interpreter


# --- reading one file ----------------------------------------------------------------


def test_a_shared_library_names_itself_and_its_needs(built: Built) -> None:
    info = read_elf(built.libfoo)
    assert info is not None
    assert info.path == built.libfoo
    assert info.kind == "shared"
    assert info.soname == "libfoo.so.1" == _readelf_dynamic(built.libfoo, "SONAME")[0]
    assert info.interpreter is None
    assert list(info.needed) == _readelf_dynamic(built.libfoo, "NEEDED")
    assert any(name.startswith("libc.") for name in info.needed)  # puts() comes from libc
    assert (info.runpath, info.rpath) == ((), ())


def test_an_executable_names_its_loader_needs_and_runpath(built: Built) -> None:
    info = read_elf(built.app)
    assert info is not None
    assert info.interpreter == _system_loader() == _readelf_interpreter(built.app)
    assert list(info.needed) == _readelf_dynamic(built.app, "NEEDED")
    assert info.needed[0] == "libfoo.so.1"  # the soname, not the file name linked against
    assert info.runpath == ("$ORIGIN/lib",)
    assert _readelf_dynamic(built.app, "RUNPATH") == ["$ORIGIN/lib"]
    assert info.rpath == ()
    assert info.soname is None


def test_old_dtags_put_the_search_path_in_rpath(built: Built) -> None:
    info = read_elf(built.app_old_dtags)
    assert info is not None
    assert info.rpath == ("$ORIGIN/lib",)
    assert _readelf_dynamic(built.app_old_dtags, "RPATH") == ["$ORIGIN/lib"]
    assert info.runpath == ()
    assert list(info.needed) == _readelf_dynamic(built.app_old_dtags, "NEEDED")


def test_pie_reads_as_shared_and_a_fixed_address_executable_as_executable(built: Built) -> None:
    pie = read_elf(built.app)
    no_pie = read_elf(built.app_no_pie)
    assert pie is not None and no_pie is not None
    assert "DYN" in _readelf("-h", built.app)  # cc builds PIE by default on this toolchain
    assert pie.kind == "shared"
    assert no_pie.kind == "executable"
    assert no_pie.interpreter == _system_loader()
    assert list(no_pie.needed) == _readelf_dynamic(built.app_no_pie, "NEEDED")


def test_empty_search_path_entries_are_dropped(tmp_path: Path, built: Built) -> None:
    (tmp_path / "main.c").write_text(_MAIN)
    _cc_ok(
        "-o",
        "app",
        "main.c",
        f"-L{built.libfoo.parent}",
        "-lfoo",
        "-Wl,--enable-new-dtags",
        "-Wl,-rpath,/opt/a::/opt/b:",
        cwd=tmp_path,
    )
    info = read_elf(tmp_path / "app")
    assert info is not None
    assert _readelf_dynamic(tmp_path / "app", "RUNPATH") == ["/opt/a::/opt/b:"]
    assert info.runpath == ("/opt/a", "/opt/b")


def test_a_system_binary_matches_readelf() -> None:
    env = Path("/usr/bin/env")
    info = read_elf(env)
    assert info is not None
    assert list(info.needed) == _readelf_dynamic(env, "NEEDED")
    assert info.interpreter == _readelf_interpreter(env)
    assert info.elf_class == (64 if "ELF64" in _readelf("-h", env) else 32)


def test_host_machine_is_what_the_compiler_builds_for(built: Built) -> None:
    info = read_elf(built.libfoo)
    assert info is not None
    assert host_machine() == (info.elf_class, info.machine)
    interpreter = Path(sys.executable).resolve()
    assert f"ELF{host_machine()[0]}" in _readelf("-h", interpreter)


# --- what is not a dynamically linked object --------------------------------------------


def test_static_executables_are_not_dynamic(tmp_path: Path) -> None:
    static = _static_link("static", "-static", cwd=tmp_path)
    assert "(NEEDED)" not in _readelf("-d", static)
    assert read_elf(static) is None


def test_static_pie_executables_are_not_dynamic(tmp_path: Path) -> None:
    # A static-pie binary has a PT_DYNAMIC, but only to relocate itself.
    static_pie = _static_link("static-pie", "-static-pie", cwd=tmp_path)
    assert "DYNAMIC" in _readelf("-l", static_pie)
    assert _readelf_interpreter(static_pie) is None
    assert read_elf(static_pie) is None


def test_object_files_text_and_empty_files_are_none(tmp_path: Path, built: Built) -> None:
    assert read_elf(built.obj) is None
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file\n")
    assert read_elf(text) is None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_elf(empty) is None


def test_separate_debug_info_files_are_none(tmp_path: Path, built: Built) -> None:
    # They keep the program headers, PT_DYNAMIC included, but not the table's bytes.
    debug = tmp_path / "app.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(built.app), str(debug)], check=True)
    assert "DYNAMIC" in _readelf("-l", debug)
    assert read_elf(debug) is None


def test_garbage_behind_the_magic_is_none(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    assert read_elf(garbage) is None
    just_magic = tmp_path / "magic"
    just_magic.write_bytes(b"\x7fELF")
    assert read_elf(just_magic) is None


def test_a_truncated_library_is_none(tmp_path: Path, built: Built) -> None:
    truncated = tmp_path / "libfoo.so"
    truncated.write_bytes(built.libfoo.read_bytes()[:100])
    assert read_elf(truncated) is None


def test_damaged_copies_never_raise(tmp_path: Path, built: Built) -> None:
    # Corrupt input of every shape must read as None (or, if the damage missed the parts
    # read, as the library) — never crash the build that scans it.
    data = built.libfoo.read_bytes()
    damaged = tmp_path / "damaged"
    cases = [data[:size] for size in range(0, len(data), 211)]
    cases += [
        data[:offset] + b"\xff" * 8 + data[offset + 8 :]
        for offset in range(0, min(len(data), 4096), 13)
    ]
    for case in cases:
        damaged.write_bytes(case)
        result = read_elf(damaged)
        assert result is None or isinstance(result, ElfInfo)


def test_a_foreign_machine_is_read_as_what_it_says(tmp_path: Path, built: Built) -> None:
    foreign = _foreign_copy(built.libfoo, tmp_path / "libfoo-aarch64.so")
    info = read_elf(foreign)
    assert info is not None
    assert info.machine == "EM_AARCH64"
    assert info.soname == "libfoo.so.1"


def _foreign_copy(source: Path, target: Path) -> Path:
    """``source`` claiming to be for AArch64: test data for a foreign architecture."""
    data = bytearray(source.read_bytes())
    assert data[5] == 1, "the patch below writes a little-endian e_machine"
    data[_E_MACHINE_OFFSET : _E_MACHINE_OFFSET + 2] = _EM_AARCH64.to_bytes(2, "little")
    target.write_bytes(bytes(data))
    return target


# --- scanning a tree -------------------------------------------------------------------


def test_scan_tree_reports_the_dynamic_files_sorted_and_the_foreign_ones(
    tmp_path: Path, built: Built
) -> None:
    root = tmp_path / "out"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.11" / "site-packages" / "pkg").mkdir(parents=True)
    (root / "share").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()

    lib = root / "lib" / "libfoo.so.1"
    lib.write_bytes(built.libfoo.read_bytes())
    (root / "lib" / "libfoo.so").symlink_to("libfoo.so.1")
    app = root / "bin" / "app"
    app.write_bytes(built.app.read_bytes())
    app_old = root / "bin" / "app-old-dtags"
    app_old.write_bytes(built.app_old_dtags.read_bytes())
    extension = root / "lib" / "python3.11" / "site-packages" / "pkg" / "_ext.so"
    extension.write_bytes(built.libfoo.read_bytes())
    (root / "lib" / "foo.o").write_bytes(built.obj.read_bytes())
    (root / "share" / "README.txt").write_text("hello\n")
    (root / "share" / "garbage").write_bytes(b"\x7fELF" + b"\x00" * 40)
    (root / "share" / "truncated.so").write_bytes(built.libfoo.read_bytes()[:100])
    foreign = _foreign_copy(built.libfoo, root / "lib" / "libfoo-aarch64.so")
    # Neither a symlinked directory nor a symlinked file outside the tree is followed.
    (outside / "libbar.so").write_bytes(built.libfoo.read_bytes())
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "bin" / "libbar.so").symlink_to(outside / "libbar.so")

    infos, skipped = scan_tree(root)

    assert [info.path for info in infos] == sorted([lib, app, app_old, extension], key=str)
    assert skipped == [foreign]
    by_path = {info.path: info for info in infos}
    assert by_path[app].runpath == ("$ORIGIN/lib",)
    assert by_path[app_old].rpath == ("$ORIGIN/lib",)
    assert by_path[lib].soname == "libfoo.so.1"


def test_scan_tree_with_static_executables_reports_nothing_for_them(
    tmp_path: Path, built: Built
) -> None:
    root = tmp_path / "out"
    root.mkdir()
    static = _static_link("static", "-static", cwd=tmp_path)
    (root / "static").write_bytes(static.read_bytes())
    (root / "libfoo.so").write_bytes(built.libfoo.read_bytes())
    infos, skipped = scan_tree(root)
    assert [info.path for info in infos] == [root / "libfoo.so"]
    assert skipped == []


def test_scan_tree_of_an_empty_tree_is_empty(tmp_path: Path) -> None:
    assert scan_tree(tmp_path) == ([], [])
