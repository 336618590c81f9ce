"""The dependency phase: uv.lock in, one content-pinned dependency layer out.

This is the only phase allowed on the network, and only its fetch step uses it, running no
third-party code (:mod:`lockbox.deps.fetch`); the builds run offline. It installs the locked
third-party packages with uv (no workspace member: those are the application, assembled later), normalises and
scrubs the environment into a layer (:mod:`lockbox.deps.layer`), and checks the layer's NAR hash
against the one the recipe declares (``deps.hash``). The declared hash pins every byte: a
layer that hashes differently is kept aside for ``lockbox diff`` and never registered, and
when a layer with the declared hash is already in the store nothing runs at all.

Steps, in order: look up → plan (:mod:`lockbox.inputs.plan`) → fetch the locked files, the
build pins and the extra sources (:mod:`lockbox.deps.fetch`) → build and install, offline
(:mod:`lockbox.deps.install`) →
normalise and scrub (:mod:`lockbox.deps.layer`) → hash → compare with the declared hash → register.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lockbox import fs
from lockbox.errors import HashMismatch
from lockbox.hashes import Sha256
from lockbox.inputs.project import Project
from lockbox.progress import Progress, silent
from lockbox.store.store import Entry, Store

if TYPE_CHECKING:
    from lockbox.deps.buildroot import RootPins
    from lockbox.deps.install import Installed
    from lockbox.deps.layer import LayerReport
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.interpreters import Interpreter
    from lockbox.inputs.plan import Plan
    from lockbox.tools.toolbox import Toolbox


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
    record: Mapping[str, Any] | None = None
    """What the layer was built from (:mod:`lockbox.deps.inputs`)."""

    @property
    def hash(self) -> Sha256:
        return self.entry.nar_hash


def layer_name(project: Project) -> str:
    return f"{project.app_name}-deps"


def lock_digest(project: Project) -> Sha256:
    return Sha256(hashlib.sha256(project.lock_path.read_bytes()).digest())


def build_deps(
    inputs: BuildInputs,
    store: Store,
    tools: Toolbox,
    progress: Progress = silent,
    *,
    root: RootPins | None = None,
) -> DepsResult:
    """Make (or find) the dependency layer of ``inputs.project`` in ``store``.

    A lookup reads neither uv.lock nor the interpreter, and finds no tool. ``root`` is the
    build root to compile in instead of the one ``lockbox.inputs.toml`` pins (while
    re-pinning it)."""
    from lockbox.deps.buildroot import pinned_root
    from lockbox.deps.inputs import deps_inputs

    project = inputs.project
    if root is None:
        root = pinned_root(project)
    recorded_inputs = deps_inputs(project, inputs.environment, root)
    found, earlier = _look_up(project, store, recorded_inputs, root, progress)
    if found is not None:
        return found
    return _build(inputs, store, tools, progress, root, recorded_inputs, earlier)


def _look_up(
    project: Project,
    store: Store,
    recorded_inputs: Mapping[str, object],
    root: RootPins | None,
    progress: Progress,
) -> tuple[DepsResult | None, Mapping[str, Any] | None]:
    """The declared layer, if the store has it built from these inputs; else None and the
    record of what the declared hash was built from, if there is one (having said what
    visibly moved since)."""
    from lockbox.deps.inputs import inputs_key

    declared = project.recipe.deps.hash
    if declared is None:
        return None, None
    name = layer_name(project)
    # The declared hash names the content, but a stored layer answers it only if it was
    # built from these inputs with the toolchain this machine has now.
    existing = store.find_content("deps", name, declared)
    if existing is not None:
        answer = stored_answer(store, existing, inputs_key(recorded_inputs))
        if answer is not None:
            progress.info(f"dependency layer {declared} is in the store: {existing.path}")
            return DepsResult(existing, None, reused=True, layer=None, record=answer), None
        progress.info(
            f"the store's layer {declared} was built from other inputs or "
            "another toolchain: building again to compare"
        )
    earlier = _declared_record(project, store, existing)
    if earlier is not None:
        moved = _moved_before_building(earlier, recorded_inputs, root)
        if moved:
            progress.warning(
                "inputs moved since deps.hash was declared:\n"
                + "\n".join(f"  {line}" for line in moved)
            )
    return None, earlier


def _build(
    inputs: BuildInputs,
    store: Store,
    tools: Toolbox,
    progress: Progress,
    root: RootPins | None,
    recorded_inputs: Mapping[str, object],
    earlier: Mapping[str, Any] | None,
) -> DepsResult:
    """Build the dependency layer: fetch, install offline, normalise, hash, register."""
    # What building takes is imported only now: a lookup must start as fast as a no-op
    # `uv sync`.
    from lockbox import __version__
    from lockbox.deps.buildpins import check_pinned
    from lockbox.deps.inputs import build_set, drift, inputs_key, make_record
    from lockbox.deps.install import build_roots, install, uv_cache_dir
    from lockbox.deps.layer import normalise
    from lockbox.scrub import Scrubber
    from lockbox.store.nar import nar_hash

    project, interpreter, plan = inputs.project, inputs.interpreter, inputs.plan
    name = layer_name(project)
    declared = project.recipe.deps.hash
    key = inputs_key(recorded_inputs)
    from_source = plan.from_source()
    pinned = check_pinned(project, from_source, progress)
    system = None
    if root is not None:
        from lockbox.deps.buildroot import ensure_root

        system = ensure_root(store, root, tools, progress, project_dir=project.root)
    built = len(from_source)
    progress.info(
        f"installing {len(plan.installed) - len(plan.by_form('member'))} packages "
        f"({built} from source) with uv {tools.uv.version} for {interpreter.label}"
    )
    uv_cache_dir(store, tools.uv_cache).mkdir(parents=True, exist_ok=True)
    with store.staging() as stage:
        # The stage is inside the store's working directory, which the sandbox mounts at
        # BUILD_ROOT: the environment is built where the layer will be registered from.
        work = stage / "work"
        work.mkdir()
        installed = install(
            project,
            plan,
            interpreter,
            store,
            work,
            tools,
            progress,
            require_build_hashes=pinned,
            system=system,
        )
        roots_list = build_roots(project, interpreter, store, tools.uv_cache)
        used = _toolchain_used(root, installed, roots_list, interpreter, progress, built=built)
        record = make_record(
            recorded_inputs,
            interpreter=str(interpreter.version),
            uv=str(tools.uv.version),
            lockbox=__version__,
            packages=_installed_versions(project, plan),
            build=build_set(project),
            toolchain=used,
            environment=installed.environment,
        )
        scrubber = Scrubber(roots_list)
        roots = hashlib.sha256("\n".join(r.decode() for r in scrubber.roots).encode()).hexdigest()
        content = stage / "content"
        progress.info("normalising and scrubbing the layer")
        report = normalise(
            work / "venv", content, scrubber, progress, known=store.scanned_files(roots)
        )
        _report_scrub(report, progress)
        progress.info("hashing the layer")
        nar = nar_hash(content)
        if declared is not None and nar.sha256 != declared:
            kept = store.keep_aside(content, name, nar.sha256)
            raise HashMismatch(
                f"the dependency layer of {project.app_name}",
                declared.sri,
                nar.sha256.sri,
                kept,
                _explain(earlier, record, drift),
            )
        entry = store.register(
            content,
            name=name,
            kind="deps",
            nar=nar,
            # Built with it: the build root lives as long as the layer.
            references=[system.path_name] if system else [],
            metadata=_metadata(project, plan, interpreter, tools, report, record),
        )
        store.remember_answer(entry, key, {"toolchain": used})
        store.remember_scanned(roots, report.clean_links)  # sealed now, mtime 1
    if declared is None:
        progress.warning(
            f"the recipe declares no deps.hash; this build gave {entry.nar_hash}. "
            f'Pin it with `lockbox lock-hash`, or add to [deps]: hash = "{entry.nar_hash}"'
        )
    return DepsResult(entry, plan, reused=False, layer=report, record=record)


def _toolchain_used(
    root: RootPins | None,
    installed: Installed,
    skip: Sequence[str],
    interpreter: Interpreter,
    progress: Progress,
    *,
    built: int,
) -> Mapping[str, Any]:
    """The layer record's ``toolchain``: the build root's packages; else, when something
    was compiled, the compilers and the host files the compiles read (``skip``: the build's
    own paths)."""
    if root is not None:
        return root.record()
    if not built:
        return {"compilers": {}, "packages": {}, "files": {}}
    from lockbox.deps import toolchain

    progress.info("recording the toolchain the builds read")
    return toolchain.record(
        toolchain.trace_files(installed.traces)
        | toolchain.tool_files(installed.compilers.values()),
        skip=[*skip, str(interpreter.prefix), str(interpreter.prefix.resolve())],
        compilers=installed.compilers,
    )


def stored_answer(store: Store, entry: Entry, key: str) -> Mapping[str, Any] | None:
    """The record of a build of ``entry`` from the inputs ``key`` whose toolchain this
    machine still has, if any."""
    from lockbox.deps import toolchain
    from lockbox.deps.inputs import summary

    recorded = store.answers(entry).get(key)
    if recorded is None:
        return None
    used = cast("Mapping[str, Any]", recorded.get("toolchain", {}))
    # A build root is content-addressed and part of ``key``: nothing of the host to check.
    if not used.get("root") and summary({"toolchain": toolchain.current(used)}) != summary(
        {"toolchain": used}
    ):
        return None
    record = cast("Mapping[str, Any]", entry.inputs.get("record", {}))
    return {**record, "toolchain": used}


def _declared_record(
    project: Project, store: Store, existing: Entry | None
) -> Mapping[str, Any] | None:
    """The record of the build that gave the declared hash: the committed file if it is
    about that hash, else what the store kept."""
    from lockbox.deps.inputs import read_committed

    declared = project.recipe.deps.hash
    committed = read_committed(project)
    if committed is not None and declared is not None and committed.get("hash") == declared.sri:
        return committed
    if existing is not None and existing.inputs.get("record"):
        return existing.inputs["record"]  # type: ignore[return-value]
    return None


def _moved_before_building(
    earlier: Mapping[str, Any], inputs: Mapping[str, object], root: RootPins | None
) -> list[str]:
    """What visibly moved before anything is built: the inputs, and the recorded toolchain
    packages' versions on this machine (or in the build root)."""
    from lockbox.deps.toolchain import installed_versions

    before = earlier.get("inputs", {})
    lines = [
        "uv.lock changed" if key == "lock" else f"{key} changed"
        for key in sorted(set(before) | set(inputs))
        if before.get(key) != inputs.get(key)
    ]
    versions = root.versions() if root is not None else installed_versions()
    for package, state in sorted(earlier.get("toolchain", {}).get("packages", {}).items()):
        now = versions.get(package, "(not installed)")
        if now != state.get("version"):
            lines.append(f"{package} {state.get('version')} → {now}")
    return lines


def _explain(
    earlier: Mapping[str, Any] | None,
    record: Mapping[str, Any],
    drift: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
) -> str:
    if earlier is None:
        return (
            "no record of what the declared hash was built from (commit the "
            "lockbox.inputs.toml `lockbox lock-hash` writes beside the recipe); if uv.lock "
            "or the recipe changed on purpose, declare the new hash with `lockbox lock-hash`"
        )
    moved = drift(earlier, record)
    if not moved:
        return (
            "no recorded input changed: the build is not reproducible here. "
            "`lockbox check` rebuilds under varied conditions and shows what differs; "
            "`lockbox diff` compares with the last good layer"
        )
    return (
        "what moved since the declared hash was built:\n"
        + "\n".join(f"  {line}" for line in moved)
        + "\nif the change is intended, declare the new hash with `lockbox lock-hash`; "
        "`lockbox diff` shows what differs from the last good layer"
    )


def _installed_versions(project: Project, plan: Plan) -> dict[str, str]:
    return {
        planned.package.name: planned.package.version or ""
        for planned in plan.installed
        if planned.form != "member" and planned.package.name not in project.recipe.deps.exclude
    }


def _report_scrub(report: LayerReport, progress: Progress) -> None:
    scrub = report.scrub
    for file, paths in sorted(scrub.found.items()):
        for path, count in sorted(paths.items()):
            progress.debug(f"scrubbed {path} ×{count} in {file}")
    if scrub.found:
        progress.info(
            f"scrubbed {scrub.occurrences} references to {len(scrub.paths)} "
            f"build paths in {scrub.files} files"
        )
    else:
        progress.info("no build paths found in the layer")


def _metadata(
    project: Project,
    plan: Plan,
    interpreter: Interpreter,
    tools: Toolbox,
    report: LayerReport,
    record: Mapping[str, Any],
) -> dict[str, object]:
    from lockbox.deps.inputs import summary

    tags = interpreter.tags
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
        "extra-sources": [source.label for source in project.recipe.deps.extra_sources],
        "scrubbed": {"files": report.scrub.files, "occurrences": report.scrub.occurrences},
        "record": summary(record),
    }


def write_declared_hash(project: Project, digest: Sha256) -> Path:
    """Write ``deps.hash`` into the project's recipe, keeping its formatting and comments.
    Returns the file written."""
    recipe_file = project.recipe.source or project.root / "pyproject.toml"
    import tomlkit

    document = tomlkit.parse(recipe_file.read_text(encoding="utf-8"))
    table = document
    if recipe_file.name == "pyproject.toml":
        table = document.setdefault("tool", tomlkit.table())
        table = table.setdefault("lockbox", tomlkit.table())
    deps = table.setdefault("deps", tomlkit.table())
    deps["hash"] = digest.sri
    fs.write_atomically(recipe_file, tomlkit.dumps(document))
    return recipe_file
