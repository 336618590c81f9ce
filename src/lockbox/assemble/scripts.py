"""The application's ``bin/`` and ``pyvenv.cfg``: what makes its tree a virtual environment.

The dependency layer has no ``bin/`` (its scripts named the scratch environment). The
assembly phase recreates it: ``python``, ``python3`` and ``pythonX.Y`` pointing by relative
links at the interpreter's entry (linked or copied to ``OUT/python``), and a launcher for
every ``console_scripts`` and ``gui_scripts`` entry point of every installed distribution.
Nothing names an absolute path, so the tree can be moved: ``pyvenv.cfg`` has no ``home``
(CPython then finds its base installation through the real path of ``bin/python``), and
launchers run the ``python`` beside their own real path.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

from lockbox.inputs.interpreters import Interpreter

_ENTRY = re.compile(r"^(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+))?\s*(\[.*\])?\s*$")

_TRAMPOLINE = """#!/bin/sh
'''exec' "$(dirname -- "$(realpath -- "$0")")/python" "$0" "$@"
' '''
"""
"""The launchers' first lines: to sh, an exec of the python beside the launcher's real
path; to Python, a string statement that does nothing."""


@dataclass(frozen=True)
class Script:
    name: str
    module: str
    attribute: str
    distribution: str


def write_environment(
    out_host: Path, executable: str, interpreter: Interpreter, app_name: str
) -> None:
    """``bin/python*`` links and ``pyvenv.cfg`` in ``out_host``, whose ``python`` is the
    interpreter's entry and ``executable`` the interpreter's path inside it."""
    bin_dir = out_host / "bin"
    bin_dir.mkdir(exist_ok=True)
    version = interpreter.version
    (bin_dir / "python").symlink_to(f"../python/{executable}")
    for alias in ("python3", f"python{version.major}.{version.minor}"):
        (bin_dir / alias).symlink_to("python")
    (out_host / "pyvenv.cfg").write_text(
        f"include-system-site-packages = false\nversion = {version}\nlockbox-app = {app_name}\n",
        encoding="utf-8",
    )
    # An application in the store is immutable, but root writes anywhere: without this,
    # its first import of a module without a .pyc would write one into the entry.
    site = out_host / "lib" / f"python{version.major}.{version.minor}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "_lockbox_read_only.pth").write_text(
        "import sys; sys.dont_write_bytecode = True\n", encoding="utf-8"
    )


class _EntryPoints(configparser.ConfigParser):
    """``entry_points.txt``: script names keep their case."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def entry_point_scripts(site_packages: Path) -> list[Script]:
    """Every console and GUI script declared by a distribution in ``site_packages``, sorted
    by distribution; a later distribution's script of the same name wins."""
    scripts: list[Script] = []
    for dist_info in sorted(site_packages.glob("*.dist-info")):
        entry_points = dist_info / "entry_points.txt"
        if not entry_points.is_file():
            continue
        parser = _EntryPoints(delimiters=("=",), interpolation=None)
        try:
            parser.read_string(entry_points.read_text(encoding="utf-8"))
        except configparser.Error:
            continue  # unreadable entry points install no scripts, as with pip
        distribution = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        for group in ("console_scripts", "gui_scripts"):
            if not parser.has_section(group):
                continue
            for name, value in parser.items(group):
                match = _ENTRY.match(value)
                if match is None or not match.group("attr") or "/" in name:
                    continue
                scripts.append(
                    Script(name, match.group("module"), match.group("attr"), distribution)
                )
    return scripts


def write_scripts(out_host: Path, scripts: list[Script]) -> dict[str, list[str]]:
    """Write a launcher per script into ``out_host/bin``. Returns the names claimed by more
    than one distribution, with those distributions."""
    bin_dir = out_host / "bin"
    owners: dict[str, list[str]] = {}
    for script in scripts:
        owners.setdefault(script.name, []).append(script.distribution)
        path = bin_dir / script.name
        path.unlink(missing_ok=True)
        head = script.attribute.split(".")[0]
        path.write_text(
            _TRAMPOLINE
            + "import sys\n"
            + f"from {script.module} import {head}\n"
            + 'if __name__ == "__main__":\n'
            + '    sys.argv[0] = sys.argv[0].removesuffix(".exe")\n'
            + f"    sys.exit({script.attribute}())\n",
            encoding="utf-8",
        )
        path.chmod(0o755)
    return {name: dists for name, dists in owners.items() if len(dists) > 1}
