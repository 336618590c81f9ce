"""Finding the Python a build uses, and what it is: version, ABI, markers and tags.

A recipe asks for an interpreter by version (``python = "3.13"``), by specifier, or by path;
without a request the project's ``requires-python`` decides. Candidates are the CPython
installs on ``PATH``, in pyenv (``$PYENV_ROOT``, default ``~/.pyenv``) and among uv's managed
Pythons; virtual environments are skipped. Each candidate is asked once, by running it,
for its marker environment and build configuration, so markers and wheel tags are
evaluated for the interpreter that will run the application, not for the one running
lockbox.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packaging import tags
from packaging.markers import Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.version import Version

from lockbox.errors import InterpreterNotFound, ToolFailed, ToolMissing
from lockbox.progress import Progress, silent
from lockbox.tools.run import run

# Runs inside the candidate interpreter (any Python 3), so it uses the standard library only.
_PROBE = r"""
import json, os, platform, sys, sysconfig
impl = sys.implementation
v = impl.version
implementation_version = "%d.%d.%d" % (v.major, v.minor, v.micro)
if v.releaselevel != "final":
    implementation_version += v.releaselevel[0] + str(v.serial)
names = ("SOABI", "EXT_SUFFIX", "LIBDIR", "LDLIBRARY", "INCLUDEPY", "MULTIARCH",
         "Py_GIL_DISABLED", "Py_ENABLE_SHARED", "VERSION", "CC", "CXX", "INSTSONAME")
bin_dir = os.path.dirname(sys.executable)
venv = [d for d in (bin_dir, os.path.dirname(bin_dir)) if os.path.isfile(os.path.join(d, "pyvenv.cfg"))]
json.dump({
    "executable": sys.executable,
    "prefix": sys.prefix,
    "venv": venv[0] if venv else None,
    "markers": {
        "implementation_name": impl.name,
        "implementation_version": implementation_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "sysconfig": {name: str(sysconfig.get_config_var(name)) for name in names},
    "paths": {name: sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib")},
}, sys.stdout)
"""


@dataclass(frozen=True)
class Interpreter:
    """A CPython install on this machine, as it describes itself."""

    executable: Path
    """The interpreter's path, symlinks resolved."""
    version: Version
    """Its full version (``3.13.0``)."""
    markers: Mapping[str, str]
    """Its PEP 508 marker environment."""
    sysconfig: Mapping[str, str]
    """Build configuration (``SOABI``, ``EXT_SUFFIX``, ``LIBDIR``, ``LDLIBRARY``, …)."""
    paths: Mapping[str, str] = field(default_factory=dict)
    """``stdlib``, ``platstdlib`` and ``purelib`` directories."""
    prefix: Path = Path("/")
    """``sys.prefix``: where the install lives."""

    @property
    def free_threaded(self) -> bool:
        return self.sysconfig.get("Py_GIL_DISABLED") == "1"

    @property
    def abi(self) -> str:
        """The CPython ABI tag, e.g. ``cp313`` or ``cp313t``."""
        return f"cp{self.version.major}{self.version.minor}" + ("t" if self.free_threaded else "")

    @property
    def label(self) -> str:
        return f"CPython {self.version}{' (free-threaded)' if self.free_threaded else ''}"

    def evaluate(self, marker: Marker, extra: str = "") -> bool:
        """Whether ``marker`` holds for this interpreter (with ``extra`` for extra markers)."""
        return marker.evaluate({**self.markers, "extra": extra})

    @cached_property
    def tags(self) -> tuple[Tag, ...]:
        """The wheel tags this interpreter accepts, most specific first.

        The platform tags are the host's (manylinux from its glibc): the interpreter runs here.
        """
        python_version = (self.version.major, self.version.minor)
        platforms = list(tags.platform_tags())
        return (
            *tags.cpython_tags(python_version, abis=[self.abi], platforms=platforms),
            *tags.compatible_tags(
                python_version, f"cp{python_version[0]}{python_version[1]}", platforms
            ),
        )

    @cached_property
    def tag_ranks(self) -> Mapping[Tag, int]:
        """Each accepted tag's position in :attr:`tags` (0 is the most specific)."""
        return {tag: position for position, tag in enumerate(self.tags)}


def probe(executable: Path, progress: Progress = silent) -> Interpreter:
    """Ask the Python at ``executable`` what it is."""
    try:
        result = run([executable, "-I", "-S", "-c", _PROBE], progress=progress)
        data = json.loads(result.stdout)
    except (ToolFailed, ToolMissing, json.JSONDecodeError, PermissionError, OSError) as error:
        raise InterpreterNotFound(f"{executable} is not a working Python: {error}") from None
    if data["markers"]["implementation_name"] != "cpython":
        raise InterpreterNotFound(
            f"{executable} is {data['markers']['implementation_name']}; lockbox builds with CPython"
        )
    if data["venv"]:
        raise InterpreterNotFound(
            f"{executable} belongs to the virtual environment {data['venv']}; give the "
            "Python it was made from (its pyvenv.cfg names it as `home`)"
        )
    return Interpreter(
        executable=Path(os.path.realpath(data["executable"])),
        version=Version(data["markers"]["python_full_version"]),
        markers=data["markers"],
        sysconfig=data["sysconfig"],
        paths=data["paths"],
        prefix=Path(data["prefix"]),
    )


def parse_request(request: str) -> SpecifierSet:
    """A version request (``3.13``, ``3.13.1``, ``>=3.12,<3.14``) as a specifier set."""
    text = request.strip()
    if re.fullmatch(r"\d+(\.\d+){0,2}", text):
        parts = text.split(".")
        return SpecifierSet(f"=={text}" if len(parts) == 3 else f"=={text}.*")
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise InterpreterNotFound(
            f'python = {request!r} is neither a version ("3.13"), a version specifier '
            '(">=3.12,<3.14") nor a path to an interpreter'
        ) from None


def candidate_paths(environ: Mapping[str, str]) -> Iterator[Path]:
    """Places a CPython may be installed, in order of preference, without duplicates."""
    seen: set[str] = set()
    names = re.compile(r"python3(\.\d+)?")

    def unique(path: Path) -> Iterator[Path]:
        real = os.path.realpath(path)
        if real not in seen and os.access(real, os.X_OK) and os.path.isfile(real):
            seen.add(real)
            yield path

    path_dirs, install_roots = _search_dirs(environ)
    for directory in path_dirs:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in entries:
            if names.fullmatch(name):
                yield from unique(Path(directory, name))
    for root in install_roots:
        for install in sorted(root.glob("*/bin/python3")):
            yield from unique(install)


def _search_dirs(environ: Mapping[str, str]) -> tuple[list[Path], list[Path]]:
    """The ``PATH`` directories searched for ``python3*``, and the roots (pyenv's versions,
    uv's managed Pythons) whose ``*/bin/python3`` are candidates."""
    path_dirs = [
        Path(directory)
        for directory in environ.get("PATH", "").split(os.pathsep)
        # pyenv shims re-dispatch; pyenv's versions are listed instead
        if directory and "shims" not in Path(directory).parts
    ]
    home = Path(environ.get("HOME", "~")).expanduser()
    pyenv = Path(environ.get("PYENV_ROOT", home / ".pyenv"))
    uv_pythons = Path(
        environ.get("UV_PYTHON_INSTALL_DIR")
        or Path(environ.get("XDG_DATA_HOME", home / ".local/share")) / "uv/python"
    )
    return path_dirs, [pyenv / "versions", uv_pythons]


def discovery_paths(request: str | None, environ: Mapping[str, str]) -> list[Path]:
    """What :func:`find_interpreter` looks at before it runs a candidate: the path a recipe
    names, or the directories it lists. A new install shows in their modification times."""
    if request is not None and "/" in request:
        return [Path(request)]
    path_dirs, install_roots = _search_dirs(environ)
    return [*path_dirs, *install_roots]


def _version_in_path(path: Path) -> Version | None:
    """The full version an install's directory is named after (pyenv's ``versions/3.13.0``,
    uv's ``cpython-3.13.0-linux-…``), if it is."""
    for part in reversed(path.parts[:-1]):
        found = re.fullmatch(r"(?:cpython-)?(\d+\.\d+\.\d+)(?:-.*)?", part)
        if found:
            return Version(found.group(1))
    return None


def find_interpreter(
    request: str | None,
    requires_python: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    progress: Progress = silent,
) -> Interpreter:
    """The interpreter a recipe asks for, checked against the project's requires-python,
    searched for where ``environ`` says (by default this process's environment).

    With a version request or none, the newest matching CPython found wins."""
    allowed = SpecifierSet(requires_python or "")
    if request is not None and "/" in request:
        interpreter = probe(Path(request), progress)
        if not allowed.contains(interpreter.version, prereleases=True):
            raise InterpreterNotFound(
                f"{request} is Python {interpreter.version}, but the project requires "
                f"Python {requires_python}"
            )
        return interpreter

    wanted = parse_request(request) if request is not None else SpecifierSet()
    found: list[Interpreter] = []
    if environ is None:
        from lockbox.environment import Environment

        environ = Environment.from_process()
    for path in candidate_paths(environ):
        hint = _version_in_path(path)
        if hint is not None and not (
            wanted.contains(hint, prereleases=True) and allowed.contains(hint, prereleases=True)
        ):
            continue  # an install named after another version: no need to run it
        try:
            found.append(probe(path, progress))
        except InterpreterNotFound as error:
            progress.debug(f"skipping {path}: {error}")
    matching = [
        interpreter
        for interpreter in found
        if wanted.contains(interpreter.version, prereleases=True)
        and allowed.contains(interpreter.version, prereleases=True)
        and not interpreter.free_threaded
    ]
    if matching:
        best = max(matching, key=lambda interpreter: interpreter.version)
        progress.debug(f"using {best.label} at {best.executable}")
        return best
    asked = (
        " and ".join(
            text
            for text in (
                f"python = {request!r}" if request is not None else "",
                f"requires-python {requires_python!r}" if requires_python else "",
            )
            if text
        )
        or "any CPython"
    )
    seen = ", ".join(f"{i.version} ({i.executable})" for i in found) or "none"
    raise InterpreterNotFound(
        f"no CPython on this machine matches {asked}; found: {seen}. Install a matching "
        "Python (e.g. `pyenv install 3.13`) or set `python` in the recipe to its path"
    )
