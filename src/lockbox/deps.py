"""The dependency phase: uv.lock in, one content-pinned dependency layer out.

This is the only phase allowed on the network. It installs the locked third-party packages
with uv (no workspace member: those are the application, assembled later), normalises and
scrubs the environment into a layer (:mod:`lockbox.layer`), and checks the layer's NAR hash
against the one the recipe declares (``deps.hash``). The declared hash pins every byte: a
layer that hashes differently is kept aside for ``lockbox diff`` and never registered, and
when a layer with the declared hash is already in the store nothing runs at all.

Steps, in order: plan (:mod:`lockbox.plan`) → install (uv in the sandbox) → normalise and
scrub → hash → compare with the declared hash → register.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from lockbox.errors import HashMismatch
from lockbox.hashes import Sha256
from lockbox.interpreters import Interpreter, find_interpreter
from lockbox.layer import LayerReport, normalise
from lockbox.lock import read_lock
from lockbox.nar import nar_hash
from lockbox.plan import Plan, make_plan
from lockbox.progress import Progress, silent
from lockbox.project import Project
from lockbox.recipe import BuildEnv
from lockbox.sandbox import BUILD_ROOT, CACHE_MOUNT, Sandbox
from lockbox.scrub import Scrubber
from lockbox.store import Entry, Store
from lockbox.uv import SyncRequest, Uv

SOURCE_DATE_EPOCH = "315532800"
"""1980-01-01, the earliest time a zip file (a wheel) can hold."""

VENV = BUILD_ROOT / "venv"
TMPDIR = BUILD_ROOT / "tmp"


@dataclass(frozen=True)
class Tools:
    """The external tools the phase drives, found once."""

    uv: Uv
    sandbox: Sandbox
    cache: Path
    """The uv cache shared by every build (wheels, sdists and what was built from them)."""

    @classmethod
    def find(cls, environ: Mapping[str, str], progress: Progress = silent) -> Tools:
        return cls(Uv.find(progress), Sandbox.find(progress), default_uv_cache(environ))


def default_uv_cache(environ: Mapping[str, str]) -> Path:
    """``$LOCKBOX_UV_CACHE``, else ``$XDG_CACHE_HOME/lockbox/uv`` (``~/.cache/lockbox/uv``).

    lockbox keeps its own uv cache: uv caches what it builds from sdists, and a wheel built
    elsewhere, without lockbox's reproducibility flags, must not end up in a layer."""
    if environ.get("LOCKBOX_UV_CACHE"):
        return Path(environ["LOCKBOX_UV_CACHE"])
    cache_home = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "lockbox" / "uv"


@dataclass(frozen=True)
class DepsResult:
    """The dependency layer of a project."""

    entry: Entry
    """The ``deps`` store entry."""
    plan: Plan | None
    """What was installed; None when the layer was found by its declared hash."""
    reused: bool
    """True when the declared layer was already in the store and nothing ran."""
    layer: LayerReport | None
    """What normalisation did; None when reused."""

    @property
    def hash(self) -> Sha256:
        return self.entry.nar_hash


def layer_name(project: Project) -> str:
    return f"{project.app_name}-deps"


def lock_digest(project: Project) -> Sha256:
    return Sha256(hashlib.sha256(project.lock_path.read_bytes()).digest())


def build_deps(project: Project, store: Store, find_tools: Callable[[], Tools],
               progress: Progress = silent) -> DepsResult:
    """Make (or find) the dependency layer of ``project`` in ``store``.

    ``find_tools`` is called only when something must be built: a lookup needs no tools."""
    name = layer_name(project)
    declared = project.recipe.deps.hash
    if declared is not None:
        # The declared hash names the content: whatever produced it, that layer is the one.
        existing = store.find_content("deps", name, declared)
        if existing is not None:
            progress.info(f"dependency layer {declared} is in the store: {existing.path}")
            return DepsResult(existing, None, reused=True, layer=None)

    lock = read_lock(project.lock_path)
    interpreter = find_interpreter(project.recipe.python, project.requires_python,
                                   progress=progress)
    plan = make_plan(project, lock, interpreter)
    tools = find_tools()
    built = sum(p.built for p in plan.installed if p.form != "member")
    progress.info(
        f"installing {len(plan.installed) - len(plan.by_form('member'))} packages "
        f"({built} from source) with uv {tools.uv.version} for {interpreter.label}"
    )
    tools.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lockbox-deps-") as scratch_dir:
        scratch = Path(scratch_dir)
        _install(project, plan, interpreter, scratch, tools, progress)
        scrubber = Scrubber(_build_roots(project, interpreter, scratch, tools.cache))
        with store.staging() as stage:
            content = stage / "content"
            progress.info("normalising and scrubbing the layer")
            report = normalise(scratch / VENV.relative_to(BUILD_ROOT), content, scrubber, progress)
            _report_scrub(report, progress)
            nar = nar_hash(content)
            if declared is not None and nar.sha256 != declared:
                kept = store.keep_aside(content, name, nar.sha256)
                raise HashMismatch(
                    f"the dependency layer of {project.app_name}",
                    declared.sri, nar.sha256.sri, kept,
                    "if uv.lock or the recipe changed on purpose, declare the new hash with "
                    "`lockbox lock-hash`; `lockbox diff` shows what differs from the last "
                    "good layer",
                )
            entry = store.register(
                content, name=name, kind="deps", nar=nar,
                metadata=_metadata(project, plan, interpreter, tools, report),
            )
    if declared is None:
        progress.warning(
            f"the recipe declares no deps.hash; this build gave {entry.nar_hash}. "
            f"Pin it with `lockbox lock-hash`, or add to [deps]: hash = \"{entry.nar_hash}\""
        )
    return DepsResult(entry, plan, reused=False, layer=report)


def _install(project: Project, plan: Plan, interpreter: Interpreter, scratch: Path,
             tools: Tools, progress: Progress) -> None:
    deps = project.recipe.deps
    (scratch / TMPDIR.relative_to(BUILD_ROOT)).mkdir()
    flags = " ".join(_prefix_maps(interpreter))
    env = {
        **_host_environment(),
        "UV_CACHE_DIR": str(CACHE_MOUNT),
        "UV_PROJECT_ENVIRONMENT": str(VENV),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_NO_PROGRESS": "1",
        "TMPDIR": str(TMPDIR),
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "PYTHONHASHSEED": "0",
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "CFLAGS": _join(os.environ.get("CFLAGS"), flags),  # C and C++ (setuptools)
        "CXXFLAGS": _join(os.environ.get("CXXFLAGS"), flags),
        "RUSTFLAGS": _join(os.environ.get("RUSTFLAGS"), " ".join(
            f"--remap-path-prefix={old}={new}" for old, new in _path_maps(interpreter)
        )),
    }
    env.update(_compiler_wrappers(scratch, interpreter))
    config = None
    if deps.build:
        config = scratch / "uv.toml"
        config.write_text(_uv_config(project, deps.build, env), encoding="utf-8")
    request = SyncRequest(
        python=interpreter.executable,
        groups=deps.groups,
        extras=deps.extras,
        exclude=deps.exclude,
        config_file=BUILD_ROOT / "uv.toml" if config else None,
    )
    argv = tools.sandbox.wrap(
        tools.uv.sync_argv(request), scratch=scratch, cache=tools.cache,
        cwd=project.root, read_only=[project.root],
    )
    old_umask = os.umask(0o022)
    try:
        tools.uv.sync(argv, cwd=project.root, env=env, progress=progress,
                      on_line=lambda line: _forward_uv_line(line, progress))
    finally:
        os.umask(old_umask)


_WRAPPER = """\
#!/bin/sh
# Written by lockbox. uv builds each sdist in a cache directory with a random name; map the
# directory the compiler runs in to a fixed name, so that no random name reaches __FILE__
# or debug information (whose string tables GCC orders by hash).
exec {compiler} "$@" -ffile-prefix-map="$(pwd -P)"=/lockbox/src
"""


def _compiler_wrappers(scratch: Path, interpreter: Interpreter) -> dict[str, str]:
    """``CC`` and ``CXX`` pointing at wrappers of the compilers the builds would use (the
    environment's, else the interpreter's), keeping their extra words (``-pthread``)."""
    directory = scratch / "bin"
    directory.mkdir()
    variables = {}
    for variable, wrapper, default in (("CC", "cc", "gcc"), ("CXX", "c++", "g++")):
        configured = os.environ.get(variable) or interpreter.sysconfig.get(variable) or default
        if configured == "None":
            configured = default
        compiler, _, extra = configured.partition(" ")
        path = directory / wrapper
        path.write_text(_WRAPPER.format(compiler=compiler))
        path.chmod(0o755)
        variables[variable] = _join(str(BUILD_ROOT / "bin" / wrapper), extra)
    return variables


def _forward_uv_line(line: str, progress: Progress) -> None:
    text = line.strip()
    if text.startswith(("Building", "Built", "Installed", "Prepared", "Downloading",
                        "Resolved", "Using")):
        progress.info(f"uv: {text}")
    elif text:
        progress.debug(f"uv: {text}")


def _host_environment() -> dict[str, str]:
    """What the build keeps of lockbox's own environment: where programs and libraries
    are, proxies and certificates; not the user's uv settings, which uv.lock and the
    project already fix."""
    keep = ("PATH", "HOME", "USER", "LOGNAME", "http_proxy", "https_proxy", "no_proxy",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE",
            "SSL_CERT_DIR", "PKG_CONFIG_PATH", "LIBRARY_PATH", "CPATH", "CC", "CXX",
            "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL",
            "UV_FIND_LINKS", "UV_HTTP_TIMEOUT", "UV_NATIVE_TLS", "UV_OFFLINE")
    return {name: os.environ[name] for name in keep if name in os.environ}


def _join(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


def _path_maps(interpreter: Interpreter) -> list[tuple[str, str]]:
    """Build paths mapped to fixed names in compiler output."""
    return [
        (str(CACHE_MOUNT), "/lockbox/uv-cache"),
        (str(BUILD_ROOT), "/lockbox/build"),
        (str(interpreter.prefix), "/lockbox/python"),
    ]


def _prefix_maps(interpreter: Interpreter) -> list[str]:
    # -ffile-prefix-map covers __FILE__ and debug info; the longest prefix must come last,
    # as GCC applies the last matching option.
    return [f"-ffile-prefix-map={old}={new}" for old, new in reversed(_path_maps(interpreter))]


def _build_roots(project: Project, interpreter: Interpreter, scratch: Path,
                 cache: Path) -> list[str]:
    """Every directory whose paths must not survive in the layer: the sandbox's build root
    and the names the prefix maps gave it, the real scratch and cache directories (for
    tools that resolve symlinks and mounts), the interpreter's prefix and the project."""
    roots = {str(BUILD_ROOT), "/lockbox/uv-cache", "/lockbox/build", "/lockbox/python",
             str(scratch), str(scratch.resolve()), str(cache), str(cache.resolve()),
             str(interpreter.prefix), str(Path(interpreter.prefix).resolve()),
             str(project.root), str(project.root.resolve())}
    return sorted(roots)


# Settings of [tool.uv] that describe the project rather than how uv installs it.
_PROJECT_ONLY_UV_KEYS = frozenset({
    "sources", "workspace", "managed", "package", "default-groups", "dependency-groups",
    "dev-dependencies", "conflicts", "build-backend", "environments", "required-environments",
})


def _uv_config(project: Project, build: Mapping[str, BuildEnv], env: Mapping[str, str]) -> str:
    """A uv.toml with the project's own uv settings plus each package's build variables.

    uv reads no project settings at all once it is given a configuration file, so the
    project's ``[tool.uv]`` (and a ``uv.toml`` beside it, which takes precedence) are copied
    in: ``no-binary-package`` and the index settings must keep applying. Flags lockbox sets
    for every build are kept too: a package's ``*FLAGS`` add to them, and its path goes
    before ``PATH``."""
    settings: dict[str, Any] = {
        key: value for key, value in project.pyproject.get("tool", {}).get("uv", {}).items()
        if key not in _PROJECT_ONLY_UV_KEYS
    }
    uv_toml = project.root / "uv.toml"
    if uv_toml.is_file():
        settings.update(tomllib.loads(uv_toml.read_text(encoding="utf-8")))
    variables: dict[str, dict[str, str]] = {
        package: dict(values) for package, values in settings.get("extra-build-variables", {}).items()
    }
    for package, package_env in sorted(build.items()):
        mine = variables.setdefault(package, {})
        for key, value in package_env.env.items():
            mine[key] = _join(env.get(key), value) if key.endswith("FLAGS") else value
        if package_env.path:
            mine["PATH"] = os.pathsep.join([*package_env.path, env.get("PATH", "")])
    settings["extra-build-variables"] = variables
    text = tomlkit.dumps(settings)
    tomllib.loads(text)  # what uv will read must be valid TOML
    return text


def _report_scrub(report: LayerReport, progress: Progress) -> None:
    scrub = report.scrub
    for file, paths in sorted(scrub.found.items()):
        for path, count in sorted(paths.items()):
            progress.debug(f"scrubbed {path} ×{count} in {file}")
    if scrub.found:
        progress.info(f"scrubbed {scrub.occurrences} references to {len(scrub.paths)} "
                      f"build paths in {scrub.files} files")
    else:
        progress.info("no build paths found in the layer")


def _metadata(project: Project, plan: Plan, interpreter: Interpreter, tools: Tools,
              report: LayerReport) -> dict[str, object]:
    tags = interpreter.tags()
    return {
        "project": project.name,
        "lock": lock_digest(project).sri,
        "interpreter": {
            "version": str(interpreter.version),
            "abi": interpreter.abi,
            "platform": tags[0].platform if tags else "",
        },
        "uv": str(tools.uv.version),
        "packages": {
            planned.package.name: {
                "version": planned.package.version,
                "from": "wheel" if planned.form == "wheel" else planned.form,
            }
            for planned in plan.installed
            if planned.form != "member" and planned.package.name not in project.recipe.deps.exclude
        },
        "scrubbed": {"files": report.scrub.files, "occurrences": report.scrub.occurrences},
    }


def write_declared_hash(project: Project, digest: Sha256) -> Path:
    """Write ``deps.hash`` into the project's recipe, keeping its formatting and comments.
    Returns the file written."""
    recipe_file = project.recipe.source or project.root / "pyproject.toml"
    document = tomlkit.parse(recipe_file.read_text(encoding="utf-8"))
    table = document
    if recipe_file.name == "pyproject.toml":
        table = document.setdefault("tool", tomlkit.table())  # type: ignore[assignment]
        table = table.setdefault("lockbox", tomlkit.table())  # type: ignore[assignment]
    deps = table.setdefault("deps", tomlkit.table())
    deps["hash"] = digest.sri
    _write_atomically(recipe_file, tomlkit.dumps(document))
    return recipe_file


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.lockbox-tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, os.stat(path).st_mode & 0o7777)
    os.replace(temporary, path)
