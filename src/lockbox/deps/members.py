"""Workspace members and the project itself, installed offline with their metadata.

The dependency layer holds third-party packages only; the application's own distributions
(the project and its in-tree workspace members) are added by the assembly phase
(:mod:`lockbox.assemble.app`) without a build backend: their ``pyproject.toml`` must declare the
metadata statically, and lockbox writes the ``*.dist-info`` a wheel install would have made
(``METADATA``, ``entry_points.txt``, ``INSTALLER``, ``RECORD``), so that
``importlib.metadata`` and console scripts work. Which files a member installs follows its
build backend's configuration (hatchling, setuptools, flit, uv_build) or, by default, the
import package named after the distribution, flat or under ``src/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lockbox import fs
from lockbox.errors import AssemblyError
from lockbox.hashes import record_hash
from lockbox.inputs.recipe import canonical_name

_NEEDS_BACKEND = (
    "version",
    "dependencies",
    "optional-dependencies",
    "scripts",
    "gui-scripts",
    "entry-points",
)
"""Fields lockbox reads from pyproject.toml; any of them declared dynamic needs a backend."""


@dataclass(frozen=True)
class Member:
    """A distribution of the project's own, to be installed from source."""

    name: str
    """Its distribution name, as declared."""
    version: str
    root: Path
    """Its directory (where its pyproject.toml is)."""
    modules: tuple[tuple[Path, str], ...]
    """(source path, name in site-packages) of each top-level module or package."""
    metadata: str
    """The ``METADATA`` file."""
    entry_points: str
    """The ``entry_points.txt`` file, "" when it has none."""

    @property
    def dist_info(self) -> str:
        # The escaping of wheel and dist-info file names: "_" for runs of "-_.".
        name = canonical_name(self.name).replace("-", "_")
        return f"{name}-{self.version.replace('-', '_')}.dist-info"


def read_member(root: Path, pyproject: Mapping[str, Any], *, modules: bool = True) -> Member:
    """The member at ``root`` whose parsed ``pyproject.toml`` is ``pyproject``. With
    ``modules=False`` its files are not looked for (the recipe names them)."""
    where = root / "pyproject.toml"
    project = pyproject.get("project")
    if not isinstance(project, Mapping) or not isinstance(project.get("name"), str):
        raise AssemblyError(
            f"{where}: no [project] table with a name; lockbox installs "
            "workspace members from their static metadata"
        )
    name: str = project["name"]
    dynamic = [field for field in project.get("dynamic", ()) if field in _NEEDS_BACKEND]
    if dynamic:
        raise AssemblyError(
            f"{where}: {name} declares {', '.join(dynamic)} as dynamic; the offline assembly "
            "installs members without running their build backend, so these must be written "
            "in [project]"
        )
    version = project.get("version")
    if not isinstance(version, str):
        raise AssemblyError(f"{where}: {name} has no [project].version")
    found = tuple(_modules(root, pyproject, name)) if modules else ()
    return Member(name, version, root, found, _metadata(project), _entry_points(project))


def _modules(root: Path, pyproject: Mapping[str, Any], name: str) -> Iterable[tuple[Path, str]]:
    tool = pyproject.get("tool", {})
    hatch = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
    if hatch.get("packages"):
        return _listed(root, hatch["packages"], name, "tool.hatch.build.targets.wheel.packages")
    uv_backend = tool.get("uv", {}).get("build-backend", {})
    if "module-name" in uv_backend or "module-root" in uv_backend:
        module = uv_backend.get("module-name", name.replace("-", "_").replace(".", "_"))
        module_root = uv_backend.get("module-root", "src")
        return _listed(root, [f"{module_root}/{module}".lstrip("/")], name, "tool.uv.build-backend")
    flit = tool.get("flit", {}).get("module", {})
    if "name" in flit:
        return _default(root, name, flit["name"])
    setuptools = tool.get("setuptools", {})
    packages = setuptools.get("packages")
    if isinstance(packages, list):
        base = setuptools.get("package-dir", {}).get("", "")
        tops = sorted({package.split(".")[0] for package in packages})
        return _listed(
            root, [f"{base}/{top}".lstrip("/") for top in tops], name, "tool.setuptools.packages"
        )
    return _default(root, name, name.replace("-", "_").replace(".", "_"))


def _listed(root: Path, entries: Sequence[str], name: str, key: str) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for entry in entries:
        path = root / entry
        if not path.exists() and "." in entry and "/" not in entry:
            path = root / entry.replace(".", "/")  # a dotted package name, as some projects write
        if not path.exists() and path.with_suffix(".py").is_file():
            path = path.with_suffix(".py")
        if not path.exists():
            raise AssemblyError(
                f"{root / 'pyproject.toml'}: {key} names {entry!r}, which does not exist in {root}"
            )
        found.append((path, path.name))
    # Subpackages listed beside their parent are already inside it.
    kept = [(p, n) for p, n in found if not any(p != q and q in p.parents for q, _ in found)]
    return list(dict.fromkeys(kept))


def _default(root: Path, name: str, module: str) -> list[tuple[Path, str]]:
    for candidate in (
        root / "src" / module,
        root / module,
        root / "src" / f"{module}.py",
        root / f"{module}.py",
    ):
        if candidate.exists():
            return [(candidate, candidate.name)]
    raise AssemblyError(
        f"cannot tell which files {name} installs: none of src/{module}/, {module}/, "
        f"src/{module}.py, {module}.py exists in {root}; name its packages in "
        "[tool.hatch.build.targets.wheel] packages (or the setuptools/flit/uv_build equivalent)"
    )


def _metadata(project: Mapping[str, Any]) -> str:
    lines = ["Metadata-Version: 2.3", f"Name: {project['name']}", f"Version: {project['version']}"]
    if isinstance(project.get("description"), str):
        lines.append(f"Summary: {project['description']}")
    if isinstance(project.get("requires-python"), str):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {requirement}" for requirement in project.get("dependencies", ())]
    for extra, requirements in sorted(project.get("optional-dependencies", {}).items()):
        lines.append(f"Provides-Extra: {canonical_name(extra)}")
        for requirement in requirements:
            lines.append(f"Requires-Dist: {_with_extra(requirement, canonical_name(extra))}")
    return "\n".join(lines) + "\n"


def _with_extra(requirement: str, extra: str) -> str:
    if ";" in requirement:
        head, marker = requirement.split(";", 1)
        return f'{head.strip()}; ({marker.strip()}) and extra == "{extra}"'
    return f'{requirement}; extra == "{extra}"'


def _entry_points(project: Mapping[str, Any]) -> str:
    groups: dict[str, Mapping[str, str]] = {}
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    if project.get("gui-scripts"):
        groups["gui_scripts"] = project["gui-scripts"]
    groups.update(project.get("entry-points", {}))
    sections = []
    for group, entries in sorted(groups.items()):
        body = "".join(f"{key} = {value}\n" for key, value in sorted(entries.items()))
        sections.append(f"[{group}]\n{body}")
    return "\n".join(sections)


def write_dist_info(site_packages: Path, member: Member, files: Iterable[str]) -> str:
    """Write ``member``'s dist-info into ``site_packages``; ``files`` are the paths (relative
    to ``site_packages``) of what was installed for it. Returns the dist-info's name."""
    dist_info = site_packages / member.dist_info
    dist_info.mkdir()
    written = {"METADATA": member.metadata, "INSTALLER": "lockbox\n"}
    if member.entry_points:
        written["entry_points.txt"] = member.entry_points
    for name, text in written.items():
        (dist_info / name).write_text(text, encoding="utf-8")
    record = [record_line(site_packages, path) for path in sorted(files)]
    record += [record_line(site_packages, f"{member.dist_info}/{name}") for name in sorted(written)]
    record.append(f"{member.dist_info}/RECORD,,")
    (dist_info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    return member.dist_info


def record_line(site_packages: Path, path: str) -> str:
    data = (site_packages / path).read_bytes()
    return f"{path},{record_hash(data)},{len(data)}"


def files_under(site_packages: Path, top: str) -> list[str]:
    """Every file at or below ``top`` (relative to ``site_packages``), as RECORD paths."""
    path = site_packages / top
    if not path.is_dir():
        return [top]
    found = []
    for directory, _, names in fs.walk(path):
        relative = PurePosixPath(Path(directory).relative_to(site_packages))
        # A link to a directory is neither entered nor a file: RECORD lists files.
        found += [
            str(relative / name)
            for name in names
            if not os.path.isdir(os.path.join(directory, name))
        ]
    return sorted(found)
