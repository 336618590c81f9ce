"""The build plan: which locked packages a build installs, and in which form.

Starting from the project's own package, the plan follows the lock's dependency edges for
the recipe's extras and dependency groups, evaluating every marker for the build's
interpreter, and leaves out the packages the recipe excludes. Each package it reaches is
then classified: a wheel (the one whose tags suit the interpreter best), an sdist to build
(because ``[tool.uv] no-binary-package`` says so or no wheel fits), a git, URL or local
source to build, or a workspace member. Every problem is collected and raised once as a
:class:`~lockbox.errors.PlanError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from packaging.utils import NormalizedName, canonicalize_name

from lockbox.errors import PlanError
from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.lock import (
    Artifact,
    Dependency,
    Lock,
    Package,
    SourceKind,
    resolve_candidates,
)
from lockbox.inputs.project import Project

Form = Literal["wheel", "sdist", "git", "url", "path", "directory", "member"]
FORMS: tuple[Form, ...] = ("wheel", "sdist", "git", "url", "path", "directory", "member")
"""Every form, in the order a plan lists them."""
_SOURCE_FORMS: Mapping[SourceKind, Form] = {
    "editable": "member",
    "virtual": "member",
    "directory": "directory",
    "git": "git",
    "registry": "sdist",
    "url": "url",
    "path": "path",
}
"""The form a package takes by where uv.lock says it comes from, unless a wheel of it fits."""

PackageId = tuple[str, str | None, str]


def _identity(package: Package) -> PackageId:
    return (package.name, package.version, str(package.source))


@dataclass(frozen=True)
class Planned:
    """A package the build installs."""

    package: Package
    form: Form
    """How it arrives: a ``wheel`` as is; ``sdist``, ``git``, ``url``, ``path`` and
    ``directory`` sources built into a wheel first; a workspace ``member`` built from the
    workspace. A ``url`` or ``path`` source that is itself a wheel is a ``wheel``."""
    artifact: Artifact | None
    """The wheel or sdist file used, when the source has files."""
    reason: str = ""
    """Why a registry package is built from source."""
    extras: tuple[str, ...] = ()
    """Extras of the package that are active."""

    @property
    def built(self) -> bool:
        """Whether the deps phase runs a build backend for this package."""
        return self.form != "wheel"


@dataclass(frozen=True)
class Skipped:
    """A locked package the build leaves out, and why."""

    package: Package
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a build of the project installs, for one interpreter."""

    project: Project
    lock: Lock
    interpreter: Interpreter
    installed: tuple[Planned, ...]
    """Sorted by name, then version."""
    skipped: tuple[Skipped, ...]
    """Locked packages not installed, sorted by name."""
    warnings: tuple[str, ...] = ()

    def by_form(self, form: Form) -> tuple[Planned, ...]:
        return tuple(planned for planned in self.installed if planned.form == form)

    def from_source(self) -> list[str]:
        """The names of the third-party packages built from sdists (or trees), sorted."""
        return sorted({p.package.name for p in self.installed if p.built and p.form != "member"})


def make_plan(project: Project, lock: Lock, interpreter: Interpreter) -> Plan:
    """Plan the build of ``project`` from ``lock`` for ``interpreter``."""
    root = _root_package(project, lock)
    deps = project.recipe.deps
    problems = [
        f"recipe deps.extras names {extra!r}, but {root.name} has no such extra in "
        f"uv.lock (extras: {', '.join(sorted(root.optional_dependencies)) or 'none'})"
        for extra in deps.extras
        if canonicalize_name(extra) not in root.optional_dependencies
    ]
    problems += [
        f"recipe deps.groups names {group!r}, but {root.name} has no such dependency "
        f"group in uv.lock (groups: {', '.join(sorted(root.dependency_groups)) or 'none'})"
        for group in deps.groups
        if canonicalize_name(group) not in root.dependency_groups
    ]
    locked_names = {package.name for package in lock.packages}
    exclude = {canonicalize_name(name) for name in deps.exclude}
    problems += [
        f"recipe deps.exclude names {name!r}, which uv.lock does not contain"
        for name in sorted(exclude - locked_names)
    ]
    warnings = [
        f"[tool.uv] names {listed!r}, which uv.lock does not contain"
        for listed in sorted(
            (project.uv.no_binary_packages | project.uv.no_build_packages) - locked_names
        )
    ]
    if problems:
        raise PlanError(problems)

    walk = _Walk(lock, interpreter, exclude)
    walk.visit(
        root,
        tuple(canonicalize_name(e) for e in deps.extras),
        groups=tuple(canonicalize_name(g) for g in deps.groups),
    )
    installed = []
    for identity, package in walk.reached.items():
        planned = _classify(
            package, tuple(sorted(walk.extras[identity])), project, interpreter, problems
        )
        if planned is not None:
            installed.append(planned)
    if problems:
        raise PlanError(problems)
    installed.sort(key=lambda p: (p.package.name, p.package.version or ""))
    skipped = _skipped(lock, interpreter, root, walk)
    return Plan(project, lock, interpreter, tuple(installed), skipped, tuple(warnings))


def _root_package(project: Project, lock: Lock) -> Package:
    candidates = [p for p in lock.named(project.name) if p.source.is_local]
    if not candidates:
        raise PlanError(
            [
                f"{lock.path} has no entry for the project {project.name!r}; it was made for "
                f"another project or is stale. Run `uv lock` in {project.root}"
            ]
        )
    return candidates[0]


class _Walk:
    """A walk over the dependency edges from one root, evaluating markers (or not)."""

    def __init__(
        self, lock: Lock, interpreter: Interpreter | None, exclude: Iterable[str] = ()
    ) -> None:
        self.interpreter = interpreter
        self.exclude = set(exclude)
        self.by_name: dict[str, list[Package]] = {}
        for package in lock.packages:
            self.by_name.setdefault(package.name, []).append(package)
        self.reached: dict[PackageId, Package] = {}
        self.extras: dict[PackageId, set[str]] = {}
        self.excluded: set[NormalizedName] = set()
        self.blocked: dict[NormalizedName, Dependency] = {}
        """Packages an edge led to whose marker is false here: the last such edge."""

    def visit(
        self, package: Package, extras: tuple[str, ...], groups: tuple[str, ...] = ()
    ) -> None:
        stack: list[tuple[Package, str | None]] = [(package, None)]
        stack += [(package, extra) for extra in extras]
        group_edges = [
            edge for group in groups for edge in package.dependency_groups.get(group, ())
        ]
        while stack:
            current, extra = stack.pop()
            identity = _identity(current)
            active = self.extras.setdefault(identity, set())
            if extra is None:
                if identity in self.reached:
                    continue
                self.reached[identity] = current
                edges: Iterable[Dependency] = current.dependencies
                if current is package:
                    edges = [*edges, *group_edges]
            else:
                if extra in active:
                    continue
                active.add(extra)
                edges = current.optional_dependencies.get(extra, ())
            for edge in edges:
                if (
                    self.interpreter is not None
                    and edge.marker is not None
                    and not self.interpreter.evaluate(edge.marker, extra or "")
                ):
                    self.blocked[edge.name] = edge
                    continue
                if edge.name in self.exclude:
                    self.excluded.add(edge.name)
                    continue
                target = resolve_candidates(self.by_name.get(edge.name, []), edge)[0]
                stack.append((target, None))
                stack += [(target, name) for name in edge.extras]


def _classify(
    package: Package,
    extras: tuple[str, ...],
    project: Project,
    interpreter: Interpreter,
    problems: list[str],
) -> Planned | None:
    form = _SOURCE_FORMS[package.source.kind]
    if form in ("member", "directory", "git"):
        return Planned(package, form, None, extras=extras)

    no_binary = project.uv.no_binary or package.name in project.uv.no_binary_packages
    no_build = project.uv.no_build or package.name in project.uv.no_build_packages
    wheel = None if no_binary else best_wheel(package.wheels, interpreter)
    if wheel is not None:
        return Planned(package, "wheel", wheel, extras=extras)

    if no_binary:
        setting = "no-binary" if project.uv.no_binary else "no-binary-package"
        reason = f"[tool.uv] {setting}"
    elif package.wheels:
        reason = f"none of its {len(package.wheels)} wheels fits {interpreter.abi} on this platform"
    else:
        reason = "it publishes no wheels"
    if package.sdist is None:
        if no_binary:
            problems.append(
                f"{package.label}: {reason} asks for a build from source, but "
                "uv.lock has no sdist for it; drop it from that setting"
            )
        else:
            problems.append(
                f"{package.label}: {reason}, and uv.lock has no sdist to build; "
                f"lock for an interpreter it supports or exclude it"
            )
        return None
    if no_build:
        problems.append(
            f"{package.label}: {reason}, but [tool.uv] no-build forbids building it from source"
        )
        return None
    return Planned(package, form, package.sdist, reason if form == "sdist" else "", extras)


def best_wheel(wheels: Iterable[Artifact], interpreter: Interpreter) -> Artifact | None:
    """The wheel whose best tag ranks highest for ``interpreter``, if any fits."""
    rank = interpreter.tag_ranks
    best: tuple[int, Artifact] | None = None
    for wheel in wheels:
        fits = [rank[tag] for tag in wheel.wheel_tags if tag in rank]
        if fits and (best is None or min(fits) < best[0]):
            best = (min(fits), wheel)
    return best[1] if best else None


def _skipped(
    lock: Lock, interpreter: Interpreter, root: Package, walk: _Walk
) -> tuple[Skipped, ...]:
    """Why each locked package not installed is left out: excluded by the recipe, needed
    only by extras or dependency groups not asked for, not for this platform, or needed
    only by other workspace members."""
    optional: dict[str, _Walk] = {}
    for group in root.dependency_groups:
        optional[f"dependency group {group!r}"] = _Walk(lock, interpreter, walk.exclude)
        optional[f"dependency group {group!r}"].visit(root, (), groups=(group,))
    for extra in root.optional_dependencies:
        optional[f"extra {extra!r}"] = _Walk(lock, interpreter, walk.exclude)
        optional[f"extra {extra!r}"].visit(root, (extra,))
    anywhere = _Walk(lock, None)
    anywhere.visit(root, tuple(root.optional_dependencies), tuple(root.dependency_groups))
    blocked = {**anywhere.blocked, **walk.blocked}
    for other in optional.values():
        blocked.update(other.blocked)

    result = []
    for package in lock.packages:
        identity = _identity(package)
        if identity in walk.reached:
            continue
        wanted_by = [label for label, other in optional.items() if identity in other.reached]
        if package.name in walk.excluded:
            reason = "excluded by the recipe (deps.exclude)"
        elif wanted_by:
            reason = "only in " + " and ".join(wanted_by)
        elif identity in anywhere.reached:
            edge = blocked.get(package.name)
            reason = (
                f"not for this platform ({edge.marker})"
                if edge is not None
                else "needed only by packages that are not for this platform"
            )
        elif package.name in lock.members:
            reason = "workspace member the project does not depend on"
        else:
            reason = "not needed by the project (only by other workspace members)"
        result.append(Skipped(package, reason))
    return tuple(sorted(result, key=lambda s: (s.package.name, s.package.version or "")))


def plan_summary(plan: Plan) -> Mapping[str, object]:
    """The plan as plain data, for ``lockbox plan --json``."""

    def entry(planned: Planned) -> dict[str, object]:
        artifact = planned.artifact
        return {
            "name": planned.package.name,
            "version": planned.package.version,
            "form": planned.form,
            "source": str(planned.package.source),
            "file": artifact.filename if artifact else None,
            "sha256": artifact.sha256.sri if artifact and artifact.sha256 else None,
            "reason": planned.reason or None,
            "extras": list(planned.extras),
        }

    return {
        "project": plan.project.name,
        "interpreter": {
            "path": str(plan.interpreter.executable),
            "version": str(plan.interpreter.version),
            "abi": plan.interpreter.abi,
        },
        "locked": len(plan.lock.packages),
        "installed": [entry(planned) for planned in plan.installed],
        "skipped": [
            {"name": s.package.name, "version": s.package.version, "reason": s.reason}
            for s in plan.skipped
        ],
        "warnings": list(plan.warnings),
    }
