"""Normalising an installed environment into a dependency layer.

uv installs into a virtual environment; the layer keeps only what the application needs and
nothing that depends on where or when it was built:

- only ``lib/pythonX.Y/site-packages`` is kept: ``bin/`` (scripts with the build's
  interpreter path in their shebang), ``include/``, ``share/`` and ``pyvenv.cfg`` are not;
- ``__pycache__`` and ``*.pyc`` are dropped, and so is the environment's own
  ``_virtualenv.pth``/``_virtualenv.py``;
- every file is scrubbed of build-environment paths (:mod:`lockbox.scrub`) as it is copied,
  and an ELF file that was changed gets a build-id of its new bytes (:mod:`lockbox.native.buildid`);
- ``direct_url.json`` pointing at a local path (``file://``) is dropped: it names a
  directory of the build machine; so is uv's ``uv_build.json``, which records the build's
  variables, the machine's ``PATH`` among them, and its ``uv_cache.json``, which records
  when a local source (a path, an extra source) was read;
- each ``RECORD`` is rewritten to list the files that are really there, with the hashes and
  sizes of their final bytes, sorted.

Permissions and mtimes are fixed when the store seals the tree. The environment is
normalised where it lies, after one rename into the store's staging area: each file is read
once, scanned and hashed for its ``RECORD`` line, and written only if scrubbing changed it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

from lockbox import fs
from lockbox.errors import LayerError
from lockbox.hashes import record_hash
from lockbox.native.buildid import refresh_build_id
from lockbox.progress import Progress, silent
from lockbox.scrub import Scrubber, ScrubReport

_VENV_FILES = {"_virtualenv.pth", "_virtualenv.py"}
_BUILD_RECORDS = {
    "uv_build.json": "uv_build.json (the build's variables, PATH included)",
    "uv_cache.json": "uv_cache.json (when a local source was read)",
}
"""What uv writes into a dist-info about the build rather than the distribution → how the
layer's report counts it."""


@dataclass(frozen=True)
class Distribution:
    """An installed distribution in the layer."""

    name: str
    version: str
    dist_info: str
    """Its ``.dist-info`` directory, relative to site-packages."""


@dataclass
class LayerReport:
    """What normalisation kept, dropped and scrubbed."""

    site_packages: str = ""
    """site-packages relative to the layer root (``lib/python3.13/site-packages``)."""
    files: int = 0
    bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Counts of what was left out, by reason."""
    distributions: list[Distribution] = field(default_factory=list)
    scrub: ScrubReport = field(default_factory=ScrubReport)
    known: int = 0
    """Files not read because an earlier build had read them (see :data:`SEALED_MTIME_NS`)."""
    clean_links: list[tuple[int, int, int, str]] = field(default_factory=list)
    """Files read and found clean that are hardlinked from elsewhere (uv's cache), as
    (device, inode, size, RECORD hash): once the store seals them they are known."""


SEALED_MTIME_NS = 1_000_000_000
"""The modification time the store gives every file it seals (1 s after the epoch).

A file that is hardlinked (from uv's cache), has this mtime and is listed in ``known`` with
its device, inode and size was read and found clean by an earlier build in this store, and
sealed read-only since: its bytes are not read again. uv writes its cache with current
times, so a cache file gets mtime 1 only by being sealed after a build has read it (and
remembered it anew): an inode freed and reused by another file cannot pass for a remembered
one. The NAR hash still reads every byte,
so a file changed behind the store's back still changes the layer's hash."""


def site_packages_of(venv: Path) -> Path:
    """The one ``lib/pythonX.Y/site-packages`` of an environment."""
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise LayerError(f"expected one lib/python3.*/site-packages in {venv}, found {len(found)}")
    return found[0]


def normalise(
    venv: Path,
    out: Path,
    scrubber: Scrubber,
    progress: Progress = silent,
    known: Mapping[tuple[int, int, int], str] | None = None,
) -> LayerReport:
    """Turn ``venv``'s site-packages into the layer ``out`` (which must not exist, and be on
    the same file system): the directory is moved, then normalised in place. A file is
    replaced (never changed in place: uv may have hardlinked it from its cache) only when
    scrubbing changes it."""
    site = site_packages_of(venv)
    relative_site = site.relative_to(venv)
    report = LayerReport(site_packages=str(relative_site))
    target_site = out / relative_site
    os.makedirs(target_site.parent)
    os.rename(site, target_site)
    for name in sorted(os.listdir(venv)):
        if name != "lib":
            report.dropped[f"{name} (outside site-packages)"] = 1
    record_lines: dict[str, tuple[str, str]] = {}
    records: dict[str, list[str]] = {}
    _normalise_tree(target_site, scrubber, report, record_lines, records, known or {})
    by_dist_info: dict[str, list[str]] = {}
    for path in record_lines:
        by_dist_info.setdefault(path.split("/", 1)[0], []).append(path)
    for dist_info in sorted(p for p in os.listdir(target_site) if p.endswith(".dist-info")):
        owned = set(records.get(dist_info, ())) | set(by_dist_info.get(dist_info, ()))
        report.distributions.append(
            _write_record(target_site, dist_info, owned, record_lines, report)
        )
    progress.debug(
        f"layer: {report.files} files, {report.bytes} bytes, "
        f"{len(report.distributions)} distributions; {report.known} files known "
        "clean from earlier builds were not read"
    )
    return report


def _count(report: LayerReport, reason: str) -> None:
    report.dropped[reason] = report.dropped.get(reason, 0) + 1


def _normalise_tree(
    top: Path,
    scrubber: Scrubber,
    report: LayerReport,
    record_lines: dict[str, tuple[str, str]],
    records: dict[str, list[str]],
    known: Mapping[tuple[int, int, int], str],
) -> None:
    for directory, directories, others in fs.walk(top):
        if "__pycache__" in directories:
            _count(report, "__pycache__ directories")
            fs.remove_tree(Path(directory, "__pycache__"))
            directories.remove("__pycache__")
        below = os.path.relpath(directory, top)
        relative = "" if below == "." else f"{below}/"
        in_dist_info = relative.endswith(".dist-info/") and relative.count("/") == 1
        for name in others:
            location = os.path.join(directory, name)
            path = f"{relative}{name}"
            info = os.lstat(location)
            if stat.S_ISLNK(info.st_mode):
                link = os.readlink(location)
                scrubbed, found = scrubber.scrub(os.fsencode(link))
                if found:
                    report.scrub.add(path, found)
                    os.unlink(location)
                    os.symlink(os.fsdecode(scrubbed), location)
                record_lines[path] = ("", "")
                continue
            if not stat.S_ISREG(info.st_mode):
                raise LayerError(f"{location} is not a file, directory or symlink")
            if _dropped(name, relative, in_dist_info, location, report, records):
                os.unlink(location)
                continue
            linked = info.st_nlink > 1
            identity = (info.st_dev, info.st_ino, info.st_size)
            if linked and info.st_mtime_ns == SEALED_MTIME_NS and identity in known:
                record_lines[path] = (known[identity], str(info.st_size))
                report.files += 1
                report.bytes += info.st_size
                report.known += 1
                continue
            with open(location, "rb") as file:
                data = file.read()
            data, found = scrubber.scrub(data)
            if found:
                report.scrub.add(path, found)
                data = refresh_build_id(data)
                fs.write_atomically(Path(location), data)
            digest = record_hash(data)
            record_lines[path] = (digest, str(len(data)))
            if linked and not found:
                report.clean_links.append((*identity, digest))
            report.files += 1
            report.bytes += len(data)


def _dropped(
    name: str,
    relative: str,
    in_dist_info: bool,
    path: str,
    report: LayerReport,
    records: dict[str, list[str]],
) -> bool:
    """Whether a file leaves the layer; a RECORD is read (to be rewritten) as it goes."""
    if name.endswith(".pyc"):
        _count(report, "*.pyc files")
        return True
    if relative == "" and name in _VENV_FILES:
        return True
    if not in_dist_info:
        return False
    if name == "RECORD":
        records[relative.rstrip("/")] = _record_paths(path)
        return True
    label = _BUILD_RECORDS.get(name)
    if name == "direct_url.json" and _is_local_url(path):
        label = "direct_url.json of local paths"
    if label is None:
        return False
    _count(report, label)
    return True


def _record_paths(record: str) -> list[str]:
    """The site-packages paths a RECORD lists (not scripts and data installed elsewhere)."""
    paths = []
    with open(record, newline="", encoding="utf-8") as file:
        for row in csv.reader(file):
            if row:
                normal = os.path.normpath(row[0])
                if not normal.startswith(".."):
                    paths.append(PurePosixPath(normal).as_posix())
    return paths


def _is_local_url(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as file:
            url = json.load(file).get("url", "")
    except (ValueError, OSError, AttributeError):
        return False
    return isinstance(url, str) and url.startswith("file:")


def _write_record(
    target_site: Path,
    dist_info: str,
    owned: set[str],
    record_lines: dict[str, tuple[str, str]],
    report: LayerReport,
) -> Distribution:
    """Write ``dist_info``'s RECORD: the files it owned that are still there, and its own
    directory's, with final hashes and sizes, sorted."""
    record = f"{dist_info}/RECORD"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for path in sorted(owned & record_lines.keys()):
        writer.writerow((path, *record_lines[path]))
    writer.writerow((record, "", ""))
    (target_site / record).write_text(buffer.getvalue(), encoding="utf-8")
    metadata_path = target_site / dist_info / "METADATA"
    metadata = (
        HeaderParser().parsestr(metadata_path.read_text(encoding="utf-8", errors="replace"))
        if metadata_path.is_file()
        else Message()
    )
    name = str(metadata.get("Name") or dist_info.split("-", 1)[0])
    version = str(metadata.get("Version") or dist_info.removesuffix(".dist-info").split("-")[-1])
    report.files += 1
    return Distribution(name, version, dist_info)
