"""Rewriting ELF files so that an output finds its shared libraries wherever it is put.

After resolution (:mod:`lockbox.native.resolve`), every library found on the host (or in the
recipe's library paths) is, by default, **bundled**: copied into the output's ``lib/``
under the name files ask for, once. Then every ELF file of the output whose run path must
change gets one: ``$ORIGIN``-relative entries to the directories its libraries are in, its
earlier ``$ORIGIN`` entries that still point inside the output kept, absolute entries
(build machines' paths) dropped. With ``bundle = false`` nothing is copied and run paths
name the host directories instead, as Nix names store paths.

Files are rewritten with patchelf, one call per group of files that get the same run path;
a file shared with another store entry by a hardlink is copied first, so that the other
entry never changes.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.native.resolve import Found, Resolution, origin_directories
from lockbox.progress import Progress, silent
from lockbox.tools.patchelf import Patchelf

if TYPE_CHECKING:
    from lockbox.native.elf import ElfInfo  # a lookup finds patchelf without pyelftools


@dataclass
class RelinkReport:
    bundled: dict[str, str] = field(default_factory=dict)
    """Bundled file name (in ``lib/``) → the host file it was copied from."""
    patched: list[str] = field(default_factory=list)
    """Files (relative to the output) whose run path was rewritten."""


def relink(
    root: Path,
    resolution: Resolution,
    patchelf: Patchelf,
    *,
    bundle: bool = True,
    progress: Progress = silent,
) -> RelinkReport:
    """Bundle (or link to) what ``resolution`` found outside ``root`` and set run paths."""
    report = RelinkReport()
    lib_dir = root / "lib"
    wanted: dict[Path, list[Found]] = dict(resolution.files)
    infos = dict(resolution.infos)
    if bundle:
        # A bundled library takes the name files ask for (its soname), not the host's
        # versioned file name.
        names: dict[Path, str] = {}
        for needs in (*resolution.files.values(), *resolution.host.values()):
            for found in needs:
                names.setdefault(found.path, found.name)
        for host_file, needs in resolution.host.items():
            target = lib_dir / names.get(host_file, host_file.name)
            if target.exists():
                continue
            lib_dir.mkdir(exist_ok=True)
            shutil.copyfile(host_file, target)
            os.chmod(target, 0o755)
            report.bundled[target.name] = str(host_file)
            wanted[target] = needs
            infos[target] = resolution.infos[host_file]
    runpaths: dict[str, list[Path]] = {}
    for file, needs in sorted(wanted.items()):
        info = infos[file]
        runpath = _runpath(file, info, needs, root, lib_dir, bundle)
        if runpath != ":".join(info.runpath or info.rpath):
            runpaths.setdefault(runpath, []).append(file)
    for runpath, files in sorted(runpaths.items()):
        for file in files:
            _own_copy(file)
        progress.debug(f"run path {runpath or '(none)'} for {len(files)} files")
        patchelf.set_runpath(files, runpath, progress)
        report.patched += [os.path.relpath(file, root) for file in files]
    report.patched.sort()
    return report


def _runpath(
    file: Path, info: ElfInfo, needs: Sequence[Found], root: Path, lib_dir: Path, bundle: bool
) -> str:
    entries = [
        entry
        for entry, directory in origin_directories(info, file.parent)
        if directory.is_relative_to(root)
    ]
    for found in needs:
        if found.where == "output":
            directory = found.path.parent
        elif bundle:
            directory = lib_dir
        else:
            entries.append(str(found.path.parent))
            continue
        relative = os.path.relpath(directory, file.parent)
        entries.append("$ORIGIN" if relative == "." else f"$ORIGIN/{relative}")
    return ":".join(dict.fromkeys(entries))


def _own_copy(file: Path) -> None:
    """Replace ``file`` by a copy of itself if other names (another entry, uv's cache)
    share its inode: patchelf rewrites in place."""
    info = os.lstat(file)
    if info.st_nlink <= 1:
        if not info.st_mode & stat.S_IWUSR:
            os.chmod(file, stat.S_IMODE(info.st_mode) | stat.S_IWUSR)
        return
    with fs.replacing(file) as temporary:
        shutil.copyfile(file, temporary)
        os.chmod(temporary, stat.S_IMODE(info.st_mode) | stat.S_IWUSR)
