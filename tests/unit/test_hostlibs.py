"""The host libraries an entry bundles, found before it is built, on libraries built by the
system C compiler: an extension module that needs ``libmid.so.1`` (which needs
``libbottom.so.1``) and ``libghost.so.1`` (found nowhere)."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.native.hostlibs import LOADER_CACHE, entry_needs, file_needs, files_needs, host_closure
from lockbox.store import records
from lockbox.store.store import Store


@dataclass(frozen=True)
class Built:
    libs: Path
    """The recipe's library directory: libmid.so.1 and libbottom.so.1."""
    module: Path
    """What the entry's own files would be: needs libmid.so.1, libghost.so.1, libc.so.6."""


def _cc(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run(["cc", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _library(directory: Path, soname: str, source: str, *link: str | Path) -> Path:
    (directory / "source.c").write_text(source)
    _cc("-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", soname, "source.c", *link, cwd=directory)
    return directory / soname


@pytest.fixture
def built(tmp_path: Path) -> Built:
    libs, elsewhere, work = tmp_path / "libs", tmp_path / "elsewhere", tmp_path / "module"
    for directory in (libs, elsewhere, work):
        directory.mkdir()
    _library(libs, "libbottom.so.1", "int bottom(void) { return 1; }\n")
    _library(
        libs,
        "libmid.so.1",
        "int bottom(void);\nint mid(void) { return bottom(); }\n",
        "-L.",
        "-l:libbottom.so.1",
    )
    _library(elsewhere, "libghost.so.1", "int ghost(void) { return 2; }\n")
    module = _library(
        work,
        "module.so",
        "#include <stdio.h>\nint mid(void); int ghost(void);\n"
        'int run(void) { puts("run"); return mid() + ghost(); }\n',
        f"-L{libs}",
        "-l:libmid.so.1",
        f"-L{elsewhere}",
        "-l:libghost.so.1",
    )
    return Built(libs, module)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_closure_follows_what_each_library_found_needs(built: Built, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    needed = files_needs([built.module])
    assert "libc.so.6" in needed
    closure = host_closure(needed, store, recipe_paths=[built.libs], host={})
    mid, bottom = built.libs / "libmid.so.1", built.libs / "libbottom.so.1"
    # glibc's family is left to the loader; what is found nowhere is said so.
    assert closure.found == {
        "libmid.so.1": str(mid),
        "libghost.so.1": None,
        "libbottom.so.1": str(bottom),
    }
    assert closure.digests == {str(mid): _sha256(mid), str(bottom): _sha256(bottom)}
    assert closure.inputs(bundle=True) == {
        "libbottom.so.1": {"path": str(bottom), "sha256": _sha256(bottom)},
        "libghost.so.1": None,
        "libmid.so.1": {"path": str(mid), "sha256": _sha256(mid)},
    }
    # Without bundling, the run paths name the directories: the bytes are not the entry's.
    assert closure.inputs(bundle=False) == {
        "libbottom.so.1": str(bottom),
        "libghost.so.1": None,
        "libmid.so.1": str(mid),
    }
    assert set(closure.consulted) == {LOADER_CACHE, str(built.libs), str(mid), str(bottom)}
    assert closure.uncovered([str(mid), "/elsewhere/libx.so.1"]) == ["/elsewhere/libx.so.1"]


def test_other_bytes_are_other_inputs_and_the_first_library_on_the_paths_wins(
    built: Built, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "store")
    before = host_closure(["libmid.so.1"], store, recipe_paths=[built.libs], host={})
    upgraded = tmp_path / "upgraded"
    upgraded.mkdir()
    bottom = _library(
        upgraded,
        "libbottom.so.1",
        "int bottom(void) { return 1 + 1; }\nint added(void) { return 3; }\n",
    )
    after = host_closure(["libmid.so.1"], store, recipe_paths=[upgraded, built.libs], host={})
    assert after.found["libbottom.so.1"] == str(bottom)
    assert after.found["libmid.so.1"] == before.found["libmid.so.1"]
    assert after.inputs(bundle=True) != before.inputs(bundle=True)
    # The loader cache answers for what the recipe's paths do not hold, as it does for the
    # resolution of the build.
    host = {"libmid.so.1": built.libs / "libmid.so.1"}
    hosted = host_closure(["libmid.so.1"], store, recipe_paths=[upgraded], host=host)
    assert hosted.found == {
        "libmid.so.1": str(built.libs / "libmid.so.1"),
        "libbottom.so.1": str(bottom),
    }


def test_what_a_file_needs_is_kept_under_its_digest_and_read_only_once(
    built: Built, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "store")
    mid = built.libs / "libmid.so.1"
    assert file_needs(store, mid, _sha256(mid)) == ("libbottom.so.1",)
    kept = store.work_dir / "needed" / f"sha256-{_sha256(mid)}"
    assert kept.is_file()
    # A lookup takes the kept answer, without reading the library again.
    key = records.read_key(str(store.work_dir))
    assert key is not None
    place = f"needed/sha256-{_sha256(mid)}"
    kept.write_bytes(records.sign(key, place, b"lockbox-needed 2\nlibother.so.1\nend\n"))
    closure = host_closure(["libmid.so.1"], store, recipe_paths=[built.libs], host={})
    assert closure.found == {"libmid.so.1": str(mid), "libother.so.1": None}
    # An answer cut short, of another format, or not signed by the store is no answer:
    # the library is read again.
    for body in (b"lockbox-needed 2\nlibother.so.1\n", b"lockbox-needed 0\nlibother.so.1\nend\n"):
        kept.write_bytes(records.sign(key, place, body))
        assert file_needs(store, mid, _sha256(mid)) == ("libbottom.so.1",)
    kept.write_text("lockbox-needed 2\nlibother.so.1\nend\n")
    assert file_needs(store, mid, _sha256(mid)) == ("libbottom.so.1",)


def test_an_entry_is_scanned_once_for_what_its_files_need(built: Built, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    entry = store.add_tree(built.module.parent, name="module", kind="source")
    assert entry_needs(store, entry) == ("libc.so.6", "libghost.so.1", "libmid.so.1")
    assert (store.work_dir / "needed" / f"nar-{entry.nar_hash.hex}").is_file()
