"""Projects: a directory with ``pyproject.toml`` and ``uv.lock``, and the recipe that builds it.

:func:`load_project` accepts a project directory, a directory holding a ``lockbox.toml``
(which may point at the project elsewhere with ``project = "…"``), or the path of a
``lockbox.toml``. A recipe lives in ``lockbox.toml`` or in ``[tool.lockbox]`` of the
project's ``pyproject.toml``, never in both.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockbox.errors import Problem, ProjectError, RecipeError
from lockbox.inputs.recipe import Recipe, canonical_name, parse_recipe

RECIPE_FILE = "lockbox.toml"


@dataclass(frozen=True)
class UvSettings:
    """The ``[tool.uv]`` settings that change what is built from source.

    ``uv.lock`` does not record them, so they are read from ``pyproject.toml``."""

    no_binary: bool = False
    """Build every package from source (``no-binary = true``)."""
    no_binary_packages: frozenset[str] = frozenset()
    """Packages built from source even where a wheel exists (``no-binary-package``)."""
    no_build: bool = False
    """Never build from source (``no-build = true``)."""
    no_build_packages: frozenset[str] = frozenset()
    """Packages that must come as wheels (``no-build-package``)."""


@dataclass(frozen=True)
class Project:
    """A project lockbox can build, with its recipe."""

    root: Path
    """The project directory."""
    name: str
    """``[project].name``, normalised."""
    version: str | None
    """``[project].version``, if static."""
    requires_python: str | None
    """``[project].requires-python``."""
    pyproject: Mapping[str, Any]
    """The parsed ``pyproject.toml``."""
    uv: UvSettings
    """Build-relevant ``[tool.uv]`` settings."""
    recipe: Recipe
    """The validated recipe (all defaults when the project has none)."""
    consulted: tuple[Path, ...] = ()
    """Every path :func:`load_project` looked at, present or not: what it would notice
    changing."""

    @property
    def lock_path(self) -> Path:
        return self.root / "uv.lock"

    @property
    def app_name(self) -> str:
        return self.recipe.name or self.name


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; a syntax error becomes a located :class:`RecipeError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ProjectError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ProjectError(f"{path} is not UTF-8 text: {error.reason}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        # Python 3.11's TOMLDecodeError has no lineno; its message ends "(at line L, column C)".
        found = re.search(r"\(at line (\d+), column \d+\)$", str(error))
        line = int(found.group(1)) if found else None
        message = str(error).split(" (at line")[0]
        raise RecipeError([Problem(path, "", line, f"not valid TOML: {message}")]) from None


def _recipe_file(target: Path) -> tuple[Path | None, Path]:
    """The recipe file ``target`` is or holds, if any, and the directory ``target`` names."""
    if not target.exists():
        raise ProjectError(f"{target} does not exist")
    if target.is_file():
        if target.name != RECIPE_FILE:
            raise ProjectError(f"{target} is a file; give a project directory or a {RECIPE_FILE}")
        return target, target.parent
    return (target / RECIPE_FILE if (target / RECIPE_FILE).is_file() else None), target


def load_project(target: Path) -> Project:
    """Find and validate the project and recipe that ``target`` names."""
    target = target.absolute()
    recipe_file, base = _recipe_file(target)
    recipe: Recipe | None = None
    if recipe_file is not None:
        data, text = read_toml(recipe_file)
        recipe = parse_recipe(data, file=recipe_file, text=text, prefix=(), base=base)
        root = recipe.project
    else:
        root = base

    pyproject_path = root / "pyproject.toml"
    if not pyproject_path.is_file():
        raise ProjectError(f"{root} has no pyproject.toml; point lockbox at a uv project directory")
    pyproject, pyproject_text = read_toml(pyproject_path)
    embedded = pyproject.get("tool", {}).get("lockbox")
    if recipe is not None and embedded is not None:
        raise ProjectError(
            f"{root} has a recipe in both {recipe_file} and [tool.lockbox] of {pyproject_path}; "
            "keep one of them"
        )
    if recipe is None:
        if embedded is not None:
            recipe = parse_recipe(
                embedded,
                file=pyproject_path,
                text=pyproject_text,
                prefix=("tool", "lockbox"),
                base=root,
            )
        else:
            recipe = Recipe(source=None, project=root)

    project_table = pyproject.get("project")
    if not isinstance(project_table, dict) or not isinstance(project_table.get("name"), str):
        raise ProjectError(f"{pyproject_path} has no [project] table with a name")
    if not (root / "uv.lock").is_file():
        raise ProjectError(
            f"{root} has no uv.lock; create it with `uv lock` in {root} and commit it"
        )
    consulted = (
        target,
        base / RECIPE_FILE,
        *([recipe_file] if recipe_file else []),
        pyproject_path,
        root / "uv.lock",
    )
    return Project(
        root=root,
        name=canonical_name(project_table["name"]),
        version=project_table.get("version"),
        requires_python=project_table.get("requires-python"),
        pyproject=pyproject,
        uv=_uv_settings(pyproject, pyproject_path),
        recipe=recipe,
        consulted=consulted,
    )


def _uv_settings(pyproject: Mapping[str, Any], path: Path) -> UvSettings:
    uv = pyproject.get("tool", {}).get("uv", {})

    def names(key: str) -> frozenset[str]:
        value = uv.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProjectError(f"{path}: [tool.uv] {key} must be an array of package names")
        return frozenset(canonical_name(v) for v in value)

    return UvSettings(
        no_binary=uv.get("no-binary", False) is True,
        no_binary_packages=names("no-binary-package"),
        no_build=uv.get("no-build", False) is True,
        no_build_packages=names("no-build-package"),
    )
