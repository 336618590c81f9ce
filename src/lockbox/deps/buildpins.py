"""Build dependencies pinned with hashes: ``lockbox lock-build``.

An sdist's build dependencies (its ``build-system.requires`` and what its backend asks
for, and theirs when one of them is itself built from source) are not in uv.lock: uv
resolves them afresh on every build, from whatever the index offers that day. lockbox pins
them where uv enforces pins itself: ``[tool.uv] build-constraint-dependencies`` in
pyproject.toml, each as ``{ requirement = "name==version", hashes = [...] }``, and in
uv.lock's ``[manifest]``, where ``uv lock`` records them (``--locked`` checks the two
agree); builds then run with
``--require-build-hashes``, so any build dependency the manifest does not pin is an error.

``lockbox lock-build`` finds the build set by building once, unpinned, on a copy of the
project (pins removed, an empty uv cache, one build at a time, uv's log read for what each
build environment installed), picks one version per package — uv applies one set of build
constraints to every build, so when builds chose different versions (one sdist requiring
``setuptools==80.9.0``, the others taking the newest), the oldest, chosen under the
tightest requirement, is pinned for all — and asks uv for every artifact hash of it. What
was built and what was pinned is written to ``lockbox.inputs.toml``
(``[build-requirements]``); uv prepares build environments concurrently, so the build set
is the union over all the builds, not split per sdist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from lockbox import fs
from lockbox.errors import BuildPinsMissing
from lockbox.inputs.project import Project
from lockbox.inputs.recipe import canonical_name
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.inputs.build import BuildInputs
    from lockbox.store.store import Store
    from lockbox.tools.toolbox import Toolbox

_CREATING = re.compile(r"Creating build environment for: ([A-Za-z0-9._-]+)")
_INSTALLING = re.compile(r"Installing (`[^`]+`(?:, `[^`]+`)*) in `")
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def build_sets(lines: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """From uv's verbose log of the unpinned builds: the packages it built from source,
    and every version of each build dependency that a build environment installed.

    uv prepares build environments concurrently (``UV_CONCURRENT_BUILDS`` limits only the
    builds themselves), so the log does not say reliably which sdist's environment
    installed what: the set is the union over all builds."""
    built: set[str] = set()
    found: dict[str, set[str]] = {}
    for line in lines:
        if match := _CREATING.search(line):
            built.add(canonical_name(match.group(1).split("==")[0]))
        elif match := _INSTALLING.search(line):
            for item in re.findall(r"`([^`]+)`", match.group(1)):
                pin = _PIN.match(item)
                if pin:
                    found.setdefault(canonical_name(pin.group(1)), set()).add(pin.group(2))
    return sorted(built), {name: sorted(v, key=_key) for name, v in sorted(found.items())}


def choose(found: Mapping[str, list[str]]) -> dict[str, str]:
    """One version per build dependency: the oldest any build chose."""
    return {name: min(versions, key=_key) for name, versions in sorted(found.items())}


def _key(version: str) -> tuple[int, Any]:
    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


def parse_hashes(text: str) -> dict[str, list[str]]:
    """``uv pip compile --generate-hashes`` output → name → its hashes."""
    hashes: dict[str, list[str]] = {}
    current = None
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pin = _PIN.match(line)
        if pin:
            current = canonical_name(pin.group(1))
            hashes[current] = []
        if current:
            hashes[current] += _HASH.findall(line)
    return hashes


def strip_pins(root: Path) -> None:
    """Remove the build pins from the copy of a project at ``root``: from its
    pyproject.toml's ``[tool.uv]`` and from its uv.lock's manifest."""
    import tomlkit

    pyproject = root / "pyproject.toml"
    document = tomlkit.parse(pyproject.read_text(encoding="utf-8"))
    uv = document.get("tool", {}).get("uv")
    if uv is not None:
        for key in ("build-constraint-dependencies", "require-build-hashes"):
            uv.pop(key, None)
    pyproject.write_text(tomlkit.dumps(document), encoding="utf-8")
    lock = root / "uv.lock"
    document = tomlkit.parse(lock.read_text(encoding="utf-8"))
    manifest = document.get("manifest")
    if manifest is not None:
        manifest.pop("build-constraints", None)
        if not manifest:
            document.pop("manifest")
    lock.write_text(tomlkit.dumps(document), encoding="utf-8")


def copy_project(project: Project, destination: Path) -> Path:
    """A copy of the project's tree (links kept as links, never followed; no VCS data,
    environments or caches) for the unpinned discovery build."""
    ignore = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", ".hg")
    fs.copy_tree(project.root, destination, ignore=ignore, preserve=True)
    return destination


def write_pins(project: Project, pins: Mapping[str, str], hashes: Mapping[str, list[str]]) -> Path:
    """Write the pins into pyproject.toml's ``[tool.uv]``, keeping its formatting."""
    import tomlkit

    missing = sorted(name for name in pins if not hashes.get(name))
    if missing:
        raise BuildPinsMissing(
            f"the index publishes no hashes for {', '.join(missing)}: lockbox pins build "
            "dependencies only with their hashes; use an index that lists them (PyPI does; "
            "a find-links page needs #sha256= fragments)"
        )
    path = project.root / "pyproject.toml"
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    tool = document.setdefault("tool", tomlkit.table())
    uv = tool.setdefault("uv", tomlkit.table())
    array = tomlkit.array()
    array.multiline(True)
    for name, version in sorted(pins.items()):
        table = tomlkit.inline_table()
        table["requirement"] = f"{name}=={version}"
        table["hashes"] = sorted(hashes[name])
        array.append(table)
    uv["build-constraint-dependencies"] = array
    fs.write_atomically(path, tomlkit.dumps(document))
    return path


def write_manifest(
    project: Project, pins: Mapping[str, str], hashes: Mapping[str, list[str]]
) -> None:
    """Record the pins in uv.lock's ``[manifest] build-constraints`` as ``uv lock`` would
    from pyproject.toml: written here rather than by ``uv lock``, which would resolve again
    and fetch every git source (not reachable from every machine that pins)."""
    import tomlkit

    # Formatted and placed as uv does it, so that the next `uv lock` leaves the bytes (and
    # the layer's inputs, which hold uv.lock's digest) as they are.
    lines = [
        f"    {{ name = {json.dumps(name)}, specifier = {json.dumps('==' + version)}, "
        f"hashes = [{', '.join(map(json.dumps, sorted(hashes[name])))}] }},"
        for name, version in sorted(pins.items())
    ]
    constraints = "build-constraints = [\n" + "\n".join(lines) + "\n]\n"
    text = project.lock_path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    manifest = document.get("manifest")
    if manifest is not None:
        manifest["build-constraints"] = tomlkit.parse(constraints)["build-constraints"]
        text = tomlkit.dumps(document)
    else:  # uv writes the manifest after the top-level keys, before the first package
        head, separator, rest = text.partition("\n[[package]]\n")
        text = (
            head.rstrip("\n")
            + "\n\n[manifest]\n"
            + constraints
            + "\n"
            + separator.lstrip("\n")
            + rest
        )
    fs.write_atomically(project.lock_path, text)


def write_requirements(
    project: Project, built: list[str], pins: Mapping[str, str], found: Mapping[str, list[str]]
) -> Path:
    """Write what ``lock-build`` found into ``lockbox.inputs.toml``: the packages built from
    source and the build set pinned for them."""
    import tomlkit

    from lockbox.deps.inputs import inputs_file

    path = inputs_file(project)
    if path.exists():
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    else:
        document = tomlkit.document()
        document.add(
            tomlkit.comment("Written by lockbox: what the dependency layer is built from.")
        )
    requirements = tomlkit.table()
    requirements.add(
        tomlkit.comment(
            "Written by `lockbox lock-build`: the packages built from source and the build set "
            "pinned for them in [tool.uv] build-constraint-dependencies."
        )
    )
    requirements["built"] = built
    requirements["pinned"] = dict(pins)
    conflicts = {name: versions for name, versions in found.items() if len(versions) > 1}
    if conflicts:
        requirements.add(
            tomlkit.comment(
                "Builds chose several versions of these; uv applies one pin to every build, so "
                "the oldest is pinned."
            )
        )
        requirements["chosen"] = conflicts
    document["build-requirements"] = requirements
    fs.write_atomically(path, tomlkit.dumps(document))
    return path


def pinned(project: Project) -> dict[str, dict[str, Any]]:
    """uv.lock's build pins: name → ``{"version", "hashes"}``."""
    try:
        manifest = tomllib.loads(project.lock_path.read_text(encoding="utf-8")).get("manifest", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {
        canonical_name(str(c.get("name"))): {
            "version": str(c.get("specifier", "")).removeprefix("=="),
            "hashes": list(c.get("hashes", [])),
        }
        for c in manifest.get("build-constraints", [])
    }


def check_pinned(project: Project, from_source: Iterable[str], progress: Progress = silent) -> bool:
    """Check, before building, that the build dependencies are pinned; return whether
    uv.lock pins any (then every build dependency must be pinned: the build runs with
    ``--require-build-hashes``).

    Packages built from source without any pin are an error: builds run with no network,
    from what the fetch step downloaded, and it downloads only pinned build dependencies.
    Once anything is pinned, uv itself refuses a build dependency without a pin (a package
    newly built from source whose build needs something else), and lockbox names
    ``lock-build``."""
    sources = sorted(set(from_source))
    pins = pinned(project)
    if sources and not pins:
        raise BuildPinsMissing(
            f"{len(sources)} packages are built from source ({', '.join(sources[:6])}"
            f"{', …' if len(sources) > 6 else ''}) but uv.lock pins none of their build "
            "dependencies, and builds run offline with only what is pinned: run `lockbox "
            "lock-build` in the project, review and commit the pins it writes to "
            "pyproject.toml and uv.lock, then build again"
        )
    return bool(pins)


def hashes_argv(uv: Path, python: Path, config: Path | None) -> list[str]:
    argv = [
        os.fspath(uv),
        "pip",
        "compile",
        "-",
        "--no-deps",
        "--generate-hashes",
        "--no-header",
        "--no-annotate",
        "--python",
        os.fspath(python),
        "--quiet",
    ]
    if config is not None:
        argv += ["--config-file", os.fspath(config)]
    return argv


def lock_build(
    inputs: BuildInputs, store: Store, tools: Toolbox, progress: Progress = silent
) -> dict[str, Any]:
    """Find, pin and write the build set of ``inputs.project`` (see the module docstring)."""
    from lockbox.deps.install import host_environment, install, uv_config
    from lockbox.inputs.project import load_project
    from lockbox.tools.run import run

    project, interpreter, plan = inputs.project, inputs.interpreter, inputs.plan
    sources = plan.from_source() + [source.label for source in project.recipe.deps.extra_sources]
    if not sources:
        progress.info("nothing is built from source: no build dependencies to pin")
        return {"built": [], "pins": {}, "found": {}}
    progress.info(
        f"building {len(sources)} packages from source, unpinned, one at a time, "
        "to find their build dependencies"
    )
    lines: list[str] = []
    with store.staging() as stage:
        copy = copy_project(project, stage / "project")
        strip_pins(copy)
        copied = load_project(copy)
        work = stage / "work"
        work.mkdir()
        install(copied, plan, interpreter, store, work, tools, progress, discovery=lines)
    built, found = build_sets(lines)
    pins = choose(found)
    if not pins:
        raise BuildPinsMissing(
            "uv's log named no build dependencies: nothing to pin "
            "(was everything taken from uv's cache?)"
        )
    progress.info(f"asking the index for the hashes of {len(pins)} build dependencies")
    with store.staging() as stage:
        config = stage / "uv.toml"
        config.write_text(uv_config(project, {}, {}), encoding="utf-8")
        requested = "".join(f"{name}=={version}\n" for name, version in pins.items())
        output = run(
            hashes_argv(tools.uv.executable, interpreter.executable, config),
            cwd=project.root,
            env={**host_environment(tools.environment), "UV_PYTHON_DOWNLOADS": "never"},
            input=requested,
            progress=progress,
        ).stdout
    hashes = parse_hashes(output)
    pyproject = (project.root / "pyproject.toml").read_bytes()
    written = write_pins(project, pins, hashes)
    try:
        write_manifest(project, pins, hashes)
    except BaseException:
        written.write_bytes(pyproject)  # uv.lock is as it was: so is pyproject.toml
        raise
    progress.info(f"wrote {len(pins)} build pins to {written} and to uv.lock's manifest")
    write_requirements(project, built, pins, found)
    return {"built": built, "pins": pins, "found": found}
