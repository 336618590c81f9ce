"""The interpreter imported into the store: relocatable, self-contained, reproducible."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lockbox.assemble.interpreter import import_python
from lockbox.environment import Environment
from lockbox.inputs.interpreters import find_interpreter
from lockbox.native.elf import read_elf
from lockbox.store.store import Store
from lockbox.tools.toolbox import Toolbox

pytestmark = pytest.mark.integration

INTERPRETER = find_interpreter("3.12", None)
TOOLS = Toolbox(Environment.from_process())


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = import_python(INTERPRETER, Store.open(tmp_path_factory.mktemp("one") / "store"), TOOLS)
    second = import_python(INTERPRETER, Store.open(tmp_path_factory.mktemp("two") / "store"), TOOLS)
    assert not first.reused and not second.reused
    assert first.entry.nar_hash == second.entry.nar_hash  # built twice, same bytes
    return first.entry.path, second.entry.path


def test_the_entry_is_trimmed_and_relinked_relative_to_itself(entries: tuple[Path, Path]) -> None:
    entry = entries[0]
    stdlib = entry / "lib" / "python3.12"
    assert (stdlib / "os.py").is_file() and not (stdlib / "test").exists()
    assert not (stdlib / "tkinter").exists() and not list(stdlib.glob("lib-dynload/_tkinter*"))
    assert sorted(p.name for p in (entry / "bin").iterdir()) == ["python", "python3", "python3.12"]
    executable = read_elf(entry / "bin" / "python3.12")
    assert executable is not None and executable.runpath == ("$ORIGIN/../lib",)
    ssl = read_elf(next((stdlib / "lib-dynload").glob("_ssl.*.so")))
    assert ssl is not None and ssl.runpath == ("$ORIGIN/../..",)
    assert (entry / "lib" / "libssl.so.3").is_file()
    pyc = (stdlib / "__pycache__" / "enum.cpython-312.pyc").read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # unchecked hash: valid in a read-only tree


def test_a_moved_copy_runs_with_its_own_libraries(
    entries: tuple[Path, Path], tmp_path: Path
) -> None:
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(entries[0], moved, symlinks=True)
    result = subprocess.run(
        [
            moved / "bin" / "python3",
            "-c",
            "import sys, ssl, sqlite3, ctypes, lzma, bz2, zlib, decimal; print(sys.prefix)",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(moved)
    ldd = subprocess.run(
        ["ldd", moved / "bin" / "python3.12"], capture_output=True, text=True
    ).stdout
    assert f"{moved}/bin/../lib/libpython3.12.so.1.0" in ldd


def test_bundled_libraries_record_their_origin_and_package(entries: tuple[Path, Path]) -> None:
    store = Store.open(entries[0].parent)
    entry = store.get(entries[0].name)
    assert entry is not None
    bundled = entry.inputs["metadata"]["bundled"]  # type: ignore[index]
    assert bundled["libssl.so.3"]["package"].startswith("libssl3")  # type: ignore[index]
    assert bundled["libssl.so.3"]["from"].startswith("/")  # type: ignore[index]


IMPORT = """\
import sys
from pathlib import Path
from lockbox.inputs.interpreters import probe
from lockbox.assemble.interpreter import import_python
from lockbox.store.store import Store
from lockbox.environment import Environment
from lockbox.tools.toolbox import Toolbox
imported = import_python(probe(Path(sys.argv[1])), Store.open(Path(sys.argv[2])), Toolbox(Environment.from_process()))
print(imported.entry.path, imported.reused)
"""


def test_a_changed_host_library_is_a_new_interpreter_entry(tmp_path: Path) -> None:
    """libffi (which ``_ctypes`` needs) upgraded on the host, simulated by mounting a copy
    with other bytes over it in a private mount namespace: the next import does not take
    the entry that bundles the old one."""
    from lockbox.native.resolve import host_libraries

    host = host_libraries()["libffi.so.8"].resolve()
    changed = tmp_path / host.name
    changed.write_bytes(host.read_bytes() + b"\0lockbox test\0")  # still a loadable library
    store = tmp_path / "store"

    def imported(*mounts: str | Path) -> tuple[Path, bool]:
        result = subprocess.run(
            [
                shutil.which("bwrap"),
                "--dev-bind",
                "/",
                "/",
                *mounts,
                "--",
                sys.executable,
                "-c",
                IMPORT,
                INTERPRETER.executable,
                store,
            ]
            if mounts
            else [sys.executable, "-c", IMPORT, INTERPRETER.executable, store],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        path, reused = result.stdout.split()
        return Path(path), reused == "True"

    old, reused = imported()
    assert not reused
    assert imported() == (old, True)
    new, reused = imported("--ro-bind", changed, host)
    assert new != old and not reused
    assert (new / "lib" / "libffi.so.8").read_bytes() == changed.read_bytes()
    assert (old / "lib" / "libffi.so.8").read_bytes() == host.read_bytes()
    assert imported("--ro-bind", changed, host) == (new, True)
    assert imported() == (old, True)
