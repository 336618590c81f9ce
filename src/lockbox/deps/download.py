"""Downloading files by their SHA-256: the one way lockbox fetches what it builds from.

Every file a build needs from the network (the wheels and sdists uv.lock pins, the pinned
build dependencies, Debian packages) is named by its URL and the SHA-256 it must have.
:func:`download_all` fetches them in parallel, hashing each as it arrives, and renames a
file to its final name only once its hash (and size, when known) is checked: a crash leaves
at most a partial file under a hidden temporary name, which the next run continues with an
HTTP ``Range`` request when the server supports it, or starts again. A file already there
with the right hash is not fetched again; one with other bytes is fetched anew.

Problems are collected, then raised once: files the server says are gone (404, 410) as
one :class:`~lockbox.errors.DownloadGone`, anything else (network, a hash mismatch) as one
:class:`~lockbox.errors.DownloadFailed`. Proxies are honoured as urllib does
(``https_proxy``, ``no_proxy``…). Nothing downloaded is run or unpacked here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lockbox.errors import DownloadFailed, DownloadGone
from lockbox.progress import Progress, silent

_CHUNK = 1 << 20
_TIMEOUT = 60


@dataclass(frozen=True)
class Download:
    """A file to download, and what it must be."""

    url: str
    sha256: str
    """The hex digest the file must have."""
    name: str
    """The file name to save it as (one path component)."""
    size: int | None = None
    """Its size in bytes, when the publisher says."""
    label: str = ""
    """What the file is, for messages (``lxml 6.0.4 (sdist)``)."""


class _Gone(Exception):
    pass


class _Failed(Exception):
    pass


def download_all(
    items: Sequence[Download], directory: Path, progress: Progress = silent, *, jobs: int = 8
) -> dict[str, Path]:
    """Download ``items`` into ``directory``; return each sha256 → the verified file."""
    unique = list({item.sha256.lower(): item for item in items}.values())
    failures: list[tuple[Download, str]] = [
        (item, f"refused to save it as {item.name!r}: not a file name")
        for item in unique
        if "/" in item.name or item.name.strip(".") == "" or "\0" in item.name
    ]
    if failures:
        raise DownloadFailed(failures)
    directory.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    wanted: list[Download] = []
    for item in unique:
        final = directory / item.name
        if _matches(final, item):
            found[item.sha256.lower()] = final
        else:
            wanted.append(item)
    size = sum(item.size or 0 for item in wanted)
    progress.info(
        f"fetching {len(wanted)} files ({size / 1e6:.1f} MB); "
        f"{len(found)} of {len(unique)} were already there"
    )
    gone: list[Download] = []
    if wanted:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            outcomes = list(pool.map(lambda item: _outcome(item, directory, progress), wanted))
        for item, outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, Path):
                found[item.sha256.lower()] = outcome
            elif isinstance(outcome, _Gone):
                gone.append(item)
            else:
                failures.append((item, str(outcome)))
    if failures:
        raise DownloadFailed(
            [*failures, *((item, "gone from the server (404/410)") for item in gone)]
        )
    if gone:
        raise DownloadGone(gone)
    return found


def _outcome(item: Download, directory: Path, progress: Progress) -> Path | Exception:
    try:
        return _fetch(item, directory, progress)
    except (_Gone, _Failed) as error:
        return error


def _matches(path: Path, item: Download) -> bool:
    """Whether ``path`` is a regular file with ``item``'s size and hash."""
    try:
        if not path.is_file() or path.is_symlink():
            return False
        if item.size is not None and path.stat().st_size != item.size:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == item.sha256.lower()


def _fetch(item: Download, directory: Path, progress: Progress) -> Path:
    final = directory / item.name
    # Named by the hash too: another file of the same name must not continue this one. Not
    # lockbox.fs.write_atomically: what arrived is kept, for the next run to continue.
    partial = directory / f".{item.sha256.lower()[:16]}-{item.name}.part"
    with open(partial, "a+b") as lock:
        # Another lockbox fetching the same file waits, then finds it there.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _matches(final, item):
            return final
        resume = True
        while True:
            digest = hashlib.sha256()
            received, resumed = _receive(item, partial, digest, resume)
            got = digest.hexdigest()
            if got == item.sha256.lower() and (item.size is None or received == item.size):
                os.replace(partial, final)
                progress.debug(f"fetched {item.label or item.name} ({received} bytes)")
                return final
            partial.unlink(missing_ok=True)
            if not resumed:
                break
            resume = False  # the kept part may have been wrong: once more, whole
        if item.size is not None and received != item.size:
            raise _Failed(f"{item.name}: expected {item.size} bytes, got {received}")
        raise _Failed(
            f"hash mismatch for {item.name}: expected sha256:{item.sha256.lower()}, "
            f"got sha256:{got}"
        )


def _receive(
    item: Download, partial: Path, digest: hashlib._Hash, resume: bool
) -> tuple[int, bool]:
    """Write ``item`` into ``partial``, continuing what is there when ``resume`` and the
    server supports ranges; return the file's size, ``digest`` having seen all of it, and
    whether a kept part was continued."""
    offset = partial.stat().st_size if resume and partial.exists() else 0
    request = urllib.request.Request(item.url, headers={"User-Agent": "lockbox"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            ranged = (
                offset
                and response.status == 206
                and response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
            )
            with open(partial, "r+b" if ranged else "wb") as out:
                if ranged:
                    while chunk := out.read(_CHUNK):
                        digest.update(chunk)
                else:
                    offset = 0
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.truncate()
                return out.tell(), bool(ranged)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise _Gone() from None
        if error.code == 416 and offset:  # the kept part is no prefix of the file
            partial.unlink(missing_ok=True)
            return _receive(item, partial, digest, False)
        raise _Failed(f"HTTP {error.code} {error.reason}") from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise _Failed(f"{reason}") from None
