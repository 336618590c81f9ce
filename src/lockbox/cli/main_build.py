"""``lockbox build``, ``run``, ``export`` and ``lock-hash``: make the dependency layer and the
application, use the application, and pin the layer's hash."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.cli.context import Context, add_project_argument
from lockbox.cli.shortcut import run_in_app

if TYPE_CHECKING:
    from lockbox.assemble.app import AppResult
    from lockbox.deps.install import Tools
    from lockbox.deps.phase import DepsResult
    from lockbox.inputs.project import Project
    from lockbox.store.store import Entry, Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = subparsers.add_parser(
        "build",
        help="build a project: its dependency layer, then the application",
        description=(
            "Build PROJECT. The dependency phase, the only one on the network, installs "
            "what uv.lock pins with uv (workspace members excluded), normalises and scrubs "
            "the result into a layer and checks its NAR hash against deps.hash in the "
            "recipe; if that layer is already in the store, nothing runs. The assembly "
            "phase then makes the application offline from the layer and the project's "
            "source (members, patches, substitutions, bin/), runs the recipe's [verify] "
            "checks in a sandbox without network, and registers it; with unchanged inputs "
            "it is a store lookup. Prints the application's path."
        ),
    )
    add_project_argument(build)
    build.add_argument("--deps-only", action="store_true", help="stop after the dependency phase")
    build.add_argument(
        "--no-bundle",
        action="store_true",
        help="link extension modules to the host's libraries instead of "
        "bundling them (overrides [libraries] bundle)",
    )
    build.set_defaults(handler=run_build)

    run = subparsers.add_parser(
        "run",
        help="run a command with the built application",
        description=(
            "Build PROJECT (a lookup when nothing changed), then run COMMAND in the "
            "application's root directory with its bin/ first on PATH, e.g. "
            "`lockbox run examples/gatekeeper -- python manage.py check`. Exits with "
            "COMMAND's exit code."
        ),
    )
    add_project_argument(run)
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND …")
    run.set_defaults(handler=run_run)

    export = subparsers.add_parser(
        "export",
        help="write the application as a runnable tree outside the store",
        description=(
            "Assemble PROJECT's application for the directory DIR (its @out@ and script "
            "launchers name DIR), verify it there, and put it in place. DIR must not exist, "
            "be empty, or hold an earlier export, which is replaced only when the new one "
            "is verified."
        ),
    )
    add_project_argument(export)
    export.add_argument(
        "--to", required=True, type=Path, metavar="DIR", help="the directory to write"
    )
    export.add_argument(
        "--no-bundle",
        action="store_true",
        help="link to the host's libraries instead of bundling them",
    )
    export.set_defaults(handler=run_export)

    why = subparsers.add_parser(
        "why",
        help="which files of the built application need a shared library",
        description=(
            "Build PROJECT (a lookup when nothing changed) and list, for the application and "
            "its interpreter entry, each chain of ELF files that needs LIB (a soname such as "
            "libssl.so.3), through the libraries bundled with it."
        ),
    )
    add_project_argument(why)
    why.add_argument("library", metavar="LIB", help="the library's soname, e.g. libpq.so.5")
    why.set_defaults(handler=run_why)

    image = subparsers.add_parser(
        "image",
        help="write (and push) an OCI image of the built application",
        description=(
            "Build PROJECT (a lookup when nothing changed) and write an OCI image of its "
            "closure, without Docker: layers for the glibc base, the interpreter, the "
            "dependency layer, the bundled libraries and the application, each a "
            "deterministic tar (same closure, same digests). Configured by the recipe's "
            "[image] table. Give -o FILE (an oci-archive), --layout DIR (an OCI image "
            "layout), --push REF, or several."
        ),
    )
    add_project_argument(image)
    image.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write an OCI archive (skopeo's oci-archive:) to FILE",
    )
    image.add_argument(
        "--layout", type=Path, metavar="DIR", help="write an OCI image layout to DIR"
    )
    image.add_argument(
        "--tag", default="latest", help="the tag inside the layout or archive (default: latest)"
    )
    image.add_argument(
        "--base",
        metavar="IMAGE",
        help="a local OCI layout or archive (PATH or PATH:TAG) whose layers go "
        "under the closure instead of the host's glibc",
    )
    image.add_argument(
        "--no-compress", action="store_true", help="uncompressed layers (larger, faster to write)"
    )
    image.add_argument(
        "--push", metavar="REF", help="push to a registry, e.g. registry.example.com/team/app:1.0"
    )
    image.add_argument(
        "--authfile",
        type=Path,
        metavar="FILE",
        help="docker/podman auth file for --push (default: the usual places)",
    )
    image.add_argument(
        "--no-tls-verify",
        action="store_true",
        help="allow a registry over plain HTTP or with an untrusted certificate",
    )
    image.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up on a registry that has not answered a push, or the "
        "reading back of its manifest, within SECONDS (default: 300)",
    )
    image.set_defaults(handler=run_image)

    lock_hash = subparsers.add_parser(
        "lock-hash",
        help="write the dependency layer's hash into the recipe",
        description=(
            "Set deps.hash in PROJECT's recipe to the hash of its dependency layer (the "
            "last layer, if it was built from the same inputs and toolchain, or a new "
            "build), and write what it was built from to lockbox.inputs.toml beside the "
            "recipe: commit both."
        ),
    )
    add_project_argument(lock_hash)
    lock_hash.set_defaults(handler=run_lock_hash)
    lock_build = subparsers.add_parser(
        "lock-build",
        help="pin the build dependencies of the sdists, with their hashes",
        description=(
            "Build PROJECT's sdists once, unpinned, to find their build dependencies "
            "(nested builds included), pin one version of each with all its artifact "
            "hashes in pyproject.toml's [tool.uv] build-constraint-dependencies and in "
            "uv.lock's manifest (as `uv lock` would, without resolving again), and write "
            "what was built and pinned to lockbox.inputs.toml. Builds then refuse any "
            "build dependency not pinned."
        ),
    )
    lock_toolchain = subparsers.add_parser(
        "lock-toolchain",
        help="pin the build root's Debian packages to what the archive offers now",
        description=(
            "Resolve the build root of PROJECT's [deps.toolchain] (the compiler, libc6-dev, "
            "make, pkg-config, Debian's essential set, the libraries the interpreter loads "
            "and the recipe's packages, with everything they depend on) against the Debian "
            "archive as it is today, make that root, build the dependency layer in it, and "
            "show each package version that moves and the deps.hash it gives; then write "
            "the pins ([build-root] in lockbox.inputs.toml) and the new deps.hash. Nothing "
            "is written before the new layer is built."
        ),
    )
    add_project_argument(lock_toolchain)
    lock_toolchain.add_argument(
        "--dry-run", action="store_true", help="show what would change, write nothing"
    )
    lock_toolchain.set_defaults(handler=run_lock_toolchain)
    add_project_argument(lock_build)
    lock_build.set_defaults(handler=run_lock_build)


def run_build(args: argparse.Namespace, context: Context) -> int:
    from lockbox.inputs.project import load_project

    project = _bundling(load_project(args.project), args)
    with context.open_store() as store:
        deps = _deps(project, store, context)
        if args.deps_only:
            if deps.reused:
                store.check_sealed(deps.entry)
            context.print(f"{deps.entry.path}")
            _remember(context, project, store, deps)
            return 0
        app = _app(project, store, deps.entry, context)
        context.print(f"{app.path}")
        context.info(f"run it: {app.path}/bin/python, or `lockbox run {args.project} -- COMMAND`")
        _remember(context, project, store, deps, app)
    return 0


def run_run(args: argparse.Namespace, context: Context) -> int:
    from lockbox.inputs.project import load_project

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        context.error(
            "no command to run: write it after --, e.g. "
            "`lockbox run PROJECT -- python manage.py check`"
        )
        return 2
    project = load_project(args.project)
    with context.open_store() as store:
        deps = _deps(project, store, context)
        app = _app(project, store, deps.entry, context)
        _remember(context, project, store, deps, app)
    return run_in_app(str(app.path), command)


def run_why(args: argparse.Namespace, context: Context) -> int:
    from lockbox.inputs.project import load_project
    from lockbox.native.resolve import dependents

    project = load_project(args.project)
    with context.open_store() as store:
        deps = _deps(project, store, context).entry
        app = _app(project, store, deps, context)
    found = False
    for label, root in (
        ("application", app.path),
        ("interpreter", (app.path / "python").resolve()),
    ):
        for chain in dependents(root, args.library):
            found = True
            context.print(f"{label}: {' -> '.join(chain)}")
    if not found:
        context.error(f"no file of the application or its interpreter needs {args.library}")
        return 1
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def run_image(args: argparse.Namespace, context: Context) -> int:
    from lockbox.image.base import read_base
    from lockbox.image.oci import make_image
    from lockbox.inputs.project import load_project
    from lockbox.tools.skopeo import REGISTRY_TIMEOUT, Skopeo

    if args.output is None and args.layout is None and args.push is None:
        context.error("say where the image goes: -o FILE, --layout DIR or --push REF")
        return 2
    started = time.time_ns()
    skopeo = Skopeo.find() if args.push else None
    base = read_base(args.base) if args.base else None
    project = load_project(args.project)
    with context.open_store() as store:
        app, referenced = _closure(args, project, store, context, started)
        labels = _image_labels(project)
        common = {
            "compress": not args.no_compress,
            "tag": args.tag,
            "base_image": base,
            "progress": context.progress,
        }
        with store.staging() as scratch:
            layout = args.layout
            if layout is None and args.push is not None:
                layout = scratch / "layout"
            result = make_image(
                app,
                referenced["python"],
                referenced["deps"],
                project.recipe.image,
                labels,
                bytecode=referenced.get("bytecode"),
                libraries=referenced.get("libraries"),
                layout=layout,
                archive=args.output,
                store=store,
                **common,
            )
            if skopeo is not None:
                context.info(f"pushing to {args.push}")
                skopeo.push(
                    layout,
                    args.tag,
                    args.push,
                    result.manifest_digest,
                    authfile=args.authfile,
                    tls_verify=not args.no_tls_verify,
                    timeout=args.timeout or REGISTRY_TIMEOUT,
                    progress=context.progress,
                )
    context.info(f"manifest {result.manifest_digest}")
    for written in (args.output, args.layout):
        if written is not None:
            context.print(str(written.absolute()))
    if args.push:
        context.print(f"{args.push}@{result.manifest_digest}")
    return 0


def _closure(
    args: argparse.Namespace, project: Project, store: Store, context: Context, started: int
) -> tuple[Entry, dict[str, Entry]]:
    """The application's entry and those it references, by kind: its interpreter, its
    dependency layer, that layer's bytecode (if compiled) and its bundled libraries (if
    any). Found from the record of an earlier image's lookup when nothing that lookup read
    has changed (:mod:`lockbox.cli.shortcut`), else looked up (or built) and recorded."""
    from lockbox.cli.shortcut import Request

    request = (
        None
        if context.verbose
        else Request.make(
            "image",
            str(args.project),
            str(store.root),
            dict(os.environ),
            started,
            quiet=context.quiet,
        )
    )
    found = request.lookup() if request is not None else None
    if request is not None and request.distrusted:
        context.warning(request.distrust_notice())
    app = store.get(Path(found[0]).name) if found is not None else None
    if app is None:
        deps = _deps(project, store, context)
        built = _app(project, store, deps.entry, context)
        context.shortcut = request
        _remember(context, project, store, deps, built)
        app = built.entry
    elif request is not None and found is not None:
        request.say(found[1])
    assert app is not None
    return app, {entry.kind: entry for entry in map(store.get, app.references) if entry}


def _image_labels(project: Project) -> dict[str, str]:
    """The OCI annotations lockbox knows: title, version, source, revision."""
    from lockbox.tools.run import run

    labels = {"org.opencontainers.image.title": project.app_name}
    if project.version:
        labels["org.opencontainers.image.version"] = project.version
    urls = project.pyproject.get("project", {}).get("urls", {})
    for key in ("Source", "Repository", "source", "repository", "Homepage", "homepage"):
        if isinstance(urls.get(key), str):
            labels["org.opencontainers.image.source"] = urls[key]
            break
    revision = run(["git", "-C", project.root, "rev-parse", "HEAD"], check=False)
    if revision.returncode == 0 and revision.stdout.strip():
        labels["org.opencontainers.image.revision"] = revision.stdout.strip()
    return labels


def run_export(args: argparse.Namespace, context: Context) -> int:
    from lockbox.assemble.app import export_app
    from lockbox.inputs.interpreters import find_interpreter
    from lockbox.inputs.project import load_project

    project = _bundling(load_project(args.project), args)
    with context.open_store() as store:
        deps = _deps(project, store, context).entry
        interpreter = find_interpreter(
            project.recipe.python, project.requires_python, progress=context.progress
        )
        result = export_app(project, store, deps, interpreter, args.to, context.progress)
    context.print(f"{result.path}")
    return 0


def _deps(project: Project, store: Store, context: Context) -> DepsResult:
    from lockbox.deps.phase import build_deps

    result = build_deps(project, store, lambda: _find_tools(context), context.progress)
    layer = result.layer
    if layer is not None:
        context.info(
            f"dependency layer: {len(layer.distributions)} distributions, {layer.files} files, "
            f"{layer.bytes / 1e6:.1f} MB"
        )
    context.info(f"deps hash: {result.hash}")
    return result


def _app(project: Project, store: Store, deps: Entry, context: Context) -> AppResult:
    from lockbox.assemble.app import build_app
    from lockbox.inputs.interpreters import find_interpreter

    interpreter = find_interpreter(
        project.recipe.python, project.requires_python, progress=context.progress
    )
    result = build_app(project, store, deps, interpreter, context.progress)
    if result.reused and result.entry is not None:
        # What runs: the application (its layer's files are hardlinked into it) and the
        # interpreter its python link names. A new one was made from checked entries.
        store.check_sealed(result.entry, *_interpreters(store, result.entry))
    report = result.report
    if report is not None:
        context.info(
            f"application: {len(report.members)} members, {len(report.patched)} patches, "
            f"{sum(report.substituted.values())} substitutions, {len(report.scripts)} "
            f"scripts, {len(report.verified)} checks passed"
        )
    return result


def _remember(
    context: Context, project: Project, store: Store, deps: DepsResult, app: AppResult | None = None
) -> None:
    """Leave the record that answers the same command next time without reading the
    project (:mod:`lockbox.cli.shortcut`), when this one found everything in the store."""
    from lockbox import identity_paths
    from lockbox.inputs.interpreters import discovery_paths

    request = context.shortcut
    if request is None or context.unusual or not deps.reused:
        return
    from lockbox.deps import toolchain
    from lockbox.deps.inputs import inputs_file

    inputs = [
        *map(str, project.consulted),
        *map(str, identity_paths()),
        str(inputs_file(project)),
        *toolchain.paths((deps.record or {}).get("toolchain", {})),
    ]
    outputs = [str(deps.entry.path)]
    result = deps.entry.path
    used = [deps.entry]
    if app is not None:
        if not app.reused or app.entry is None:
            return
        inputs += [*app.consulted, *map(str, discovery_paths(project.recipe.python, os.environ))]
        outputs += [str(app.path), str(store.root_path(project.app_name))]
        result = app.path
        used = [app.entry, *_interpreters(store, app.entry)]
    sealed = {str(entry.path): store.seal(entry) for entry in used}
    if None in sealed.values():
        return
    request.record(inputs, outputs, context.said, str(result), sealed)  # type: ignore[arg-type]


def _interpreters(store: Store, app: Entry) -> list[Entry]:
    """The interpreter entries the application ``app`` runs (its ``python`` link)."""
    return [
        entry
        for entry in map(store.get, app.references)
        if entry is not None and entry.kind == "python"
    ]


def run_lock_hash(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps.buildroot import pinned_root
    from lockbox.deps.inputs import deps_inputs, inputs_key, write_committed
    from lockbox.deps.phase import build_deps, layer_name, stored_answer, write_declared_hash
    from lockbox.inputs.project import load_project

    project = load_project(args.project)
    with context.open_store() as store:
        # The last layer answers if it was built from these inputs with this toolchain.
        entry = store.latest("deps", layer_name(project))
        key = inputs_key(deps_inputs(project, pinned_root(project)))
        record = stored_answer(store, entry, key) if entry else None
        if entry is None or record is None:
            unpinned = _without_declared_hash(project)
            result = build_deps(unpinned, store, lambda: _find_tools(context), context.progress)
            entry, record = result.entry, result.record
    written = write_committed(project, entry.nar_hash.sri, record or {})
    context.info(f"wrote what the layer was built from to {written}")
    if project.recipe.deps.hash == entry.nar_hash:
        context.info(f"deps.hash is already {entry.nar_hash}")
        return 0
    written = write_declared_hash(project, entry.nar_hash)
    context.info(f'wrote deps.hash = "{entry.nar_hash}" to {written}')
    return 0


def run_lock_toolchain(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps import buildroot
    from lockbox.deps.inputs import inputs_file, read_committed, write_committed
    from lockbox.deps.phase import build_deps, write_declared_hash
    from lockbox.errors import ProjectError
    from lockbox.inputs.interpreters import find_interpreter
    from lockbox.inputs.project import load_project

    project = load_project(args.project)
    wanted = project.recipe.deps.toolchain
    if wanted is None:
        raise ProjectError(
            f"{project.recipe.source or project.root / 'pyproject.toml'} has no "
            '[deps.toolchain]: add one (e.g. packages = ["libpq-dev"]) to build '
            "in a root of pinned Debian packages"
        )
    where = inputs_file(project)
    try:
        old = buildroot.read_pins(read_committed(project), where)
    except buildroot.BuildRootError as error:
        context.warning(f"{error}; pinning anew")
        old = None
    distribution = wanted.distribution or (
        old.distribution if old else buildroot.host_distribution()
    )
    interpreter = find_interpreter(
        project.recipe.python, project.requires_python, progress=context.progress
    )
    new = buildroot.resolve(wanted.packages, distribution, interpreter, context.progress)
    moved = buildroot.changes(old, new)
    context.info(
        f"build root of Debian {distribution}: {len(new.packages)} packages, {len(moved)} changed"
    )
    for line in moved:
        context.info(f"  {line}")
    if old is not None and not moved and old.requested == new.requested and old.hash:
        new = dataclasses.replace(new, hash=old.hash)
    tools = _find_tools(context)
    with context.open_store() as store:
        root = buildroot.ensure_root(
            store, new, tools.sandbox, context.progress, project_dir=project.root
        )
        new = dataclasses.replace(new, hash=root.nar_hash)
        if old is not None and old.hash is not None and old.hash != new.hash:
            context.info(f"build root hash: {old.hash} → {new.hash}")
        result = build_deps(
            _without_declared_hash(project), store, lambda: tools, context.progress, root=new
        )
    declared = project.recipe.deps.hash
    if declared == result.hash:
        context.info(f"deps.hash stays {result.hash}")
    else:
        context.info(f"deps.hash: {declared or '(none)'} → {result.hash}")
    if args.dry_run:
        context.info("--dry-run: nothing written")
        return 0
    written = write_committed(project, result.hash.sri, result.record or {}, root=new)
    context.info(f"wrote the build root's pins and what the layer was built from to {written}")
    if declared != result.hash:
        context.info(
            f'wrote deps.hash = "{result.hash}" to {write_declared_hash(project, result.hash)}'
        )
    return 0


def run_lock_build(args: argparse.Namespace, context: Context) -> int:
    from lockbox.deps.buildpins import lock_build
    from lockbox.inputs.project import load_project

    project = load_project(args.project)
    with context.open_store() as store:
        found = lock_build(project, store, _find_tools(context), context.progress)
    if found["built"]:
        context.info(f"built from source: {', '.join(found['built'])}")
    for name, version in found["pins"].items():
        others = [v for v in found["found"].get(name, []) if v != version]
        also = f" (builds also chose {', '.join(others)})" if others else ""
        context.info(f"  {name} {version}{also}")
    if found["pins"]:
        context.info(
            f"pinned {len(found['pins'])} build dependencies; review and commit "
            "pyproject.toml, uv.lock and lockbox.inputs.toml, then `lockbox lock-hash`"
        )
    return 0


def _bundling(project: Project, args: argparse.Namespace) -> Project:
    """``project`` with ``--no-bundle`` applied to its recipe."""
    if not getattr(args, "no_bundle", False):
        return project
    libraries = dataclasses.replace(project.recipe.libraries, bundle=False)
    return dataclasses.replace(
        project, recipe=dataclasses.replace(project.recipe, libraries=libraries)
    )


def _without_declared_hash(project: Project) -> Project:
    deps = dataclasses.replace(project.recipe.deps, hash=None)
    return dataclasses.replace(project, recipe=dataclasses.replace(project.recipe, deps=deps))


def _find_tools(context: Context) -> Tools:
    from lockbox.deps.install import Tools

    return Tools.find(os.environ, context.progress)
