"""The interpreter as a store entry: a host CPython made relocatable and self-contained.

The application's ``bin/python`` must not depend on where the build machine had its
interpreter. This module imports a host installation (pyenv's, a ``--enable-shared`` build
whose executable finds ``libpython`` by an absolute run path) as a ``python`` entry:

- copied without what a running application never uses: the test suite (``test/``,
  ``idlelib/idle_test``), the static library and build files (``config-X.Y-*/``), the
  Tk GUI parts (``tkinter/``, ``idlelib/``, ``turtledemo/``, the ``_tkinter`` module: they
  would drag in X11), the interpreter's own ``site-packages`` (pip and the like; the
  application has its own), ``__pycache__``, every ``bin/`` script but the interpreter;
- its ELF files resolved and relinked relative to ``$ORIGIN`` with the host libraries its
  extension modules need (OpenSSL, libffi, SQLite, zlib, …) bundled into its ``lib/``
  (:mod:`lockbox.native.relink`);
- its standard library compiled to unchecked-hash ``.pyc`` files (the entry is read-only:
  Python could not cache them itself);
- registered, input-addressed by the installation's identity (path, version, size and
  modification time of the executable and ``libpython``), the host libraries it bundles
  (path and SHA-256 of each, :mod:`lockbox.native.hostlibs`), patchelf's version and lockbox's
  identity, so that the next build finds it and an upgraded host library makes a new one.

CPython finds its standard library relative to the executable's real location, so the entry
works from any path.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import build_identity, fs
from lockbox.errors import PythonImportError
from lockbox.inputs.interpreters import Interpreter
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store, inputs_digest
from lockbox.tools.sandbox import REPRODUCIBLE_ENV

if TYPE_CHECKING:
    from lockbox.native.hostlibs import HostLibraries
    from lockbox.tools.patchelf import Patchelf
    from lockbox.tools.toolbox import Toolbox

_LEFT_OUT_AT_TOP = ("test", "idlelib", "tkinter", "turtledemo", "config-*", "site-packages")
"""Directories of the standard library left out."""
_LEFT_OUT = ("__pycache__", "*.pyc", "_tkinter.*", "*.a")
"""Names left out wherever they are."""


@dataclass(frozen=True)
class PythonEntry:
    entry: Entry
    executable: str
    """The interpreter's path inside the entry, e.g. ``bin/python3.13``."""
    reused: bool
    consulted: tuple[str, ...] = ()
    """Every path whose change could change the entry's address: the interpreter's
    executable and libpython, the host libraries it bundles, patchelf."""


def installation_identity(interpreter: Interpreter) -> dict[str, object]:
    """What stands for the host installation's bytes, with lockbox's identity."""
    # Size and modification time stand for the bytes: reading libpython (30 MB) on every
    # lookup would cost more than the rest of a lookup; reinstalling changes both.
    fingerprint = {
        path.name: [info.st_size, info.st_mtime_ns]
        for path in fingerprint_paths(interpreter)
        for info in (path.stat(),)
    }
    return {
        "executable": str(interpreter.executable),
        "version": str(interpreter.version),
        "abi": interpreter.abi,
        "fingerprint": fingerprint,
        "lockbox": build_identity(),
    }


def python_inputs(
    identity: Mapping[str, object], bundle: bool, libraries: HostLibraries, patchelf: Patchelf
) -> dict[str, object]:
    """Everything the entry's bytes depend on, from the installation's ``identity``: its
    store digest is made from this."""
    return {
        **identity,
        "bundle": bundle,
        "libraries": libraries.inputs(bundle),
        "patchelf": patchelf.version,
    }


def interpreter_libraries(
    interpreter: Interpreter, identity: Mapping[str, object], store: Store
) -> HostLibraries:
    """The host libraries the entry of ``interpreter`` bundles (or links to). What its ELF
    files need is read once per installation (as its ``identity`` stands for it)."""
    from lockbox.native.hostlibs import cached_needs, files_needs, host_closure

    key = inputs_digest("python", f"python-{interpreter.version}", identity)
    needed = cached_needs(
        store, f"python-{key}", lambda: files_needs(installation_files(interpreter))
    )
    return host_closure(needed, store)


def installation_files(interpreter: Interpreter) -> list[Path]:
    """The regular files of the installation that its entry holds: the executable,
    libpython, the standard library without what is left out."""
    stdlib = Path(interpreter.paths.get("stdlib", ""))
    files = [interpreter.executable, *_libpython(interpreter)]
    ignore = _ignore(stdlib)
    for directory, directories, others in fs.walk(stdlib):
        left_out = ignore(directory, [*directories, *others])
        directories[:] = [name for name in directories if name not in left_out]
        for name in others:
            path = Path(directory, name)
            if name not in left_out and not path.is_symlink():
                files.append(path)
    return files


def fingerprint_paths(interpreter: Interpreter) -> list[Path]:
    """The files whose size and modification time stand for the interpreter's bytes."""
    return [interpreter.executable, *_libpython(interpreter)]


def import_python(
    interpreter: Interpreter,
    store: Store,
    tools: Toolbox,
    *,
    bundle: bool = True,
    progress: Progress = silent,
) -> PythonEntry:
    """The ``python`` entry of ``interpreter`` in ``store``, made if it is not there."""

    version = interpreter.version
    short = f"python{version.major}.{version.minor}"
    name = f"python-{version}"
    stdlib = Path(interpreter.paths.get("stdlib", ""))
    if not (stdlib / "os.py").is_file():
        raise PythonImportError(
            f"{interpreter.executable}: its standard library is not at "
            f"{stdlib}; lockbox imports CPython installs with a lib/{short}"
        )
    patchelf = tools.patchelf
    identity = installation_identity(interpreter)
    libraries = interpreter_libraries(interpreter, identity, store)
    inputs = python_inputs(identity, bundle, libraries, patchelf)
    consulted = (
        *map(str, fingerprint_paths(interpreter)),
        *libraries.consulted,
        str(patchelf.executable),
    )
    existing = store.find_inputs("python", name, inputs)
    if existing is not None:
        return PythonEntry(existing, f"bin/{short}", reused=True, consulted=consulted)
    from lockbox.native.elf import scan_tree
    from lockbox.native.relink import relink
    from lockbox.native.resolve import resolve

    progress.info(f"importing {interpreter.label} from {interpreter.prefix} into the store")
    with store.staging() as stage:
        content = stage / "content"
        (content / "bin").mkdir(parents=True)
        shutil.copyfile(interpreter.executable, content / "bin" / short)
        os.chmod(content / "bin" / short, 0o755)
        for alias in ("python3", "python"):
            os.symlink(short, content / "bin" / alias)
        (content / "lib").mkdir()
        for library in _libpython(interpreter):
            shutil.copyfile(library, content / "lib" / library.name)
        fs.copy_tree(stdlib, content / "lib" / short, ignore=_ignore(stdlib))
        (content / "lib" / short / "site-packages").mkdir()
        elfs, foreign = scan_tree(content)
        for path in foreign:
            progress.warning(f"{path} is for another machine; left as it is")
        resolution = resolve(content, elfs, progress=progress)
        report = relink(content, resolution, patchelf, bundle=bundle, progress=progress)
        uncovered = libraries.uncovered(report.bundled.values())
        if uncovered:
            raise PythonImportError(
                f"lockbox bundled {', '.join(uncovered)} without counting "
                "them among the interpreter entry's inputs: a bug of "
                "lockbox, please report it"
            )
        _compile_bytecode(content / "bin" / short, content / "lib" / short, tools.varied, progress)
        packages = tools.dpkg.owners_of(sorted(report.bundled.values()))
        metadata = {
            "bundled": {
                name: {"from": source, "package": packages.get(source, "")}
                for name, source in sorted(report.bundled.items())
            }
        }
        entry = store.register(content, name=name, kind="python", inputs=inputs, metadata=metadata)
    progress.info(f"interpreter entry {entry.path} ({len(report.bundled)} libraries bundled)")
    return PythonEntry(entry, f"bin/{short}", reused=False, consulted=consulted)


def _compile_bytecode(
    python: Path, stdlib: Path, varied: Mapping[str, str], progress: Progress
) -> None:
    """Unchecked-hash ``.pyc`` files for the standard library: the entry is read-only, so
    without them every start would compile what it imports (0.18 s instead of 0.04 s for
    ``import json, email, http.client`` here)."""
    from lockbox.tools.run import run

    progress.info("compiling the standard library's bytecode")
    run(
        compileall_argv(python, [stdlib], strip=stdlib.parent.parent, prepend="/lockbox/python"),
        env={**BYTECODE_ENV, **varied},
        progress=progress,
    )


def compileall_argv(
    python: str | os.PathLike[str],
    targets: Sequence[str | os.PathLike[str]],
    *,
    strip: str | os.PathLike[str] | None = None,
    prepend: str | None = None,
) -> list[str]:
    """The command with which ``python`` writes unchecked-hash ``.pyc`` files (checked by
    nothing, valid in a read-only tree, the same bytes on every rebuild) for ``targets``,
    rewriting any that are there (``-f``). With ``strip`` and ``prepend``, the source paths
    recorded in the code objects are fixed names instead of where the files are while they
    are compiled; CPython puts the real path in when it loads a ``.pyc`` anyway. Python
    starts without ``site`` (``-S``): no ``.pth`` file of the packages being compiled, nor
    any code one names, runs."""
    argv = [
        os.fspath(python),
        "-S",
        "-m",
        "compileall",
        "-q",
        "-f",
        "-j",
        "0",
        "--invalidation-mode",
        "unchecked-hash",
    ]
    if strip is not None and prepend is not None:
        argv += ["-s", os.fspath(strip), "-p", prepend]
    return argv + [os.fspath(target) for target in targets]


BYTECODE_ENV: Mapping[str, str] = {
    **REPRODUCIBLE_ENV,
    "PATH": "/usr/bin:/bin",
    "PYTHONNOUSERSITE": "1",
    # Otherwise the interpreter caches what compileall itself imports, with timestamps.
    "PYTHONDONTWRITEBYTECODE": "1",
}
"""The environment of a compileall run that is not the application's own."""


def _libpython(interpreter: Interpreter) -> list[Path]:
    """The shared libpython the executable needs, if it was built with one."""
    libdir = Path(interpreter.sysconfig.get("LIBDIR", ""))
    instsoname = interpreter.sysconfig.get("INSTSONAME", "")
    if interpreter.sysconfig.get("Py_ENABLE_SHARED") == "1" and instsoname:
        library = libdir / instsoname
        if library.is_file():
            return [library]
    return []


def _ignore(stdlib: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        patterns = _LEFT_OUT + (_LEFT_OUT_AT_TOP if Path(directory) == stdlib else ())
        return {name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)}

    return ignore
