"""The application's ``bin/`` and ``pyvenv.cfg``: what makes its tree a virtual environment.

The dependency layer has no ``bin/`` (its scripts named the scratch environment). The
assembly phase recreates it for the final output path: ``python``, ``python3`` and
``pythonX.Y`` pointing at the interpreter, and a launcher for every ``console_scripts`` and
``gui_scripts`` entry point of every installed distribution, as an installer would write it.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lockbox.interpreters import Interpreter

_MAX_SHEBANG = 127
"""Longest ``#!`` line older kernels read whole; longer paths get a ``/bin/sh`` trampoline."""

_ENTRY = re.compile(r"^(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+))?\s*(\[.*\])?\s*$")


@dataclass(frozen=True)
class Script:
    name: str
    module: str
    attribute: str
    distribution: str


def write_environment(out_host: Path, out: Path, interpreter: Interpreter, app_name: str) -> None:
    """``bin/python*`` links and ``pyvenv.cfg`` in ``out_host``, an environment that will
    live at ``out``."""
    bin_dir = out_host / "bin"
    bin_dir.mkdir(exist_ok=True)
    version = interpreter.version
    os.symlink(interpreter.executable, bin_dir / "python")
    for alias in ("python3", f"python{version.major}.{version.minor}"):
        os.symlink("python", bin_dir / alias)
    (out_host / "pyvenv.cfg").write_text(
        f"home = {interpreter.executable.parent}\n"
        "include-system-site-packages = false\n"
        f"version = {version}\n"
        f"executable = {interpreter.executable}\n"
        f"lockbox-app = {app_name}\n",
        encoding="utf-8",
    )


def entry_point_scripts(site_packages: Path) -> list[Script]:
    """Every console and GUI script declared by a distribution in ``site_packages``, sorted
    by distribution; a later distribution's script of the same name wins."""
    scripts: list[Script] = []
    for dist_info in sorted(site_packages.glob("*.dist-info")):
        entry_points = dist_info / "entry_points.txt"
        if not entry_points.is_file():
            continue
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
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
                scripts.append(Script(name, match.group("module"), match.group("attr"),
                                      distribution))
    return scripts


def write_scripts(out_host: Path, out: Path, scripts: list[Script]) -> dict[str, list[str]]:
    """Write a launcher per script into ``out_host/bin``. Returns the names claimed by more
    than one distribution, with those distributions."""
    bin_dir = out_host / "bin"
    owners: dict[str, list[str]] = {}
    for script in scripts:
        owners.setdefault(script.name, []).append(script.distribution)
        path = bin_dir / script.name
        path.unlink(missing_ok=True)
        path.write_text(_launcher(out / "bin" / "python", script), encoding="utf-8")
        path.chmod(0o755)
    return {name: dists for name, dists in owners.items() if len(dists) > 1}


def _launcher(python: Path, script: Script) -> str:
    head = script.attribute.split(".")[0]
    body = (
        "import sys\n"
        f"from {script.module} import {head}\n"
        "if __name__ == \"__main__\":\n"
        "    sys.argv[0] = sys.argv[0].removesuffix(\".exe\")\n"
        f"    sys.exit({script.attribute}())\n"
    )
    if len(f"#!{python}") <= _MAX_SHEBANG:
        return f"#!{python}\n{body}"
    # A line that is a no-op string to Python and an exec to sh.
    return f"#!/bin/sh\n'''exec' '{python}' \"$0\" \"$@\"\n' '''\n{body}"
