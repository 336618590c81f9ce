"""``lockbox image``: an OCI image of the built application's closure, written or pushed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.cli.context import Context, add_project_argument

if TYPE_CHECKING:
    from lockbox.inputs.build import BuildInputs
    from lockbox.inputs.project import Project
    from lockbox.store.store import Entry, Store
    from lockbox.tools.toolbox import Toolbox


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    from lockbox.tools.skopeo import REGISTRY_TIMEOUT

    if args.output is None and args.layout is None and args.push is None:
        context.error("say where the image goes: -o FILE, --layout DIR or --push REF")
        return 2
    started = time.time_ns()
    tools = context.toolbox()
    skopeo = tools.skopeo if args.push else None
    base = read_base(args.base) if args.base else None
    inputs = context.build_inputs(args)
    project = inputs.project
    with context.open_store() as store:
        app, referenced = _closure(args, inputs, store, tools, context, started)
        labels = _image_labels(project, tools)
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
                dpkg=tools.dpkg if base is None else None,
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
    args: argparse.Namespace,
    inputs: BuildInputs,
    store: Store,
    tools: Toolbox,
    context: Context,
    started: int,
) -> tuple[Entry, dict[str, Entry]]:
    """The application's entry and those it references, by kind (:func:`lockbox.pipeline.closure`).
    Found from the record of an earlier image's lookup when nothing that lookup read has
    changed (:mod:`lockbox.cli.shortcut`), else looked up (or built) and recorded."""
    from lockbox.cli.shortcut import Request
    from lockbox.pipeline import build, closure

    request = (
        None
        if context.verbose
        else Request.make(
            "image",
            str(args.project),
            str(store.root),
            dict(context.environment),
            started,
            quiet=context.quiet,
        )
    )
    found = request.lookup() if request is not None else None
    if request is not None and request.distrusted:
        context.warning(request.distrust_notice())
    app = store.get(Path(found[0]).name) if found is not None else None
    if app is None:
        built = build(inputs, store, tools, context.progress)
        context.shortcut = request
        context.remember(store, built)
        app = built.app.entry if built.app is not None else None
    elif request is not None and found is not None:
        request.say(found[1])
    assert app is not None
    return app, closure(store, app)


def _image_labels(project: Project, tools: Toolbox) -> dict[str, str]:
    """The OCI annotations lockbox knows: title, version, source, revision."""
    from lockbox.errors import ToolMissing

    labels = {"org.opencontainers.image.title": project.app_name}
    if project.version:
        labels["org.opencontainers.image.version"] = project.version
    urls = project.pyproject.get("project", {}).get("urls", {})
    for key in ("Source", "Repository", "source", "repository", "Homepage", "homepage"):
        if isinstance(urls.get(key), str):
            labels["org.opencontainers.image.source"] = urls[key]
            break
    try:
        revision = tools.git.revision(project.root)
    except ToolMissing:
        revision = None  # not a git checkout that can be asked, then
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    return labels
