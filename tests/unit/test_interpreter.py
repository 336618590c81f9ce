"""The interpreter entry, imported from a small installation made here.

The installation has what :func:`lockbox.assemble.interpreter.import_python` looks at: an
executable (a script that records how it is started, then runs the interpreter running the
tests), a standard library with parts that are left out, and one extension module, built
by the system C compiler, that needs the host's ``libz.so.1``.
"""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.assemble.interpreter import (
    BYTECODE_ENV,
    PythonImportError,
    import_python,
)
from lockbox.environment import CHECK_ENV, Environment
from lockbox.inputs.interpreters import Interpreter
from lockbox.native.resolve import host_libraries
from lockbox.store.store import Store
from lockbox.tools.dpkg import Dpkg
from tests.fakes import FakePatchelf, FakeToolbox, fake_installation

SHORT = f"python{sys.version_info.major}.{sys.version_info.minor}"
EXTENSION = f"_zfake.cpython-{sys.version_info.major}{sys.version_info.minor}-x86_64-linux-gnu.so"
VARIED = {"FAKETIME": "@2031-01-01 00:00:00", "LOCKBOX_VARIED": "1"}


@dataclass(frozen=True)
class Installation:
    interpreter: Interpreter
    started: Path
    """Where the executable records its arguments (``argv``) and environment (``env``)."""
    libz: Path


@pytest.fixture(scope="module")
def extension(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An extension module needing libz.so.1, and the host's libz.so.1."""
    libz = host_libraries().get("libz.so.1")
    assert libz is not None, "zlib (Debian: zlib1g) is part of every Debian system"
    work = tmp_path_factory.mktemp("extension")
    (work / "ext.c").write_text(
        "const char *zlibVersion(void);\nconst char *v(void) { return zlibVersion(); }\n"
    )
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", EXTENSION, "ext.c", str(libz)],
        cwd=work,
        check=True,
        capture_output=True,
    )
    return work / EXTENSION, Path(os.path.realpath(libz))  # what resolution names


@pytest.fixture
def installation(tmp_path: Path, extension: tuple[Path, Path]) -> Installation:
    started = tmp_path / "started"
    interpreter = fake_installation(
        tmp_path / "prefix",
        started,
        {
            "json/__init__.py": "def dumps(value): return repr(value)\n",
            "test/test_os.py": "",
            "idlelib/shell.py": "",
            "site-packages/pip/__init__.py": "",
            "__pycache__/os.cpython-311.pyc": "stale",
            f"lib-dynload/{EXTENSION}": extension[0].read_bytes(),
        },
    )
    return Installation(interpreter, started, extension[1])


def _tools(patchelf: FakePatchelf) -> FakeToolbox:
    """patchelf and the host's dpkg (which names the bundled libraries' packages), in the
    environment ``lockbox check`` gives its rebuild."""
    environment = Environment({CHECK_ENV: json.dumps(VARIED)})
    return FakeToolbox(environment, patchelf=patchelf, dpkg=Dpkg.find())


def test_the_entry_is_relinked_in_one_call_and_compiled_with_the_varied_clock(
    installation: Installation, tmp_path: Path
) -> None:
    patchelf = FakePatchelf()
    with Store.open(tmp_path / "store") as store:
        python = import_python(installation.interpreter, store, _tools(patchelf))

    # One patchelf call: the extension module, pointed at the bundled libz two levels up.
    ((files, runpath),) = patchelf.calls
    assert runpath == "$ORIGIN/../.."
    (extension,) = files
    content = extension.parents[3]
    assert extension == content / "lib" / SHORT / "lib-dynload" / EXTENSION
    entry = python.entry.path
    assert not python.reused and python.executable == f"bin/{SHORT}"
    assert (entry / "lib" / "libz.so.1").read_bytes() == installation.libz.read_bytes()
    assert (
        (entry / "lib" / SHORT / "lib-dynload" / EXTENSION)
        .read_bytes()
        .endswith(b"\0runpath=$ORIGIN/../..")
    )
    assert python.entry.inputs["patchelf"] == "0.18.0"
    assert python.entry.inputs["metadata"]["bundled"]["libz.so.1"]["from"] == str(installation.libz)
    assert str(patchelf.executable) in python.consulted

    # The bytecode compile: exactly lockbox's environment with lockbox check's variables
    # over it, nothing of the caller's, and the source paths fixed.
    argv = (installation.started / "argv").read_text().splitlines()
    stdlib = content / "lib" / SHORT
    assert argv == [
        "-S",
        "-m",
        "compileall",
        "-q",
        "-f",
        "-j",
        "0",
        "--invalidation-mode",
        "unchecked-hash",
        "-s",
        str(content),
        "-p",
        "/lockbox/python",
        str(stdlib),
    ]
    env = dict(
        line.split("=", 1) for line in (installation.started / "env").read_text().splitlines()
    )
    assert {**BYTECODE_ENV, **VARIED}.items() <= env.items()
    assert "HOME" not in env

    pyc = entry / "lib" / SHORT / "__pycache__" / f"os.{sys.implementation.cache_tag}.pyc"
    data = pyc.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, never checked
    assert marshal.loads(data[16:]).co_filename == f"/lockbox/python/lib/{SHORT}/os.py"
    # What a running application never uses is left out; the stale cache with it.
    assert sorted(os.listdir(entry / "lib" / SHORT)) == [
        "__pycache__",
        "json",
        "lib-dynload",
        "os.py",
        "site-packages",
    ]
    assert list((entry / "lib" / SHORT / "site-packages").iterdir()) == []
    assert sorted(os.listdir(entry / "bin")) == ["python", "python3", SHORT]
    assert os.readlink(entry / "bin" / "python") == SHORT


def test_an_unchanged_installation_is_a_lookup_and_patchelf_is_an_input(
    installation: Installation, tmp_path: Path
) -> None:
    with Store.open(tmp_path / "store") as store:
        first = import_python(installation.interpreter, store, _tools(FakePatchelf()))
        (installation.started / "argv").unlink()

        patchelf = FakePatchelf()
        again = import_python(installation.interpreter, store, _tools(patchelf))
        assert again.reused and again.entry.path == first.entry.path
        assert patchelf.calls == []
        assert not (installation.started / "argv").exists()  # nothing compiled

        newer = import_python(installation.interpreter, store, _tools(FakePatchelf("0.19.0")))
        assert not newer.reused and newer.entry.path != first.entry.path


def test_without_bundling_the_run_path_names_the_host_library(
    installation: Installation, tmp_path: Path
) -> None:
    patchelf = FakePatchelf()
    with Store.open(tmp_path / "store") as store:
        python = import_python(installation.interpreter, store, _tools(patchelf), bundle=False)

    assert [runpath for _, runpath in patchelf.calls] == [str(installation.libz.parent)]
    assert not (python.entry.path / "lib" / "libz.so.1").exists()
    assert python.entry.inputs["metadata"]["bundled"] == {}


def test_an_installation_without_its_standard_library_is_refused(
    installation: Installation, tmp_path: Path
) -> None:
    (Path(installation.interpreter.paths["stdlib"]) / "os.py").unlink()
    with (
        Store.open(tmp_path / "store") as store,
        pytest.raises(PythonImportError, match="its standard library is not at"),
    ):
        import_python(installation.interpreter, store, FakeToolbox())
