"""Recipes: how to build a project, read from ``lockbox.toml`` or ``[tool.lockbox]``.

A recipe is declarative TOML, validated here into frozen records. Validation collects every
problem — unknown keys (with a did-you-mean), wrong types, bad hashes, files that do not
exist — each with its file, key and line, and raises them together as one
:class:`~lockbox.errors.RecipeError`. Every key is documented in ``docs/recipe.md``; keep
the two in step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lockbox.errors import HashFormatError, PathError, Problem, RecipeError
from lockbox.hashes import Sha256
from lockbox.inputs.paths import confined, relative_parts
from lockbox.inputs.tomlpos import locate


def canonical_name(name: str) -> str:
    """A package name in its normalised form (PEP 503): ``Psycopg_C`` is ``psycopg-c``.

    The same rule as ``packaging.utils.canonicalize_name``, written out so that reading a
    recipe does not import packaging's wheel-tag machinery."""
    return _SEPARATORS.sub("-", name).lower()


_SEPARATORS = re.compile(r"[-_.]+")

T = TypeVar("T")


@dataclass(frozen=True)
class BuildEnv:
    """Extra build environment for one package built from source."""

    env: Mapping[str, str] = field(default_factory=dict)
    """Variables set for that package's build only (e.g. ``CFLAGS``)."""
    path: tuple[str, ...] = ()
    """Directories put in front of ``PATH`` for that build (e.g. where ``pg_config`` is)."""


@dataclass(frozen=True)
class ExtraSource:
    """A distribution that is not installed from uv.lock but fetched by URL or from a git
    repository, checked against a declared hash, and installed into the layer."""

    hash: Sha256
    """For ``url``: SHA-256 of the downloaded file (as an index publishes it); for ``git``:
    NAR hash of the checkout without ``.git``."""
    url: str | None = None
    git: str | None = None
    rev: str | None = None
    """The commit of ``git`` (40 hex digits)."""

    @property
    def label(self) -> str:
        return self.url if self.url is not None else f"{self.git}@{self.rev}"


@dataclass(frozen=True)
class Toolchain:
    """The build root the dependency phase compiles in (:mod:`lockbox.deps.buildroot`)."""

    packages: tuple[str, ...] = ()
    """Debian packages the builds need besides the compiler (``-dev`` packages)."""
    distribution: str | None = None
    """The Debian release they come from; None for the host's."""


@dataclass(frozen=True)
class Deps:
    """The fixed-output dependency layer."""

    hash: Sha256 | None = None
    """Declared NAR hash of the layer; None until the first build prints it."""
    groups: tuple[str, ...] = ()
    """Dependency groups installed besides the main dependencies (``dev`` is not, unless named)."""
    extras: tuple[str, ...] = ()
    """Extras of the project that are installed."""
    exclude: tuple[str, ...] = ()
    """Packages left out of the install (normalised names)."""
    build: Mapping[str, BuildEnv] = field(default_factory=dict)
    """Per-package build environment, by normalised package name."""
    extra_sources: tuple[ExtraSource, ...] = ()
    """Installed after uv.lock's packages, each pinned by its own hash."""
    toolchain: Toolchain | None = None
    """With ``[deps.toolchain]``, sdists are built in a root of pinned Debian packages
    instead of against the host's compiler and headers."""


@dataclass(frozen=True)
class Libraries:
    """Where shared libraries of extension modules are looked for, and what may be missing."""

    paths: tuple[str, ...] = ()
    """Extra library directories searched before the host's."""
    ignore_missing: tuple[str, ...] = ()
    """Glob patterns of sonames that may stay unresolved (reported as warnings)."""
    bundle: bool = True
    """Copy needed host libraries into the closure (True) or link to their host paths."""


@dataclass(frozen=True)
class Copy:
    """One file or directory of the project copied into the output."""

    source: str
    """Path relative to the project directory."""
    target: str
    """Path relative to the destination (site-packages or the output root)."""


@dataclass(frozen=True)
class Substitution:
    """A literal replacement in a project file, failing when the pattern is absent."""

    file: str
    """Path relative to the project directory."""
    replace: str
    """The literal text to find."""
    with_: str
    """Its replacement; ``@out@`` stands for the output path."""
    expect: int | None = None
    """Exact number of occurrences required; None means at least one."""


@dataclass(frozen=True)
class App:
    """How the application is assembled over the dependency layer."""

    site_packages: tuple[Copy, ...] = ()
    """Project paths copied into site-packages."""
    root: tuple[Copy, ...] = ()
    """Project paths copied into the output root (scripts, ``manage.py``, assets)."""
    delete: tuple[str, ...] = ()
    """Paths (relative to the output root, globs allowed) removed after copying."""
    patches: tuple[str, ...] = ()
    """Unified diffs (relative to the project) applied to the project source, ``-p1``."""
    substitute: tuple[Substitution, ...] = ()
    """Literal replacements applied to the project source after the patches."""
    compile_bytecode: bool = False
    """Write deterministic, unchecked-hash ``.pyc`` files."""


@dataclass(frozen=True)
class Verify:
    """Checks that gate the build."""

    imports: tuple[str, ...] = ()
    """Modules imported, each in a fresh interpreter of the built application."""
    commands: tuple[tuple[str, ...], ...] = ()
    """Commands run in the output root (``python`` means the application's interpreter)."""


@dataclass(frozen=True)
class Image:
    """``[image]``: the OCI image configuration of ``lockbox image``."""

    entrypoint: tuple[str, ...] = ()
    """Words of the entrypoint; ``@out@`` stands for the application's path. Empty: the
    application's ``bin/python``."""
    cmd: tuple[str, ...] = ()
    """Default arguments (``@out@`` allowed)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables, added to ``PATH`` (the application's ``bin/`` first),
    ``PYTHONDONTWRITEBYTECODE=1``, ``LANG=C.UTF-8``."""
    workdir: str = "@out@"
    """Working directory (``@out@`` allowed)."""
    user: str = ""
    """User (and group) to run as, e.g. ``"1000:1000"``; empty: root."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels besides the OCI annotations lockbox sets itself."""


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, with every default filled in."""

    source: Path | None
    """The file the recipe was read from; None when the project has none (all defaults)."""
    project: Path
    """The project directory (with ``pyproject.toml`` and ``uv.lock``)."""
    name: str | None = None
    """Name of the built application; defaults to the project's name."""
    python: str | None = None
    """Interpreter request: a version (``3.13``), or a path; None lets requires-python decide."""
    deps: Deps = Deps()
    libraries: Libraries = Libraries()
    app: App = App()
    verify: Verify = Verify()
    image: Image = Image()


KeyPath = tuple[str | int, ...]


class _Reader:
    """Walks raw TOML data, converting values and collecting located problems."""

    def __init__(self, file: Path, text: str, prefix: KeyPath, project: Path) -> None:
        self.file = file
        self.text = text
        self.prefix = prefix
        self.project = project
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        full = self.prefix + path
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in full)
        dotted = dotted.replace(".[", "[")
        self.problems.append(Problem(self.file, dotted, locate(self.text, full), message))

    def table(self, data: object, path: KeyPath, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {_kind(data)}")
            return {}
        for key in data:
            if key not in allowed:
                import difflib  # only when a key is wrong

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                options = ", ".join(allowed)
                self.problem(path + (key,), f"unknown key{hint} (allowed here: {options})")
        return data

    def string(self, data: Mapping[str, Any], path: KeyPath, key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(path + (key,), f"expected a non-empty string, got {_kind(value)}")
            return None
        return value

    def boolean(self, data: Mapping[str, Any], path: KeyPath, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.problem(path + (key,), f"expected true or false, got {_kind(value)}")
            return default
        return value

    def strings(self, data: Mapping[str, Any], path: KeyPath, key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self.problem(path + (key,), f"expected an array of strings, got {_kind(value)}")
            return ()
        result = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                result.append(item)
            else:
                self.problem(path + (key, index), f"expected a non-empty string, got {_kind(item)}")
        return tuple(result)

    def project_file(self, path: KeyPath, value: str, *, link_ok: bool = False) -> str:
        """Check that a project-relative path exists and stays inside the project: no
        ``..``, not absolute, no symbolic link among its components (the last one may be
        a link with ``link_ok``: it is copied as a link)."""
        try:
            target = confined(self.project, value, "", within="the project", link_ok=link_ok)
        except PathError as error:
            self.problem(path, f"{error.path!r} {error.reason}")
            return value
        if not os.path.lexists(target):
            self.problem(path, f"{value!r} does not exist in the project ({target})")
        elif not link_ok and not target.is_file():
            self.problem(path, f"{value!r} is not a file; a file is expected")
        return value

    def output_path(self, path: KeyPath, value: str) -> str:
        """Check that an output-relative path (or pattern) is relative and has no ``..``."""
        try:
            relative_parts(value, "", within="the output")
        except PathError as error:
            self.problem(path, f"{error.path!r} {error.reason}")
        return value


def _kind(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


_TOP_KEYS = ("project", "name", "python", "deps", "libraries", "app", "verify", "image")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_recipe(
    data: Mapping[str, Any],
    *,
    file: Path,
    text: str,
    prefix: KeyPath,
    base: Path,
) -> Recipe:
    """Validate recipe data read from ``file`` (whose raw ``text`` locates lines).

    ``prefix`` is where the recipe sits in the file (``("tool", "lockbox")`` in a
    pyproject.toml, empty in lockbox.toml); ``base`` is the directory of ``file``.
    """
    allowed = _TOP_KEYS if not prefix else _TOP_KEYS[1:]
    probe = _Reader(file, text, prefix, base)
    top = probe.table(dict(data), (), allowed)
    project = base
    project_value = probe.string(top, (), "project")
    if project_value is not None:
        project = (base / project_value).resolve()
        if not (project / "pyproject.toml").is_file():
            probe.problem(("project",), f"{project} has no pyproject.toml")
    reader = _Reader(file, text, prefix, project)
    reader.problems = probe.problems

    name = reader.string(top, (), "name")
    python = reader.string(top, (), "python")
    if python is not None and "/" in python and not Path(python).exists():
        reader.problem(
            ("python",),
            f'{python} does not exist; give a version such as "3.13" or the path of an interpreter',
        )
    recipe = Recipe(
        source=file,
        project=project,
        name=name,
        python=python,
        deps=_deps(reader, top.get("deps", {})),
        libraries=_libraries(reader, top.get("libraries", {})),
        app=_app(reader, top.get("app", {})),
        verify=_verify(reader, top.get("verify", {})),
        image=_image(reader, top.get("image", {})),
    )
    if reader.problems:
        reader.problems.sort(key=lambda problem: problem.line or 0)
        raise RecipeError(reader.problems, hint=f"see docs/recipe.md for every key of {file.name}")
    return recipe


def _deps(reader: _Reader, data: object) -> Deps:
    path: KeyPath = ("deps",)
    table = reader.table(
        data, path, ("hash", "groups", "extras", "exclude", "build", "extra-sources", "toolchain")
    )
    declared = None
    text = reader.string(table, path, "hash")
    if text is not None:
        try:
            declared = Sha256.parse(text)
        except HashFormatError as error:
            reader.problem(path + ("hash",), str(error))
    build: dict[str, BuildEnv] = {}
    packages = table.get("build", {})
    if not isinstance(packages, dict):
        reader.problem(path + ("build",), f"expected a table of packages, got {_kind(packages)}")
        packages = {}
    for package, settings in packages.items():
        where = path + ("build", package)
        entry = reader.table(settings, where, ("env", "path"))
        env = entry.get("env", {})
        if not isinstance(env, dict):
            reader.problem(where + ("env",), f"expected a table of variables, got {_kind(env)}")
            env = {}
        for variable, value in env.items():
            if not _ENV_NAME.match(variable):
                reader.problem(where + ("env", variable), "not a valid environment variable name")
            if not isinstance(value, str):
                reader.problem(where + ("env", variable), f"expected a string, got {_kind(value)}")
        build[canonical_name(package)] = BuildEnv(
            env={k: v for k, v in env.items() if isinstance(v, str)},
            path=reader.strings(entry, where, "path"),
        )
    return Deps(
        hash=declared,
        groups=reader.strings(table, path, "groups"),
        extras=reader.strings(table, path, "extras"),
        exclude=tuple(canonical_name(n) for n in reader.strings(table, path, "exclude")),
        build=build,
        extra_sources=_extra_sources(reader, table.get("extra-sources", [])),
        toolchain=_toolchain(reader, table["toolchain"]) if "toolchain" in table else None,
    )


_DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")


def _toolchain(reader: _Reader, data: object) -> Toolchain:
    path: KeyPath = ("deps", "toolchain")
    table = reader.table(data, path, ("packages", "distribution"))
    packages = reader.strings(table, path, "packages")
    for index, name in enumerate(packages):
        if not _DEBIAN_NAME.match(name):
            reader.problem(path + ("packages", index), f"{name!r} is not a Debian package name")
    distribution = reader.string(table, path, "distribution")
    from lockbox.deps.buildroot import ARCHIVES

    if distribution is not None and distribution not in ARCHIVES:
        reader.problem(
            path + ("distribution",),
            f"{distribution!r} is not one of {', '.join(sorted(ARCHIVES))}",
        )
    return Toolchain(packages=packages, distribution=distribution)


_COMMIT = re.compile(r"[0-9a-f]{40}\Z")


def _extra_sources(reader: _Reader, data: object) -> tuple[ExtraSource, ...]:
    path: KeyPath = ("deps", "extra-sources")
    if not isinstance(data, list):
        reader.problem(path, f"expected an array of tables, got {_kind(data)}")
        return ()
    sources = []
    for index, item in enumerate(data):
        where = path + (index,)
        table = reader.table(item, where, ("url", "git", "rev", "hash"))
        url, git = reader.string(table, where, "url"), reader.string(table, where, "git")
        rev, text = reader.string(table, where, "rev"), reader.string(table, where, "hash")
        if (url is None) == (git is None):
            reader.problem(where, "give either url (an archive) or git (a repository with rev)")
        if url is not None and not url.startswith(("https://", "http://", "file://")):
            reader.problem(where + ("url",), "expected an http(s):// or file:// URL")
        if git is not None and (rev is None or not _COMMIT.match(rev)):
            reader.problem(
                where + ("rev",) if rev else where,
                "a git source needs rev, the full commit (40 hex digits)",
            )
        if url is not None and rev is not None:
            reader.problem(where + ("rev",), "rev belongs to a git source, not to url")
        declared = None
        if text is None:
            reader.problem(
                where,
                "hash is required: an extra source is pinned by it "
                "(sha256 of the file for url, NAR hash of the checkout for git)",
            )
        else:
            try:
                declared = Sha256.parse(text)
            except HashFormatError as error:
                reader.problem(where + ("hash",), str(error))
        if declared is not None:
            sources.append(ExtraSource(declared, url, git, rev))
    return tuple(sources)


def _libraries(reader: _Reader, data: object) -> Libraries:
    path: KeyPath = ("libraries",)
    table = reader.table(data, path, ("paths", "ignore-missing", "bundle"))
    return Libraries(
        paths=reader.strings(table, path, "paths"),
        ignore_missing=reader.strings(table, path, "ignore-missing"),
        bundle=reader.boolean(table, path, "bundle", True),
    )


def _copies(reader: _Reader, table: Mapping[str, Any], path: KeyPath, key: str) -> tuple[Copy, ...]:
    value = table.get(key, [])
    if not isinstance(value, list):
        reader.problem(path + (key,), f"expected an array, got {_kind(value)}")
        return ()
    copies = []
    for index, item in enumerate(value):
        where = path + (key, index)
        if isinstance(item, str):
            source, target = item, item
            reader.project_file(where, source, link_ok=True)  # the same path in the output
        elif isinstance(item, dict):
            spec = reader.table(item, where, ("from", "to"))
            source = reader.string(spec, where, "from") or ""
            target = reader.string(spec, where, "to") or source
            if not source:
                reader.problem(where + ("from",), "missing: the project path to copy")
                continue
            reader.project_file(where + ("from",), source, link_ok=True)
            if "to" in spec:
                reader.output_path(where + ("to",), target)
        else:
            reader.problem(where, f"expected a path or {{ from = …, to = … }}, got {_kind(item)}")
            continue
        copies.append(Copy(source, target))
    return tuple(copies)


def _app(reader: _Reader, data: object) -> App:
    path: KeyPath = ("app",)
    table = reader.table(
        data,
        path,
        ("site-packages", "root", "delete", "patches", "substitute", "compile-bytecode"),
    )
    patches = reader.strings(table, path, "patches")
    for index, patch in enumerate(patches):
        reader.project_file(path + ("patches", index), patch)
    substitutions = []
    raw = table.get("substitute", [])
    if not isinstance(raw, list):
        reader.problem(path + ("substitute",), f"expected an array of tables, got {_kind(raw)}")
        raw = []
    for index, item in enumerate(raw):
        where = path + ("substitute", index)
        spec = reader.table(item, where, ("file", "replace", "with", "expect"))
        file, old = reader.string(spec, where, "file"), reader.string(spec, where, "replace")
        new = spec.get("with")
        for key in ("file", "replace"):
            if key not in spec:
                reader.problem(where + (key,), "missing")
        if not isinstance(new, str):
            reader.problem(where + ("with",), "missing: the replacement text (a string)")
        expect = spec.get("expect")
        if expect is not None and (
            not isinstance(expect, int) or isinstance(expect, bool) or expect < 1
        ):
            reader.problem(where + ("expect",), f"expected a positive integer, got {expect!r}")
            expect = None
        if file is not None:
            reader.project_file(where + ("file",), file)
        if file and old and isinstance(new, str):
            substitutions.append(Substitution(file, old, new, expect))
    delete = reader.strings(table, path, "delete")
    for index, pattern in enumerate(delete):
        reader.output_path(path + ("delete", index), pattern)
    return App(
        site_packages=_copies(reader, table, path, "site-packages"),
        root=_copies(reader, table, path, "root"),
        delete=delete,
        patches=patches,
        substitute=tuple(substitutions),
        compile_bytecode=reader.boolean(table, path, "compile-bytecode", False),
    )


def _verify(reader: _Reader, data: object) -> Verify:
    path: KeyPath = ("verify",)
    table = reader.table(data, path, ("imports", "commands"))
    commands = []
    raw = table.get("commands", [])
    if not isinstance(raw, list):
        reader.problem(path + ("commands",), f"expected an array of commands, got {_kind(raw)}")
        raw = []
    for index, command in enumerate(raw):
        if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
            commands.append(tuple(command))
        else:
            reader.problem(
                path + ("commands", index),
                'expected a command as an array of strings, e.g. ["python", "manage.py", "check"]',
            )
    imports = reader.strings(table, path, "imports")
    for index, module in enumerate(imports):
        if not all(part.isidentifier() for part in module.split(".")):
            reader.problem(path + ("imports", index), f"{module!r} is not a module name")
    return Verify(imports=imports, commands=tuple(commands))


def _image(reader: _Reader, data: object) -> Image:
    path: KeyPath = ("image",)
    table = reader.table(data, path, ("entrypoint", "cmd", "env", "workdir", "user", "labels"))
    tables: dict[str, dict[str, str]] = {}
    for key in ("env", "labels"):
        value = table.get(key, {})
        if not isinstance(value, dict):
            reader.problem(path + (key,), f"expected a table of strings, got {_kind(value)}")
            value = {}
        for name, item in value.items():
            if not isinstance(item, str):
                reader.problem(path + (key, name), f"expected a string, got {_kind(item)}")
            elif key == "env" and not _ENV_NAME.match(name):
                reader.problem(path + (key, name), "not a valid environment variable name")
        tables[key] = {k: v for k, v in value.items() if isinstance(v, str)}
    return Image(
        entrypoint=reader.strings(table, path, "entrypoint"),
        cmd=reader.strings(table, path, "cmd"),
        env=tables["env"],
        workdir=reader.string(table, path, "workdir") or "@out@",
        user=reader.string(table, path, "user") or "",
        labels=tables["labels"],
    )


def recipe_as_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe in its TOML shape, every default written out."""

    def copies(items: tuple[Copy, ...]) -> list[Any]:
        return [
            c.source if c.source == c.target else {"from": c.source, "to": c.target} for c in items
        ]

    deps: dict[str, Any] = {
        "groups": list(recipe.deps.groups),
        "extras": list(recipe.deps.extras),
        "exclude": list(recipe.deps.exclude),
    }
    if recipe.deps.hash is not None:
        deps = {"hash": recipe.deps.hash.sri, **deps}
    deps["build"] = {
        name: {"path": list(env.path), "env": dict(env.env)}
        for name, env in sorted(recipe.deps.build.items())
    }
    deps["extra-sources"] = [
        {
            key: value
            for key, value in (
                ("url", source.url),
                ("git", source.git),
                ("rev", source.rev),
                ("hash", source.hash.sri),
            )
            if value is not None
        }
        for source in recipe.deps.extra_sources
    ]
    if recipe.deps.toolchain is not None:
        deps["toolchain"] = {"packages": list(recipe.deps.toolchain.packages)}
        if recipe.deps.toolchain.distribution is not None:
            deps["toolchain"]["distribution"] = recipe.deps.toolchain.distribution
    result: dict[str, Any] = {"project": str(recipe.project)}
    if recipe.name is not None:
        result["name"] = recipe.name
    if recipe.python is not None:
        result["python"] = recipe.python
    result |= {
        "deps": deps,
        "libraries": {
            "paths": list(recipe.libraries.paths),
            "ignore-missing": list(recipe.libraries.ignore_missing),
            "bundle": recipe.libraries.bundle,
        },
        "app": {
            "site-packages": copies(recipe.app.site_packages),
            "root": copies(recipe.app.root),
            "delete": list(recipe.app.delete),
            "patches": list(recipe.app.patches),
            "compile-bytecode": recipe.app.compile_bytecode,
            "substitute": [
                {"file": s.file, "replace": s.replace, "with": s.with_}
                | ({"expect": s.expect} if s.expect is not None else {})
                for s in recipe.app.substitute
            ],
        },
        "verify": {
            "imports": list(recipe.verify.imports),
            "commands": [list(c) for c in recipe.verify.commands],
        },
        "image": {
            "entrypoint": list(recipe.image.entrypoint),
            "cmd": list(recipe.image.cmd),
            "env": dict(recipe.image.env),
            "workdir": recipe.image.workdir,
            "user": recipe.image.user,
            "labels": dict(recipe.image.labels),
        },
    }
    return result
