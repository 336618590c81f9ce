"""The build step of the dependency phase: uv installs uv.lock in the sandbox, offline.

The fetch step (:mod:`lockbox.deps.fetch`) has downloaded every file the build needs, by hash;
this step runs the build backends (third-party code) with no network at all. In the
sandbox (:mod:`lockbox.tools.sandbox`), which shows the store's staging area at a fixed path, uv
checks that uv.lock is up to date, exports what ``uv sync`` would install as requirements
with hashes, and installs exactly those into a new environment from the fetched files,
building sdists with the pinned build dependencies only. Every build from source gets the
same reproducibility settings — ``SOURCE_DATE_EPOCH``, ``PYTHONHASHSEED``, time zone and
locale, path maps for C, C++ and Rust, compiler wrappers that map each build directory to a
fixed name — and the recipe's per-package variables, which reach uv as
``extra-build-variables`` in a uv.toml that also carries the project's own uv settings.

``lockbox lock-build``'s discovery install alone (:mod:`lockbox.deps.buildpins`) runs
``uv sync`` with the network: it must resolve build dependencies nothing pins yet.
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tomlkit

from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.plan import Plan
from lockbox.inputs.project import Project
from lockbox.inputs.recipe import BuildEnv
from lockbox.progress import Progress, silent
from lockbox.store import layout
from lockbox.store.store import Entry, Store
from lockbox.tools.sandbox import BUILD_ROOT, REPRODUCIBLE_ENV
from lockbox.tools.toolbox import Toolbox
from lockbox.tools.uv import OfflineInstall, SyncRequest

if TYPE_CHECKING:
    from lockbox.deps.fetch import Fetched
    from lockbox.environment import Environment


CACHE = BUILD_ROOT / layout.UV_CACHE
"""Where the sandboxed build sees the uv cache: the store's own, or the one bound there."""
FETCHED = BUILD_ROOT / layout.FETCHED
"""Where the sandboxed build sees the files fetched for it (:mod:`lockbox.deps.fetch`)."""


def cache_key(project: Project, system: str | None = None) -> str:
    """What the store's uv cache is keyed by: the installed compilers and -dev packages
    (or ``system``, the build root's hash, when the builds run in one), uv.lock's build
    pins and the recipe's per-package build variables."""
    import hashlib
    import json

    from lockbox.deps import toolchain
    from lockbox.deps.buildpins import pinned

    build = {
        name: [dict(env.env), list(env.path)] for name, env in project.recipe.deps.build.items()
    }
    text = json.dumps([system or toolchain.fingerprint(), pinned(project), build], sort_keys=True)
    return "k" + hashlib.sha256(text.encode()).hexdigest()[:15]


def uv_cache_dir(store: Store, cache: Path | None) -> Path:
    """The uv cache the dependency phase uses, as the host sees it: ``cache`` (from
    :meth:`lockbox.environment.Environment.uv_cache`) if given, else the store's own."""
    return cache or store.layout.uv_cache


@dataclass(frozen=True)
class Installed:
    """What the install step used, beyond uv.lock: for the layer's record."""

    environment: Mapping[str, str]
    """Every variable the builds were given (values of proxy settings, PATH, HOME and the
    user withheld; the staging directory and the cache's part as ``<stage>``, ``<cache>``)."""
    compilers: Mapping[str, str]
    """The compilers the wrappers ran: ``cc``/``c++`` → command."""
    traces: Path
    """The directory of the compiles' dependency lists (:mod:`lockbox.deps.toolchain`)."""


def install(
    project: Project,
    plan: Plan,
    interpreter: Interpreter,
    store: Store,
    work: Path,
    tools: Toolbox,
    progress: Progress = silent,
    *,
    require_build_hashes: bool = False,
    discovery: list[str] | None = None,
    system: Entry | None = None,
) -> Installed:
    """Install the locked third-party packages into ``work/venv``, ``work`` being a
    directory in one of ``store``'s staging areas.

    With ``discovery`` (a list to collect uv's log in) the install is lock-build's
    unpinned one (:mod:`lockbox.deps.buildpins`): uv.lock taken as it is, an empty uv cache of
    its own so that every sdist is built, one build at a time, every log line kept.
    With ``require_build_hashes`` any build dependency uv.lock does not pin is an error.
    With ``system`` (a ``toolchain`` entry, :mod:`lockbox.deps.buildroot`) everything runs in
    that build root: its compiler, headers and libraries, not the host's."""
    deps = project.recipe.deps
    inside = BUILD_ROOT / work.relative_to(store.work_dir)
    (work / "tmp").mkdir()
    # The cache is split by the toolchain and the build pins: uv would otherwise hand back
    # a wheel built under other headers or build dependencies. The part's path is the same
    # for the store's cache and one bound from elsewhere, and mapped to a fixed name.
    cache = CACHE / cache_key(project, system.nar_hash.sri if system else None)
    env = {
        **host_environment(tools.environment),
        # In a build root only its programs, the interpreter and uv are there; the host's
        # home is not.
        **({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(inside / "tmp")} if system else {}),
        "UV_CACHE_DIR": str(cache),
        "UV_PROJECT_ENVIRONMENT": str(inside / "venv"),
        "UV_PYTHON_DOWNLOADS": "never",
        # A cache bound from elsewhere is another mount: hardlinks cannot cross it.
        "UV_LINK_MODE": "copy" if tools.uv_cache else "hardlink",
        "UV_NO_PROGRESS": "1",
        "TMPDIR": str(inside / "tmp"),
        **REPRODUCIBLE_ENV,
        "RUSTFLAGS": _join(
            tools.environment.get("RUSTFLAGS"),
            " ".join(
                f"--remap-path-prefix={old}={new}" for old, new in _path_maps(interpreter, cache)
            ),
        ),
    }
    wrappers, compilers = _compiler_wrappers(
        work, inside, interpreter, cache, tools.environment if system is None else None
    )
    env.update(wrappers)
    if discovery is not None:
        (work / "uv-cache").mkdir()
        env.update(
            UV_CACHE_DIR=str(inside / "uv-cache"), UV_LINK_MODE="copy", UV_CONCURRENT_BUILDS="1"
        )
    config = None
    # `lockbox check`'s clock reaches every build backend, but not uv: uv checks TLS
    # certificates, which a clock a year ahead fails.
    varied = tools.varied
    # Excluded packages too: an extra source usually stands in for one.
    built = sorted({*plan.from_source(), *deps.exclude})
    variables = dict.fromkeys(built, varied) if varied else {}
    if deps.build or varied:
        config = work / "uv.toml"
        config.write_text(uv_config(project, deps.build, env, variables), encoding="utf-8")
    request = SyncRequest(
        python=interpreter.executable,
        groups=deps.groups,
        extras=deps.extras,
        exclude=deps.exclude,
        config_file=inside / "uv.toml" if config else None,
        require_build_hashes=require_build_hashes and discovery is None,
        frozen=discovery is not None,
        verbose=discovery is not None,
    )
    fetched = None
    if discovery is None:
        from lockbox.deps.fetch import fetch_dependencies

        fetched = fetch_dependencies(project, plan, store, work, tools, progress)
        env["UV_OFFLINE"] = "1"
    # What of the store's working directory the builds see: their own staging area, the
    # cache and the fetched sources; not the records, keys or other builds. In place of
    # every file fetched, the ones fetched for this build, read-only, at a fixed path (uv
    # caches what it unpacks by the path it came from).
    visible = [work.parent, store.layout.uv_cache, store.layout.sources]
    shown: list[Path | tuple[Path, Path]] = [project.root, *_named_paths(project, plan)]
    if fetched is not None:
        shown.append((fetched.links, FETCHED))

    def run_uv(argv: list[str], explain: Callable[[str], Exception] | None = None) -> None:
        sandboxed = tools.sandbox.wrap(
            argv,
            root=store.work_dir,
            cwd=project.root,
            keep=visible,
            binds=[(tools.uv_cache, CACHE)] if tools.uv_cache else [],
            read_only=[*shown, *(_mounted_in_root(interpreter, tools) if system else [])],
            network=discovery is not None,
            system=system.path if system else None,
        )

        def on_line(line: str) -> None:
            if discovery is not None:
                discovery.append(line)
            _forward_uv_line(line, progress)

        tools.uv.sync(
            sandboxed,
            cwd=project.root,
            env=env,
            progress=progress,
            on_line=on_line,
            explain=explain,
        )

    old_umask = os.umask(0o022)
    try:
        if fetched is None:
            run_uv(tools.uv.sync_argv(request))
            # The extra sources' build dependencies are part of the build set too.
            from lockbox.deps.fetch import fetch_extra_sources

            extra = fetch_extra_sources(project, store, tools, progress)
            if extra:
                run_uv(
                    tools.uv.pip_install_argv(
                        inside / "venv" / "bin" / "python",
                        [BUILD_ROOT / path.relative_to(store.work_dir) for path in extra],
                        config_file=request.config_file,
                        verbose=True,
                    )
                )
        else:
            _install_offline(
                project,
                store,
                work,
                request,
                fetched,
                env,
                variables,
                tools,
                run_uv,
                require_build_hashes,
                progress,
            )
    finally:
        os.umask(old_umask)
    # Recorded as every build saw them, less what differs per build or per host: the
    # staging directory's random name, where the host keeps its programs, credentials.
    # The cache's part is named by a digest of this machine's toolchain (cache_key).
    withheld = {name for name in env if "proxy" in name.lower()} | {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
    }
    return Installed(
        environment={
            name: "(host)"
            if name in withheld
            else value.replace(str(inside), "<stage>").replace(str(cache), "<cache>")
            for name, value in sorted(env.items())
        },
        compilers=compilers,
        traces=work / "trace",
    )


def _mounted_in_root(interpreter: Interpreter, tools: Toolbox) -> list[Path]:
    """What of the host a build root shows besides the project: the interpreter's prefix
    (where its executable is, and where that link leads) and uv."""
    paths = {
        interpreter.prefix,
        interpreter.prefix.resolve(),
        tools.uv.executable,
        tools.uv.executable.resolve(),
    }
    return sorted(path for path in paths if path.exists())


def _named_paths(project: Project, plan: Plan) -> list[Path]:
    """What on this machine the builds are told to read, outside the project's directory:
    uv.lock's sources given by path (path and directory sources, git repositories,
    find-links directories) and the recipe's build ``path`` directories. The sandbox shows
    them wherever they are (a fresh ``/tmp`` would hide one there)."""
    root = project.root.resolve()
    found = {
        (root / path).resolve()
        for build in project.recipe.deps.build.values()
        for path in build.path
    }
    for planned in plan.installed:
        location = planned.package.source.location
        if location.startswith("file://"):
            found.add(Path(urllib.parse.unquote(location.removeprefix("file://"))))
        elif "://" not in location:
            found.add((root / location).resolve())
    return sorted(path for path in found if path.exists() and not path.is_relative_to(root))


def _install_offline(
    project: Project,
    store: Store,
    work: Path,
    request: SyncRequest,
    fetched: Fetched,
    env: Mapping[str, str],
    variables: Mapping[str, Mapping[str, str]],
    tools: Toolbox,
    run_uv: Callable[..., None],
    require_build_hashes: bool,
    progress: Progress,
) -> None:
    """The build step, every command without network: check that uv.lock is up to date
    (``uv lock --check``, what ``uv sync --locked`` checks), export what ``uv sync`` would
    install as requirements with hashes, and install exactly that into a new environment
    from the fetched files, building sdists with the pinned build dependencies only."""
    from lockbox.deps.buildpins import pinned
    from lockbox.deps.fetch import localise
    from lockbox.tools.uv import explain_lock_check

    inside = BUILD_ROOT / work.relative_to(store.work_dir)
    run_uv(tools.uv.lock_check_argv(request), explain_lock_check)
    run_uv(tools.uv.export_argv(request, inside / "exported.txt"))
    # URL and git sources are installed from what was fetched for them.
    links = {
        name: (
            FETCHED / path.relative_to(fetched.links)
            if path.is_relative_to(fetched.links)
            else inside / path.relative_to(work)
        ).as_uri()
        for name, path in fetched.local.items()
    }
    (work / "requirements.txt").write_text(
        localise((work / "exported.txt").read_text(encoding="utf-8"), links), encoding="utf-8"
    )
    pins = pinned(project)
    constraints = None
    if pins:
        constraints = work / "build-constraints.txt"
        constraints.write_text(
            "".join(
                f"{name}=={pin['version']}" + "".join(f" --hash={h}" for h in pin["hashes"]) + "\n"
                for name, pin in sorted(pins.items())
            ),
            encoding="utf-8",
        )
    (work / "uv-offline.toml").write_text(
        uv_config(project, project.recipe.deps.build, env, variables, offline=True),
        encoding="utf-8",
    )
    offline = OfflineInstall(
        links=FETCHED,
        config_file=inside / "uv-offline.toml",
        build_constraints=inside / "build-constraints.txt" if constraints else None,
        require_build_hashes=require_build_hashes,
    )
    python = inside / "venv" / "bin" / "python"
    run_uv(tools.uv.venv_argv(request.python, inside / "venv"))
    run_uv(tools.uv.pip_sync_argv(python, inside / "requirements.txt", offline))
    if fetched.extra:
        progress.info(f"installing {len(fetched.extra)} extra sources")
        run_uv(
            tools.uv.pip_install_argv(
                python,
                [BUILD_ROOT / path.relative_to(store.work_dir) for path in fetched.extra],
                offline,
            )
        )


_WRAPPER = """\
#!/bin/sh
# Written by lockbox: compile as {compiler} would, plus the recipe's extra flags for this
# package (${extra}), with the build paths mapped to fixed names. uv builds each sdist in a
# cache directory with a random name, so the directory the compiler runs in is mapped too:
# no random name may reach __FILE__ or debug information (whose string tables GCC orders
# by hash). The most specific map comes last: GCC applies the last one that matches.
# Every compile writes the files it read to the trace directory: the headers through
# SUNPRO_DEPENDENCIES, the objects and libraries a link read through the linker.
# Tracing is best effort: without the directory the compile runs untraced.
if trace=$(mktemp "{trace}/cc.XXXXXXXXXX" 2>/dev/null); then
    SUNPRO_DEPENDENCIES="$trace" exec {compiler} "$@" ${extra} {maps} -ffile-prefix-map="$(pwd -P)"=/lockbox/src {link_trace}
fi
exec {compiler} "$@" ${extra} {maps} -ffile-prefix-map="$(pwd -P)"=/lockbox/src
"""

RECIPE_CFLAGS = "LOCKBOX_CFLAGS"
"""Carries a package's extra ``CFLAGS`` from the recipe to the C compiler wrapper."""
RECIPE_CXXFLAGS = "LOCKBOX_CXXFLAGS"
"""Carries a package's extra ``CXXFLAGS`` from the recipe to the C++ compiler wrapper."""
_WRAPPER_VARIABLES = {"CFLAGS": RECIPE_CFLAGS, "CXXFLAGS": RECIPE_CXXFLAGS}


def _compiler_wrappers(
    work: Path,
    inside: Path,
    interpreter: Interpreter,
    cache: Path,
    host: Environment | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """``CC`` and ``CXX`` pointing at wrappers of the compilers the builds would use (the
    environment's, else the interpreter's), keeping their extra words (``-pthread``).

    lockbox adds its flags in the wrappers rather than in ``CFLAGS``: setuptools takes a
    ``CFLAGS`` from the environment *instead of* the interpreter's (``-O3 -DNDEBUG -g``…),
    so setting it would build every extension unoptimised, with assertions on.

    Returns the variables and the compilers wrapped (``cc``/``c++`` → command). ``host``
    is the environment builds on the host take ``CC``/``CXX`` from; None in a build root,
    whose compilers the host's do not name."""
    directory = work / "bin"
    directory.mkdir()
    (work / "trace").mkdir()
    maps = " ".join(_prefix_maps(interpreter, cache))
    variables = {}
    compilers = {}
    for variable, wrapper, default, extra in (
        ("CC", "cc", "gcc", RECIPE_CFLAGS),
        ("CXX", "c++", "g++", RECIPE_CXXFLAGS),
    ):
        configured = (
            (host.get(variable) if host is not None else None)
            or interpreter.sysconfig.get(variable)
            or default
        )
        if configured == "None":
            configured = default
        compiler, _, words = configured.partition(" ")
        path = directory / wrapper
        link_trace = (
            '-Wl,--dependency-file="$trace.ld"'
            if host is not None and _linker_traces(compiler)
            else ""
        )
        path.write_text(
            _WRAPPER.format(
                compiler=compiler,
                extra=extra,
                maps=maps,
                trace=inside / "trace",
                link_trace=link_trace,
            )
        )
        path.chmod(0o755)
        variables[variable] = _join(str(inside / "bin" / wrapper), words)
        compilers[wrapper] = compiler
    return variables, compilers


def _linker_traces(compiler: str) -> bool:
    """Whether the linker ``compiler`` runs can write a dependency file (binutils 2.35)."""
    from lockbox.deps.toolchain import command_output

    ld = command_output([compiler, "-print-prog-name=ld"]).strip() or "ld"
    return "--dependency-file" in command_output([ld, "--help"])


def _forward_uv_line(line: str, progress: Progress) -> None:
    text = line.strip()
    if text.startswith(
        ("Building", "Built", "Installed", "Prepared", "Downloading", "Resolved", "Using")
    ):
        progress.info(f"uv: {text}")
    elif text:
        progress.debug(f"uv: {text}")


def host_environment(environment: Environment) -> dict[str, str]:
    """What the build keeps of lockbox's own environment: where programs and libraries
    are, proxies and certificates; not the user's uv settings, which uv.lock and the
    project already fix."""
    return environment.subset(_KEPT_VARIABLES)


_KEPT_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PKG_CONFIG_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "CC",
    "CXX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_HTTP_TIMEOUT",
    "UV_NATIVE_TLS",
    "UV_OFFLINE",
)


def _join(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


def _path_maps(interpreter: Interpreter, cache: Path) -> list[tuple[str, str]]:
    """Build paths mapped to fixed names in compiler output (``cache``: uv's, its part
    named by :func:`cache_key`, which differs between machines)."""
    return [
        (str(cache), "/lockbox/uv-cache"),
        (str(BUILD_ROOT), "/lockbox/build"),
        (str(interpreter.prefix), "/lockbox/python"),
    ]


def _prefix_maps(interpreter: Interpreter, cache: Path) -> list[str]:
    # -ffile-prefix-map covers __FILE__ and debug info. GCC applies the last matching
    # option, so the more specific prefix (the cache, inside the build root) comes last.
    return [
        f"-ffile-prefix-map={old}={new}" for old, new in reversed(_path_maps(interpreter, cache))
    ]


def build_roots(
    project: Project, interpreter: Interpreter, store: Store, cache: Path | None
) -> list[str]:
    """Every directory whose paths must not survive in the layer: the sandbox's build root
    and the names the prefix maps gave the cache and the build root (followed by uv's
    random directory names), the store's working directory and the cache as the host sees
    them (for tools that resolve mounts), the interpreter's prefix and the project."""
    hosts = [store.work_dir, interpreter.prefix, project.root, *([cache] if cache else [])]
    # The interpreter's mapped name (/lockbox/python) stays: it is the same on every machine.
    roots = {str(BUILD_ROOT), "/lockbox/uv-cache", "/lockbox/build"}
    roots.update(str(path) for host in hosts for path in (Path(host), Path(host).resolve()))
    return sorted(roots)


_INDEX_KEYS = (
    "index",
    "index-url",
    "extra-index-url",
    "find-links",
    "no-index",
    "index-strategy",
    "keyring-provider",
    "allow-insecure-host",
)
"""uv settings that name where packages come from: not given to the offline build, which
installs from the fetched files only."""


def uv_config(
    project: Project,
    build: Mapping[str, BuildEnv],
    env: Mapping[str, str],
    extra: Mapping[str, Mapping[str, str]] | None = None,
    *,
    offline: bool = False,
) -> str:
    """A uv.toml with the project's own uv settings plus each package's build variables.

    uv reads no project settings at all once it is given a configuration file, so the
    project's ``[tool.uv]`` (and a ``uv.toml`` beside it, which takes precedence) are copied
    in: ``no-binary-package`` and the index settings must keep applying. A package's
    ``CFLAGS`` and ``CXXFLAGS`` go to the compiler wrappers, which add them to the flags
    the build would use anyway (setuptools would otherwise drop the interpreter's); other
    variables (``LDFLAGS``, ``CPPFLAGS``, which setuptools adds) are set as they are, and
    its path goes before ``PATH``. ``extra`` adds variables to packages' builds as they are.
    ``offline`` leaves out the settings of indexes (:data:`_INDEX_KEYS`)."""
    from lockbox.deps.inputs import uv_settings

    settings = uv_settings(project)
    if offline:
        settings = {key: value for key, value in settings.items() if key not in _INDEX_KEYS}
    variables: dict[str, dict[str, str]] = {
        package: dict(values)
        for package, values in settings.get("extra-build-variables", {}).items()
    }
    for package, package_env in sorted(build.items()):
        mine = variables.setdefault(package, {})
        for key, value in package_env.env.items():
            mine[_WRAPPER_VARIABLES.get(key, key)] = value
        if package_env.path:
            mine["PATH"] = os.pathsep.join([*package_env.path, env.get("PATH", "")])
    for package, values in sorted((extra or {}).items()):
        variables.setdefault(package, {}).update(values)
    settings["extra-build-variables"] = variables
    text = tomlkit.dumps(settings)
    tomllib.loads(text)  # what uv will read must be valid TOML
    return text
