"""The uv.lock reader: the lock file as frozen records.

``uv.lock`` pins every package of a uv project or workspace: its version, where it comes
from (a registry, git, a URL, a local path or directory, or a workspace member), the files
that may be installed with their SHA-256, and the dependency edges with their markers and
extras. :func:`read_lock` validates the whole file, collecting every problem with its key
path and line, and raises them together as one :class:`~lockbox.errors.LockFileError`.

Which packages a build installs, and in which form, is decided later by :mod:`lockbox.inputs.plan`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from packaging.markers import InvalidMarker, Marker
from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)

from lockbox.errors import LockFileError, Problem
from lockbox.hashes import Sha256
from lockbox.inputs.tomlpos import locate

SUPPORTED_VERSION = 1
"""The ``version`` of uv.lock this reader understands (uv 0.5 and later)."""

SourceKind = Literal["registry", "git", "url", "path", "directory", "editable", "virtual"]
SOURCE_KINDS: tuple[SourceKind, ...] = (
    "registry",
    "git",
    "url",
    "path",
    "directory",
    "editable",
    "virtual",
)


@dataclass(frozen=True)
class Source:
    """Where a locked package comes from."""

    kind: SourceKind
    """``registry``, ``git``, ``url``, ``path``, ``directory``, ``editable`` or ``virtual``."""
    location: str
    """The registry or file URL, the git repository URL (without query and fragment), or a
    path relative to the workspace root."""
    subdirectory: str | None = None
    """For git and URL sources: the project's directory inside the repository or archive."""
    git_reference: str | None = None
    """For git sources: the requested ``rev``, ``tag`` or ``branch``, if any."""
    git_commit: str | None = None
    """For git sources: the full commit the lock pins."""

    @property
    def is_local(self) -> bool:
        """A path in the workspace rather than something fetched."""
        return self.kind in ("path", "directory", "editable", "virtual")

    def __str__(self) -> str:
        if self.kind == "git":
            return f"git+{self.location}@{self.git_commit}"
        return f"{self.kind} {self.location}"


@dataclass(frozen=True)
class Artifact:
    """A file the lock allows to install a package from: a wheel or an sdist."""

    filename: str
    """The file's name (the last part of its URL or path)."""
    url: str | None
    """Where to download it, for registry and URL sources."""
    path: str | None
    """Where it lies, relative to the workspace root, for path sources."""
    sha256: Sha256 | None
    """The pinned SHA-256; None where the index published none (a flat find-links page
    without hash fragments). The layer's declared hash pins such files all the same."""
    size: int | None
    """Size in bytes, when the lock records it."""

    @property
    def wheel_tags(self) -> frozenset[Tag]:
        """The compatibility tags of a wheel (empty for an sdist)."""
        if not self.filename.endswith(".whl"):
            return frozenset()
        return parse_wheel_filename(self.filename)[3]


@dataclass(frozen=True)
class Dependency:
    """An edge from one locked package to another."""

    name: NormalizedName
    """The package depended on."""
    extras: tuple[str, ...] = ()
    """Extras of that package that are needed too."""
    marker: Marker | None = None
    """The environment marker guarding the edge; None means always."""
    version: str | None = None
    """Written only when several locked packages share the name (forked resolutions)."""
    source: Source | None = None
    """Written only when several locked packages share the name and version."""

    def __str__(self) -> str:
        text = self.name + (f"[{','.join(self.extras)}]" if self.extras else "")
        if self.version:
            text += f"=={self.version}"
        if self.marker is not None:
            text += f" ; {self.marker}"
        return text


@dataclass(frozen=True)
class Package:
    """One ``[[package]]`` entry of the lock."""

    name: NormalizedName
    version: str | None
    """None for a workspace member with a dynamic version."""
    source: Source
    dependencies: tuple[Dependency, ...] = ()
    optional_dependencies: Mapping[str, tuple[Dependency, ...]] = field(default_factory=dict)
    """The dependencies each extra adds, by extra name."""
    dependency_groups: Mapping[str, tuple[Dependency, ...]] = field(default_factory=dict)
    """The dependencies of each dependency group (``dev`` and others), by group name."""
    sdist: Artifact | None = None
    wheels: tuple[Artifact, ...] = ()
    index: int = 0
    """Position in the lock's ``package`` array, to locate problems."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True)
class Lock:
    """A validated uv.lock."""

    path: Path
    text: str
    """The lock's text, to locate later problems by key."""
    revision: int
    requires_python: str | None
    members: tuple[NormalizedName, ...]
    """Workspace members (``[manifest] members``); empty for a single-project lock."""
    packages: tuple[Package, ...]

    def named(self, name: str) -> tuple[Package, ...]:
        """Every locked package called ``name`` (several after a forked resolution)."""
        wanted = canonicalize_name(name)
        return tuple(package for package in self.packages if package.name == wanted)

    def problem(self, key: Sequence[str | int], message: str) -> Problem:
        """A problem located at ``key`` in this lock."""
        return Problem(self.path, _dotted(key), locate(self.text, key), message)


def read_lock(path: Path) -> Lock:
    """Read and validate ``path`` (a uv.lock)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockFileError(
            [Problem(path, "", None, "file not found")],
            hint="create it with `uv lock` in the project directory and commit it",
        ) from None
    except OSError as error:
        raise LockFileError([Problem(path, "", None, f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise LockFileError([Problem(path, "", None, f"not UTF-8 text: {error.reason}")]) from None
    return parse_lock(text, path)


def parse_lock(text: str, path: Path) -> Lock:
    """Validate the text of a uv.lock read from ``path``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        line = None
        if " (at line " in message:
            message, _, where = message.partition(" (at line ")
            line = int(where.split(",")[0])
        raise LockFileError(
            [Problem(path, "", line, f"not valid TOML: {message}")],
            hint="regenerate it with `uv lock`",
        ) from None
    reader = _LockReader(path, text)
    lock = reader.lock(data)
    if reader.problems:
        raise LockFileError(
            reader.problems,
            hint="uv.lock is written by uv; regenerate it with `uv lock` rather than editing it",
        )
    return lock


def _dotted(key: Sequence[str | int]) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _kind(value: object) -> str:
    names = {
        str: "a string",
        int: "an integer",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
        float: "a float",
    }
    return names.get(type(value), type(value).__name__)


Key = tuple[str | int, ...]


class _LockReader:
    """Walks the parsed lock, building records and collecting located problems."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.problems: list[Problem] = []

    def problem(self, key: Key, message: str) -> None:
        self.problems.append(Problem(self.path, _dotted(key), locate(self.text, key), message))

    def lock(self, data: dict[str, Any]) -> Lock:
        version = data.get("version")
        if version != SUPPORTED_VERSION:
            self.problem(
                ("version",),
                f"lock version {version!r} is not supported (lockbox reads version "
                f"{SUPPORTED_VERSION}); re-lock with a uv release that writes it",
            )
        revision = data.get("revision", 0)
        if not isinstance(revision, int):
            self.problem(("revision",), f"expected an integer, got {_kind(revision)}")
            revision = 0
        requires_python = data.get("requires-python")
        if requires_python is not None and not isinstance(requires_python, str):
            self.problem(("requires-python",), f"expected a string, got {_kind(requires_python)}")
            requires_python = None

        members: list[NormalizedName] = []
        manifest = data.get("manifest", {})
        if isinstance(manifest, dict):
            raw_members = manifest.get("members", [])
            if isinstance(raw_members, list) and all(isinstance(m, str) for m in raw_members):
                members = [canonicalize_name(m) for m in raw_members]
            else:
                self.problem(("manifest", "members"), "expected an array of package names")
        else:
            self.problem(("manifest",), f"expected a table, got {_kind(manifest)}")

        raw_packages = data.get("package", [])
        if not isinstance(raw_packages, list):
            self.problem(("package",), f"expected an array of tables, got {_kind(raw_packages)}")
            raw_packages = []
        packages = [
            package
            for index, raw in enumerate(raw_packages)
            if (package := self.package(raw, index)) is not None
        ]
        self.check_unique(packages)
        self.check_members(packages, members)
        if not self.problems:
            self.check_edges(packages)
        return Lock(
            path=self.path,
            text=self.text,
            revision=revision,
            requires_python=requires_python,
            members=tuple(members),
            packages=tuple(packages),
        )

    def package(self, raw: object, index: int) -> Package | None:
        key: Key = ("package", index)
        if not isinstance(raw, dict):
            self.problem(key, f"expected a table, got {_kind(raw)}")
            return None
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            self.problem(key + ("name",), "every package needs a name")
            return None
        version = raw.get("version")
        if version is not None and not isinstance(version, str):
            self.problem(key + ("version",), f"expected a string, got {_kind(version)}")
            version = None
        source = self.source(raw.get("source"), key + ("source",))
        if source is None:
            return None
        if version is None and source.kind not in ("editable", "virtual", "directory", "path"):
            self.problem(key + ("version",), f"{name} from {source.kind} has no version")

        dependencies = self.dependencies(raw.get("dependencies", []), key + ("dependencies",))
        optional = self.dependency_table(
            raw.get("optional-dependencies", {}), key + ("optional-dependencies",)
        )
        groups = self.dependency_table(raw.get("dev-dependencies", {}), key + ("dev-dependencies",))

        sdist = None
        if "sdist" in raw:
            sdist = self.artifact(raw["sdist"], key + ("sdist",), wheel=False)
        wheels: list[Artifact] = []
        raw_wheels = raw.get("wheels", [])
        if isinstance(raw_wheels, list):
            for position, raw_wheel in enumerate(raw_wheels):
                wheel = self.artifact(raw_wheel, key + ("wheels", position), wheel=True)
                if wheel is not None:
                    wheels.append(wheel)
        else:
            self.problem(key + ("wheels",), f"expected an array of tables, got {_kind(raw_wheels)}")
        if source.kind == "registry" and sdist is None and not wheels:
            self.problem(key, f"{name} {version} from a registry has neither an sdist nor wheels")

        return Package(
            name=canonicalize_name(name),
            version=version,
            source=source,
            dependencies=dependencies,
            optional_dependencies=optional,
            dependency_groups=groups,
            sdist=sdist,
            wheels=tuple(wheels),
            index=index,
        )

    def source(self, raw: object, key: Key) -> Source | None:
        if not isinstance(raw, dict):
            self.problem(
                key, f'expected a source table such as {{ registry = "…" }}, got {_kind(raw)}'
            )
            return None
        kinds = [kind for kind in SOURCE_KINDS if kind in raw]
        if len(kinds) != 1:
            found = ", ".join(sorted(raw)) or "nothing"
            self.problem(key, f"expected exactly one of {', '.join(SOURCE_KINDS)}; found {found}")
            return None
        kind = kinds[0]
        location = raw[kind]
        if not isinstance(location, str) or not location:
            self.problem(key + (kind,), f"expected a non-empty string, got {_kind(location)}")
            return None
        subdirectory = raw.get("subdirectory")
        if kind != "git":
            return Source(kind, location, subdirectory=subdirectory)
        return self.git_source(location, key + (kind,))

    def git_source(self, text: str, key: Key) -> Source | None:
        # uv writes `https://host/repo?rev=REF&subdirectory=DIR#FULL_COMMIT`.
        parts = urlsplit(text)
        commit = parts.fragment
        if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
            self.problem(key, f"git source {text!r} does not end in #<40-hex-digit commit>")
            return None
        query = parse_qs(parts.query)
        reference = next((query[k][0] for k in ("rev", "tag", "branch") if k in query), None)
        subdirectory = query.get("subdirectory", [None])[0]
        location = parts._replace(query="", fragment="").geturl()
        return Source("git", location, subdirectory, reference, commit)

    def artifact(self, raw: object, key: Key, *, wheel: bool) -> Artifact | None:
        if not isinstance(raw, dict):
            self.problem(key, f"expected a table, got {_kind(raw)}")
            return None
        url, path, filename = raw.get("url"), raw.get("path"), raw.get("filename")
        if isinstance(url, str):
            filename = unquote(PurePosixPath(urlsplit(url).path).name)
        elif isinstance(path, str):
            filename = PurePosixPath(path).name
        elif not isinstance(filename, str):
            self.problem(key, "expected a url, path or filename")
            return None
        if wheel:
            try:
                parse_wheel_filename(filename)
            except InvalidWheelFilename as error:
                self.problem(key, f"{filename!r} is not a valid wheel file name: {error}")
                return None
        sha256 = None
        raw_hash = raw.get("hash")
        if raw_hash is not None:
            if not isinstance(raw_hash, str) or not raw_hash.startswith("sha256:"):
                self.problem(
                    key + ("hash",),
                    f"expected sha256:<hex>, got {raw_hash!r}; lockbox pins artifacts by SHA-256",
                )
            else:
                try:
                    sha256 = Sha256(bytes.fromhex(raw_hash.removeprefix("sha256:")))
                except ValueError:
                    self.problem(key + ("hash",), f"{raw_hash!r} is not a SHA-256 in hex")
        size = raw.get("size")
        return Artifact(
            filename=filename,
            url=url if isinstance(url, str) else None,
            path=path if isinstance(path, str) else None,
            sha256=sha256,
            size=size if isinstance(size, int) else None,
        )

    def dependency_table(self, raw: object, key: Key) -> dict[str, tuple[Dependency, ...]]:
        if not isinstance(raw, dict):
            self.problem(key, f"expected a table, got {_kind(raw)}")
            return {}
        return {name: self.dependencies(value, key + (name,)) for name, value in raw.items()}

    def dependencies(self, raw: object, key: Key) -> tuple[Dependency, ...]:
        if not isinstance(raw, list):
            self.problem(key, f"expected an array of tables, got {_kind(raw)}")
            return ()
        result = []
        for position, item in enumerate(raw):
            dependency = self.dependency(item, key + (position,))
            if dependency is not None:
                result.append(dependency)
        return tuple(result)

    def dependency(self, raw: object, key: Key) -> Dependency | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            self.problem(key, 'expected a table with a name, like { name = "…" }')
            return None
        name = raw["name"]
        extras = raw.get("extra", [])
        if not isinstance(extras, list) or not all(isinstance(e, str) for e in extras):
            self.problem(key + ("extra",), "expected an array of extra names")
            extras = []
        marker = None
        if "marker" in raw:
            try:
                marker = Marker(raw["marker"])
            except (InvalidMarker, TypeError) as error:
                self.problem(key + ("marker",), f"not a valid environment marker: {error}")
                return None
        version = raw.get("version")
        source = self.source(raw["source"], key + ("source",)) if "source" in raw else None
        return Dependency(
            name=canonicalize_name(name),
            extras=tuple(str(canonicalize_name(e)) for e in extras),
            marker=marker,
            version=version if isinstance(version, str) else None,
            source=source,
        )

    def check_unique(self, packages: Sequence[Package]) -> None:
        seen: dict[tuple[str, str | None, Source], Package] = {}
        for package in packages:
            identity = (package.name, package.version, package.source)
            if identity in seen:
                self.problem(
                    ("package", package.index),
                    f"{package.label} from {package.source} is locked twice "
                    f"(also package[{seen[identity].index}])",
                )
            seen[identity] = package

    def check_members(self, packages: Sequence[Package], members: Sequence[str]) -> None:
        local = {p.name for p in packages if p.source.kind in ("editable", "virtual", "directory")}
        for position, member in enumerate(members):
            if member not in local:
                self.problem(
                    ("manifest", "members", position),
                    f"workspace member {member!r} has no editable or virtual package entry",
                )

    def check_edges(self, packages: Sequence[Package]) -> None:
        """Every dependency edge must name exactly one locked package.

        An extra the target does not list is not checked: uv drops extras that add nothing."""
        by_name: dict[str, list[Package]] = {}
        for package in packages:
            by_name.setdefault(package.name, []).append(package)
        for package in packages:
            key: Key = ("package", package.index)
            edges: list[tuple[Key, Dependency]] = [
                (key + ("dependencies", i), d) for i, d in enumerate(package.dependencies)
            ]
            for table, groups in (
                ("optional-dependencies", package.optional_dependencies),
                ("dev-dependencies", package.dependency_groups),
            ):
                for group, deps in groups.items():
                    edges += [(key + (table, group, i), d) for i, d in enumerate(deps)]
            for edge_key, dependency in edges:
                candidates = resolve_candidates(by_name.get(dependency.name, []), dependency)
                if not candidates:
                    self.problem(
                        edge_key,
                        f"{package.label} depends on {dependency.name}"
                        f"{' ' + dependency.version if dependency.version else ''}, "
                        "which the lock does not contain",
                    )
                    continue
                if len(candidates) > 1:
                    self.problem(
                        edge_key,
                        f"{package.label} depends on {dependency.name}, which is locked "
                        f"{len(candidates)} times, without a version or source to choose one",
                    )
                    continue


def resolve_candidates(candidates: Sequence[Package], dependency: Dependency) -> list[Package]:
    """The locked packages a dependency edge can mean, narrowed by its version and source."""
    found = list(candidates)
    if dependency.version is not None:
        found = [p for p in found if p.version == dependency.version]
    if dependency.source is not None:
        found = [p for p in found if p.source == dependency.source]
    return found
