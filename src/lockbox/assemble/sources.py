"""The project's sources an application is assembled from: which paths, and their digest.

The members uv.lock names, the recipe's copies and patches, each confined to the project
(:mod:`lockbox.inputs.paths`), read and hashed; the digest is one of the application's
inputs (:func:`lockbox.assemble.app.app_inputs`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox import fs
from lockbox.errors import AssemblyError
from lockbox.inputs.paths import confined
from lockbox.inputs.project import Project, read_toml

if TYPE_CHECKING:
    from lockbox.deps.members import Member
    from lockbox.inputs.plan import Plan


_IGNORED = ("__pycache__", "*.pyc", "*.pyo")
"""Never part of a project's sources: Python writes them on its own."""


@dataclass(frozen=True)
class Sources:
    """What the application is made of, besides the dependency layer."""

    members: tuple[Member, ...]
    """The workspace members and the project itself, when it is a package."""
    paths: tuple[str, ...]
    """Every project path the assembly reads, relative to the project root, sorted."""
    digest: str
    """SHA-256 over those paths' names, modes and bytes."""
    consulted: tuple[str, ...] = ()
    """Every file read and directory listed for the digest (absolute)."""
    elf_files: Mapping[str, str] = field(default_factory=dict)
    """Those of the files read that are ELF files (absolute) → the SHA-256 of their bytes,
    in hex: what the libraries they need are kept under (:mod:`lockbox.native.hostlibs`)."""


def read_sources(project: Project, plan: Plan) -> Sources:
    """The members and paths the assembly of ``project`` reads, with their digest."""
    from lockbox.deps.members import read_member

    roots = {project.root.resolve()}
    for planned in plan.by_form("member"):
        roots.add((project.root / planned.package.source.location).resolve())
    recipe = project.recipe.app
    members: list[Member] = []
    paths: list[Path] = [project.root / "pyproject.toml"]
    for root in sorted(roots):
        pyproject, _ = read_toml(root / "pyproject.toml")
        is_project = root == project.root.resolve()
        if is_project and "build-system" not in pyproject:
            continue  # a virtual project: uv installs nothing of it, nor does lockbox
        member = read_member(root, pyproject, modules=not (is_project and recipe.site_packages))
        members.append(member)
        paths += [root / "pyproject.toml"]
        for source, _ in member.modules:
            paths.append(
                _inside(
                    project,
                    _relative(project, source),
                    f"{root / 'pyproject.toml'}: the module of {member.name}",
                )
            )
    for key in ("site-packages", "root"):
        for index, copy in enumerate(getattr(recipe, key.replace("-", "_"))):
            paths.append(_inside(project, copy.source, f"recipe app.{key}[{index}]"))
    for index, patch in enumerate(recipe.patches):
        paths.append(_inside(project, patch, f"recipe app.patches[{index}]", link_ok=False))
    relative = sorted({_relative(project, path) for path in paths})
    digest, consulted, elf_files = _digest(project.root, relative)
    return Sources(tuple(members), tuple(relative), digest, consulted, elf_files)


def _relative(project: Project, path: Path) -> str:
    relative = os.path.relpath(path, project.root)
    if relative.startswith(".."):
        raise AssemblyError(
            f"{path} is outside the project {project.root}: lockbox "
            "assembles only what is inside it"
        )
    return relative


def _inside(project: Project, relative: str, key: str, *, link_ok: bool = True) -> Path:
    """The project path ``relative`` names, confined to the project (:mod:`lockbox.inputs.paths`);
    with ``link_ok`` it may itself be a symbolic link, which is copied as one."""
    path = confined(project.root, relative, key, within="the project", link_ok=link_ok)
    if not os.path.lexists(path):
        raise AssemblyError(f"{key}: {relative} does not exist in {project.root}")
    return path


def _digest(root: Path, paths: Sequence[str]) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """The digest of ``paths`` under ``root``, every path read or listed for it, and the
    SHA-256 of each file read that is an ELF file."""
    digest = hashlib.sha256()
    consulted: list[str] = []
    elf_files: dict[str, str] = {}
    for relative in paths:
        for path, info in _walk(root / relative):
            consulted.append(path)
            if stat.S_ISDIR(info.st_mode):
                continue
            name = os.path.relpath(path, root).encode()
            if stat.S_ISLNK(info.st_mode):
                digest.update(b"l\0" + name + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
            elif stat.S_ISREG(info.st_mode):
                kind = b"x" if info.st_mode & stat.S_IXUSR else b"f"
                digest.update(kind + b"\0" + name + b"\0" + str(info.st_size).encode() + b"\0")
                with open(path, "rb") as file:
                    data = file.read()
                digest.update(data)
                if data.startswith(b"\x7fELF"):
                    elf_files[path] = hashlib.sha256(data).hexdigest()
    return digest.hexdigest(), tuple(consulted), elf_files


def _walk(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file and directory under ``top`` (or ``top`` itself), sorted, ignored names
    left out; a directory comes before what it holds."""
    info = os.lstat(top)
    if not stat.S_ISDIR(info.st_mode):
        yield os.fspath(top), info
        return
    for directory, directories, others in fs.walk(top):
        yield directory, os.lstat(directory)
        directories[:] = [name for name in directories if not is_ignored(name)]
        for name in others:
            if not is_ignored(name):
                path = os.path.join(directory, name)
                yield path, os.lstat(path)


def is_ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _IGNORED)
