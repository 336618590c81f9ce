"""What a dependency layer is built from, recorded, compared and explained.

A layer's bytes depend on more than uv.lock: the recipe's selection (groups, extras,
exclusions), the per-package build variables, the project's uv settings, the build
dependencies (pinned in uv.lock's manifest), the interpreter, the compilers and the system
headers and libraries the sdists compile against, and the environment the builds see.

- :func:`deps_inputs` is what is known before building; its digest (:func:`inputs_key`)
  is what a stored layer must have been built from to answer a declared hash.
- A build's *record* (:func:`make_record`) adds what only the build finds out: the exact
  interpreter, uv and lockbox versions, the installed packages, the build set and the
  toolchain (:mod:`lockbox.deps.toolchain`). It is kept in the store and, when the hash is
  declared, in ``lockbox.inputs.toml`` beside the recipe (written by ``lockbox lock-hash``).
- :func:`drift` compares two records and says, in one line per change, what moved.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockbox.hashes import Sha256
from lockbox.inputs.project import Project

if TYPE_CHECKING:
    from lockbox.deps.buildroot import RootPins
    from lockbox.environment import Environment

INPUTS_FILE = "lockbox.inputs.toml"
"""The committed record of the inputs the declared ``deps.hash`` was built from."""

# Variables that reach the builds and change what compilers produce; the rest (PATH, HOME,
# proxies, lockbox's own settings) are recorded but not compared.
_COMPARED_VARIABLES = (
    "CC",
    "CXX",
    "PKG_CONFIG_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "SOURCE_DATE_EPOCH",
    "PYTHONHASHSEED",
    "TZ",
    "LC_ALL",
)
# Settings of [tool.uv] that describe the project rather than how uv installs it.
_PROJECT_ONLY_UV_KEYS = frozenset(
    {
        "sources",
        "workspace",
        "managed",
        "package",
        "default-groups",
        "dependency-groups",
        "dev-dependencies",
        "conflicts",
        "build-backend",
        "environments",
        "required-environments",
    }
)


def uv_settings(project: Project) -> dict[str, Any]:
    """The project's uv settings that change how uv installs: ``[tool.uv]`` without the
    project-only keys, then a ``uv.toml`` beside it (which takes precedence)."""
    settings: dict[str, Any] = {
        key: value
        for key, value in project.pyproject.get("tool", {}).get("uv", {}).items()
        if key not in _PROJECT_ONLY_UV_KEYS
    }
    uv_toml = project.root / "uv.toml"
    if uv_toml.is_file():
        settings.update(tomllib.loads(uv_toml.read_text(encoding="utf-8")))
    return settings


def deps_inputs(
    project: Project, environment: Environment, root: RootPins | None = None
) -> dict[str, object]:
    """What the dependency layer is built from, as known before building; with ``root``,
    the build root the sdists compile in (:mod:`lockbox.deps.buildroot`), by its hash."""
    deps = project.recipe.deps
    inputs: dict[str, object] = {
        "lock": Sha256(hashlib.sha256(project.lock_path.read_bytes()).digest()).sri,
        "python": project.recipe.python or project.requires_python or "",
        "groups": sorted(deps.groups),
        "extras": sorted(deps.extras),
        "exclude": sorted(deps.exclude),
        "build": {
            name: {"env": dict(sorted(env.env.items())), "path": list(env.path)}
            for name, env in sorted(deps.build.items())
        },
        "extra-sources": [f"{s.label} {s.hash.sri}" for s in deps.extra_sources],
        "uv-settings": _condensed(_plain(uv_settings(project))),
        "environment": environment.subset(_COMPARED_VARIABLES[:5]),
    }
    if root is not None:
        inputs["build-root"] = root.hash.sri if root.hash else ""
        # The host's compilers do not reach builds in a root.
        inputs["environment"] = {}
    return inputs


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _condensed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with each pin's list of hashes (40 for a package with many wheels) made
    one digest: the record stays readable, and a changed hash still changes it."""

    def condense(pin: Any) -> Any:
        if isinstance(pin, Mapping) and isinstance(pin.get("hashes"), list):
            text = "\n".join(sorted(map(str, pin["hashes"])))
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            return f"{pin.get('requirement')} ({len(pin['hashes'])} hashes, {digest})"
        return pin

    return {
        key: [condense(pin) for pin in value]
        if key.startswith("build-constraint") and isinstance(value, list)
        else value
        for key, value in settings.items()
    }


def inputs_key(inputs: Mapping[str, object]) -> str:
    from lockbox.store.store import canonical_json

    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def build_set(project: Project) -> dict[str, str]:
    """The build dependencies uv.lock's manifest pins: name → version."""
    manifest = tomllib.loads(project.lock_path.read_text(encoding="utf-8")).get("manifest", {})
    pins = {}
    for constraint in manifest.get("build-constraints", []):
        specifier = str(constraint.get("specifier", ""))
        pins[str(constraint.get("name"))] = specifier.removeprefix("==")
    return dict(sorted(pins.items()))


def make_record(
    inputs: Mapping[str, object],
    *,
    interpreter: str,
    uv: str,
    lockbox: str,
    packages: Mapping[str, str],
    build: Mapping[str, str],
    toolchain: Mapping[str, object],
    environment: Mapping[str, str],
) -> dict[str, object]:
    """A build's full record (see the module docstring)."""
    return {
        "inputs": dict(inputs),
        "interpreter": interpreter,
        "uv": uv,
        "lockbox": lockbox,
        "packages": dict(sorted(packages.items())),
        "build-set": dict(sorted(build.items())),
        "toolchain": dict(toolchain),
        "environment": dict(environment),
    }


def summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What of a record is compared and committed: everything but the per-file states."""
    from lockbox.deps import toolchain

    return {**record, "toolchain": toolchain.summary(record.get("toolchain", {}))}


# The committed file ---------------------------------------------------------------------------


def inputs_file(project: Project) -> Path:
    source = project.recipe.source or project.root / "pyproject.toml"
    return source.parent / INPUTS_FILE


def read_committed(project: Project) -> dict[str, Any] | None:
    """The committed record, or None if there is none (or it cannot be read)."""
    path = inputs_file(project)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def write_committed(
    project: Project, nar_hash: str, record: Mapping[str, Any], root: RootPins | None = None
) -> Path:
    """Write the record of the declared hash, keeping the build-dependency section that
    ``lockbox lock-build`` owns and the build root's pins (``lockbox lock-toolchain``),
    or writing ``root``'s."""
    import tomlkit

    path = inputs_file(project)
    previous = read_committed(project) or {}
    document = tomlkit.document()
    document.add(
        tomlkit.comment(
            "Written by `lockbox lock-hash`: what the declared deps.hash was built from. "
            "Commit it with the hash;"
        )
    )
    document.add(
        tomlkit.comment(
            "on a mismatch lockbox compares it with the build's inputs and names what moved."
        )
    )
    document["hash"] = nar_hash
    for key, value in summary(record).items():
        document[key] = _plain(value)
    if "build-requirements" in previous:
        document["build-requirements"] = previous["build-requirements"]
    from lockbox.deps.buildroot import SECTION

    if root is not None:
        document[SECTION] = root.to_toml()
    elif SECTION in previous:
        document[SECTION] = previous[SECTION]
    from lockbox import fs

    fs.write_atomically(path, tomlkit.dumps(document))
    return path


# Drift -------------------------------------------------------------------------------------------


def drift(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per input that differs between two records (or summaries)."""
    files = {
        name: package.get("files", {})
        for name, package in new.get("toolchain", {}).get("packages", {}).items()
    }
    old, new = summary(old), summary(new)
    lines: list[str] = []
    old_inputs, new_inputs = old.get("inputs", {}), new.get("inputs", {})
    changes = version_changes(old.get("packages", {}), new.get("packages", {}))
    if old_inputs.get("lock") != new_inputs.get("lock"):
        lines += [f"uv.lock: {change}" for change in changes] or ["uv.lock changed"]
    else:
        lines += [f"installed: {change}" for change in changes]
    for key, label in (
        ("build-root", "build root"),
        ("python", "python"),
        ("groups", "deps.groups"),
        ("extras", "deps.extras"),
        ("exclude", "deps.exclude"),
        ("build", "deps.build"),
        ("extra-sources", "deps.extra-sources"),
        ("uv-settings", "[tool.uv]"),
        ("environment", "environment"),
    ):
        if old_inputs.get(key) != new_inputs.get(key):
            lines.append(f"{label}: {_show(old_inputs.get(key))} → {_show(new_inputs.get(key))}")
    lines += [
        f"build set: {c}"
        for c in version_changes(old.get("build-set", {}), new.get("build-set", {}))
    ]
    for key in ("interpreter", "uv", "lockbox"):
        if old.get(key) and old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)} → {new.get(key)}")
    lines += _toolchain_drift(old.get("toolchain", {}), new.get("toolchain", {}), files)
    old_env = old.get("environment", {})
    new_env = new.get("environment", {})
    for name in _COMPARED_VARIABLES[5:]:
        if old_env.get(name) != new_env.get(name):
            lines.append(f"environment {name}: {old_env.get(name)} → {new_env.get(name)}")
    return lines


def _toolchain_drift(
    old: Mapping[str, Any], new: Mapping[str, Any], files: Mapping[str, Mapping[str, object]]
) -> list[str]:
    from lockbox.deps.toolchain import modified_files

    lines = []
    old_packages, new_packages = old.get("packages", {}), new.get("packages", {})
    for name in sorted(set(old_packages) | set(new_packages)):
        before, after = old_packages.get(name), new_packages.get(name)
        if before is None:
            lines.append(f"toolchain: + {name} {after['version']} (the build now reads its files)")
        elif after is None:
            lines.append(
                f"toolchain: - {name} {before['version']} (the build no longer reads its files)"
            )
        elif before["version"] != after["version"]:
            lines.append(f"{name} {before['version']} → {after['version']}")
        elif before.get("digest") != after.get("digest"):
            changed = modified_files(name, files.get(name, {}))
            where = (
                f": {', '.join(changed[:5])} differ from what the package ships" if changed else ""
            )
            lines.append(f"{name} {after['version']}: the files the build read changed{where}")
    for label in sorted(set(old.get("compilers", {})) | set(new.get("compilers", {}))):
        a, b = old.get("compilers", {}).get(label), new.get("compilers", {}).get(label)
        if a != b:
            lines.append(f"compiler {label}: {a} → {b}")
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for path in sorted(set(old_files) | set(new_files)):
        if old_files.get(path) != new_files.get(path):
            state = (
                "added"
                if path not in old_files
                else "removed"
                if path not in new_files
                else "changed"
            )
            lines.append(f"toolchain file {path} {state}")
    return lines


def version_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """One line per name whose version differs: ``+ a 1``, ``- b 2``, ``c 1 → 2``."""
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            lines.append(f"+ {name} {new[name]}")
        elif name not in new:
            lines.append(f"- {name} {old[name]}")
        elif old[name] != new[name]:
            lines.append(f"{name} {old[name]} → {new[name]}")
    return lines


def _show(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True) if value not in (None, "", [], {}) else "(none)"
