"""The fetch step of the dependency phase: everything the build will need, by hash.

The dependency phase is two steps. This one may use the network and runs no third-party
code; the build step (:mod:`lockbox.deps.install`) then runs the build backends with no
network at all, installing only from what was fetched here:

- every file uv installs for this interpreter: the wheel the plan picks, or the sdist of a
  package built from source (:mod:`lockbox.inputs.plan`), and the archives of URL sources, each
  checked against uv.lock's SHA-256 (:mod:`lockbox.deps.download`);
- every file of the pinned build dependencies that this interpreter can use (uv.lock's
  ``[manifest] build-constraints``, written by ``lockbox lock-build``): the project's
  indexes (PyPI unless configured) are asked for them through the simple API, and only
  files whose SHA-256 is pinned are taken — any wheel that fits, else the sdist, the sdist
  alone for a package ``no-binary-package`` names;
- a checkout of each git source at the commit uv.lock pins;
- the recipe's extra sources (:mod:`lockbox.deps.sources`).

Files are kept in ``STORE/.lockbox/fetched/`` (checked again on every use, fetched once)
and linked into the build's own find-links directory, which the build sees read-only and
which holds nothing another build fetched.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from lockbox.deps.download import Download, download_all
from lockbox.errors import FetchError, LockboxError
from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.lock import Package
from lockbox.inputs.plan import Plan
from lockbox.inputs.project import Project
from lockbox.progress import Progress, silent
from lockbox.store.store import Store

if TYPE_CHECKING:
    from lockbox.tools.git import Git
    from lockbox.tools.toolbox import Toolbox


PYPI = "https://pypi.org/simple"
_SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_SDIST = (".tar.gz", ".zip")


@dataclass(frozen=True)
class Fetched:
    """What the build step installs from, as the host sees it."""

    links: Path
    """The build's find-links directory: every file fetched for it, and nothing else."""
    local: Mapping[str, Path]
    """Package name → what stands in for its URL or git source (an archive in ``links``,
    a checkout)."""
    extra: Sequence[Path]
    """The recipe's extra sources, checked."""


def fetch_dependencies(
    project: Project,
    plan: Plan,
    store: Store,
    work: Path,
    tools: Toolbox,
    progress: Progress = silent,
) -> Fetched:
    """Fetch what a build of ``plan`` needs (module docstring) for the build in ``work``."""
    problems: list[str] = []
    items, by_name = _locked_items(project, plan, problems)
    items += _pinned_items(project, plan.interpreter, problems, progress)
    if problems:
        raise FetchError(problems)
    found = download_all(items, store.layout.fetched, progress)
    links = work / "links"
    links.mkdir()
    for path in found.values():
        os.link(path, links / path.name)
    local: dict[str, Path] = {name: links / found[sha256].name for name, sha256 in by_name.items()}
    for planned in plan.by_form("git"):
        local[planned.package.name] = _checkout(planned.package, work / "git", tools.git, progress)
    return Fetched(links, local, fetch_extra_sources(project, store, tools, progress))


def _locked_items(
    project: Project, plan: Plan, problems: list[str]
) -> tuple[list[Download], dict[str, str]]:
    """The files uv.lock pins that the build installs; and, for URL sources, the package's
    name → the file's SHA-256."""
    items: list[Download] = []
    by_name: dict[str, str] = {}
    for planned in plan.installed:
        package, artifact = planned.package, planned.artifact
        if artifact is None or package.source.kind not in ("registry", "url", "path"):
            continue
        if package.source.kind == "path":  # a file in the project: read where it is
            continue
        if artifact.sha256 is None:
            problems.append(
                f"{package.label}: uv.lock has no SHA-256 for {artifact.filename} "
                "(its index publishes none): lockbox fetches only by hash; use "
                "an index that publishes hashes (a find-links page needs "
                "#sha256= fragments)"
            )
            continue
        url = artifact.url or (package.source.location if package.source.kind == "url" else None)
        if url is None and artifact.path is not None:
            url = (project.root / artifact.path).resolve().as_uri()
        if url is None:
            problems.append(f"{package.label}: uv.lock gives no URL for {artifact.filename}")
            continue
        kind = "wheel" if artifact.filename.endswith(".whl") else "sdist"
        items.append(
            Download(
                url,
                artifact.sha256.hex,
                artifact.filename,
                artifact.size,
                f"{package.label} ({kind})",
            )
        )
        if package.source.kind == "url":
            by_name[package.name] = artifact.sha256.hex
    return items, by_name


def _pinned_items(
    project: Project, interpreter: Interpreter, problems: list[str], progress: Progress
) -> list[Download]:
    """The files of uv.lock's build pins that ``interpreter`` can use."""
    from lockbox.deps.buildpins import pinned

    pins = pinned(project)
    if not pins:
        return []
    indexes = index_urls(project)
    progress.info(f"asking {', '.join(indexes)} for the files of {len(pins)} build pins")
    no_binary = project.uv.no_binary_packages
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda name: _pinned_files(
                    name,
                    pins[name],
                    indexes,
                    name in no_binary or project.uv.no_binary,
                    interpreter,
                ),
                sorted(pins),
            )
        )
    items: list[Download] = []
    for answer in answers:
        if isinstance(answer, str):
            problems.append(answer)
        else:
            items += answer
    return items


def _pinned_files(
    name: str,
    pin: Mapping[str, Any],
    indexes: Sequence[str],
    sdist_only: bool,
    interpreter: Interpreter,
) -> list[Download] | str:
    """The files of one build pin to fetch, or why there are none."""
    hashes = {str(h).removeprefix("sha256:").lower() for h in pin["hashes"]}
    label = f"{name} {pin['version']}"
    if not hashes:
        return (
            f"the build pin {label} has no hashes: run `lockbox lock-build` to pin build "
            "dependencies with their hashes"
        )
    asked = []
    for index in indexes:
        try:
            files = simple_files(index, name)
        except LockboxError as error:
            asked.append(str(error))
            continue
        pinned_files = [f for f in files if f.sha256 in hashes]
        if not pinned_files:
            asked.append(f"{index} lists no file of {name} with a pinned hash")
            continue
        wheels = (
            []
            if sdist_only
            else [f for f in pinned_files if f.name.endswith(".whl") and _fits(f.name, interpreter)]
        )
        sdists = [f for f in pinned_files if f.name.endswith(_SDIST)]
        chosen = wheels or sdists
        if not chosen:
            asked.append(f"{index} has no file of {label} for {interpreter.abi} on this platform")
            continue
        return [
            Download(
                f.url,
                f.sha256,
                f.name,
                f.size,
                f"{label} (build dependency, {'wheel' if f.name.endswith('.whl') else 'sdist'})",
            )
            for f in chosen
        ]
    return (
        f"the build pin {label}: " + "; ".join(asked) + " (an index that replaced a "
        "pinned file is refused; to pin what it serves now, run `lockbox lock-build` and "
        "review the change)"
    )


def _fits(filename: str, interpreter: Interpreter) -> bool:
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return False
    return any(tag in interpreter.tag_ranks for tag in tags)


def index_urls(project: Project) -> list[str]:
    """The project's package indexes, in the order uv asks them: ``[[tool.uv.index]]``,
    ``extra-index-url``, then the default index (``index-url``, an index marked default,
    else PyPI). Explicit indexes, which uv uses only for the packages assigned to them,
    are not asked."""
    from lockbox.deps.inputs import uv_settings

    settings = uv_settings(project)
    urls: list[str] = []
    default = settings.get("index-url")
    for index in settings.get("index", []):
        if not isinstance(index, Mapping) or index.get("explicit") or "url" not in index:
            continue
        if index.get("default"):
            default = default or index["url"]
        else:
            urls.append(str(index["url"]))
    urls += [str(url) for url in settings.get("extra-index-url", [])]
    if not settings.get("no-index"):
        urls.append(str(default or PYPI))
    return list(dict.fromkeys(url.rstrip("/") for url in urls))


@dataclass(frozen=True)
class IndexFile:
    """A file a simple index lists."""

    name: str
    url: str
    sha256: str
    size: int | None = None


def simple_files(index: str, project: str) -> list[IndexFile]:
    """The files ``index`` lists for ``project`` with their SHA-256 (PEP 691 JSON, or the
    PEP 503 HTML page with ``#sha256=`` fragments)."""
    url = f"{index.rstrip('/')}/{canonicalize_name(project)}/"
    request = urllib.request.Request(
        url, headers={"Accept": _SIMPLE_ACCEPT, "User-Agent": "lockbox"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            kind = response.headers.get("Content-Type", "")
            body = response.read(64 << 20)
            url = response.geturl()
    except urllib.error.HTTPError as error:
        raise LockboxError(f"{url} answered HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise LockboxError(
            f"cannot read {url}: {getattr(error, 'reason', None) or error}"
        ) from None
    files: list[IndexFile] = []
    if "json" in kind:
        try:
            listed = json.loads(body).get("files", [])
        except (ValueError, AttributeError):
            raise LockboxError(f"{url} did not answer valid JSON") from None
        for entry in listed:
            if not isinstance(entry, Mapping):
                continue
            digest = (entry.get("hashes") or {}).get("sha256")
            size = entry.get("size")
            if isinstance(digest, str) and isinstance(entry.get("url"), str):
                files.append(
                    IndexFile(
                        str(entry.get("filename")),
                        urllib.parse.urljoin(url, entry["url"]),
                        digest.lower(),
                        size if isinstance(size, int) else None,
                    )
                )
        return [f for f in files if _file_name_ok(f.name)]
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for href, text in parser.links:
        absolute = urllib.parse.urljoin(url, href)
        parts = urllib.parse.urlsplit(absolute)
        match = re.search(r"(?:^|&)sha256=([0-9a-fA-F]{64})", parts.fragment)
        name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1]) or text.strip()
        if match:
            files.append(
                IndexFile(name, parts._replace(fragment="").geturl(), match.group(1).lower())
            )
    return [f for f in files if _file_name_ok(f.name)]


def _file_name_ok(name: str) -> bool:
    try:
        if name.endswith(".whl"):
            parse_wheel_filename(name)
        elif name.endswith(_SDIST):
            parse_sdist_filename(name)
        else:
            return False
    except (InvalidWheelFilename, InvalidSdistFilename):
        return False
    return "/" not in name


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((self._href, data))
            self._href = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, ""))
            self._href = None


def _checkout(package: Package, directory: Path, git: Git, progress: Progress) -> Path:
    """A fresh checkout of a git source at the commit uv.lock pins (the project's directory
    in it, for a ``subdirectory``)."""
    source = package.source
    pinned = source.git_commit
    if pinned is None:  # the lock reader refuses a git source without its commit
        raise FetchError([f"{package.label}: uv.lock pins no commit of {source.location}"])
    directory.mkdir(exist_ok=True)
    target = directory / package.name
    progress.info(f"fetching {source.location} at {pinned}")
    commit = git.checkout(source.location, pinned, target, progress)
    if commit != pinned:
        raise FetchError(
            [
                f"{package.label}: {source.location} at {pinned} checked "
                f"out as {commit}: uv.lock pins a full commit; run `uv lock`"
            ]
        )
    if source.subdirectory:
        inner = (target / source.subdirectory).resolve()
        if not inner.is_relative_to(target.resolve()) or not inner.is_dir():
            raise FetchError(
                [
                    f"{package.label}: the subdirectory {source.subdirectory!r} "
                    f"is not a directory of {source.location}"
                ]
            )
        return inner
    return target


def fetch_extra_sources(
    project: Project, store: Store, tools: Toolbox, progress: Progress
) -> list[Path]:
    """Each of the recipe's extra sources, fetched (once) and checked against its hash."""
    if not project.recipe.deps.extra_sources:
        return []
    from lockbox.deps.sources import fetch

    return [
        fetch(source, store.layout.sources, tools, progress)
        for source in project.recipe.deps.extra_sources
    ]


_REQUIREMENT_URL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])? @ (\S+)", re.MULTILINE)


def localise(requirements: str, local: Mapping[str, str]) -> str:
    """``requirements`` (``uv export`` output) with the URL of each package in ``local``
    (name → a ``file://`` URL of what was fetched for it) replaced."""

    def replace(match: re.Match[str]) -> str:
        name = canonicalize_name(match.group(1))
        if name not in local:
            return match.group(0)
        return f"{match.group(1)}{match.group(2) or ''} @ {local[name]}"

    return _REQUIREMENT_URL.sub(replace, requirements)
