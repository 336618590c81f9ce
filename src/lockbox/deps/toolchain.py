"""The toolchain a dependency layer was compiled with, found from the compiles themselves.

The compiler wrappers (:mod:`lockbox.deps.install`) ask every compile for the files it read:
``SUNPRO_DEPENDENCIES`` makes GCC write a make-style list of every header, system headers
included, and ``-Wl,--dependency-file`` makes the linker write every object and library it
read. After the build those lists are mapped to the Debian packages that own the files
(``/var/lib/dpkg/info/*.list``, versions from ``/var/lib/dpkg/status``), each with a digest
of the files it contributed, so that a header changed under an unchanged version is seen
too; files no package owns are recorded by their own digest. The compilers' and linker's
own binaries are among the files, so their packages are recorded the same way.

Limits: a compile whose command line asks for its own dependency file (``-MD``/``-MF``)
does not honour ``SUNPRO_DEPENDENCIES``; a build that calls a compiler other than ``CC``/
``CXX`` by its own path, or a linker directly, is not traced.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DPKG_INFO = Path("/var/lib/dpkg/info")
DPKG_STATUS = Path("/var/lib/dpkg/status")

# usrmerge: /lib, /bin, /sbin are links into /usr, and dpkg lists a file under the name
# its package shipped it with.
_MERGED = ("/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")


def trace_files(directory: Path) -> set[str]:
    """Every file the traced compiles and links read, from their dependency lists."""
    paths: set[str] = set()
    if not directory.is_dir():
        return paths
    for trace in directory.iterdir():
        text = trace.read_text(encoding="utf-8", errors="surrogateescape")
        text = text.replace("\\\n", " ").replace("\\ ", "\0")
        for line in text.splitlines():
            _, colon, deps = line.partition(": ")
            if not colon:
                continue
            paths.update(word.replace("\0", " ") for word in deps.split())
    return paths


def tool_files(compilers: Iterable[str]) -> set[str]:
    """The binaries a compile runs: each compiler driver, its ``cc1``/``cc1plus``, the
    assembler and the linker, as absolute paths."""
    found: set[str] = set()
    for compiler in compilers:
        for query in (
            [],
            ["-print-prog-name=cc1"],
            ["-print-prog-name=cc1plus"],
            ["-print-prog-name=as"],
            ["-print-prog-name=ld"],
        ):
            if not query:
                name = compiler
            else:
                name = command_output([compiler, *query]).strip()
                if not name:
                    continue
            path = name if os.path.isabs(name) else _which(name)
            if path and os.path.isfile(path):
                found.add(path)
    return found


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def compiler_versions(compilers: Mapping[str, str]) -> dict[str, str]:
    """The first line of ``--version`` of each compiler and of the linker GCC runs."""
    versions = {}
    for label, compiler in sorted(compilers.items()):
        versions[label] = _first_line([compiler, "--version"])
    linker = compilers.get("cc")
    if linker:
        ld = _first_line([linker, "-print-prog-name=ld"])
        versions["ld"] = _first_line([ld or "ld", "--version"])
    return versions


def _first_line(argv: list[str]) -> str:
    out = command_output(argv)
    return out.splitlines()[0].strip() if out.strip() else ""


def command_output(argv: list[str]) -> str:
    """What a command printed, or nothing if it could not run."""
    from lockbox.errors import LockboxError
    from lockbox.tools.run import run

    try:
        return run(argv, check=False).stdout
    except (LockboxError, OSError):
        return ""


@dataclass(frozen=True)
class FileState:
    """A file as a build read it."""

    sha256: str
    size: int
    mtime_ns: int


def file_state(path: str) -> FileState | None:
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
    return FileState(digest, st.st_size, st.st_mtime_ns)


def record(
    paths: Iterable[str], skip: Iterable[str], compilers: Mapping[str, str]
) -> dict[str, object]:
    """The toolchain record of a build that read ``paths`` (files under ``skip`` — the
    build's own directories, the interpreter — are not the toolchain):

    ``{"compilers": {label: version line}, "packages": {name: {"version", "digest",
    "files": {path: [sha256, size, mtime_ns]}}}, "files": {path: [sha256, size, mtime_ns]}}``
    """
    prefixes = tuple(p.rstrip("/") + "/" for p in skip)
    wanted = sorted(
        {
            os.path.normpath(p)
            for p in paths
            if os.path.isabs(p) and not os.path.normpath(p).startswith(prefixes)
        }
    )
    owners = package_owners()
    versions = installed_versions()
    owned: dict[str, dict[str, list[object]]] = {}
    unowned: dict[str, list[object]] = {}
    for path in wanted:
        state = file_state(path)
        if state is None or not os.path.isfile(path):
            continue
        entry = [state.sha256, state.size, state.mtime_ns]
        owner = None
        for name in dpkg_names(path):
            owner = owners.get(name)
            if owner:
                break
        if owner is None or owner not in versions:
            unowned[path] = entry
            continue
        owned.setdefault(owner, {})[path] = entry
    packages = {
        name: {"version": versions[name], "files": files, "digest": files_digest(files)}
        for name, files in sorted(owned.items())
    }
    return {"compilers": compiler_versions(compilers), "packages": packages, "files": unowned}


def files_digest(files: Mapping[str, list[object]]) -> str:
    """One digest over a set of files' paths and contents."""
    text = "".join(f"{path}\0{state[0]}\n" for path, state in sorted(files.items()))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def dpkg_names(path: str) -> list[str]:
    """The names dpkg may list ``path`` under: itself, its /usr-merged twin, and the same
    for the file a symbolic link leads to."""
    names = []
    for candidate in (path, os.path.realpath(path)):
        names.append(candidate)
        for merged in _MERGED:
            if candidate.startswith("/usr" + merged + "/"):
                names.append(candidate[4:])
            elif candidate.startswith(merged + "/"):
                names.append("/usr" + candidate)
    return names


def package_owners() -> dict[str, str]:
    """The package owning each file the package database lists (its name without the
    architecture): the one owner lookup of lockbox."""
    owners: dict[str, str] = {}
    if not DPKG_INFO.is_dir():
        return owners
    for listing in DPKG_INFO.glob("*.list"):
        package = listing.name[: -len(".list")].split(":")[0]
        with open(listing, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                owners[line.rstrip("\n")] = package
    return owners


def installed_versions() -> dict[str, str]:
    """Installed Debian packages: name → version (empty off Debian)."""
    try:
        text = DPKG_STATUS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    versions = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            _field(line)
            for line in stanza.splitlines()
            if ": " in line and not line.startswith(" ")
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


_TOOLCHAIN_PACKAGE = re.compile(
    r"-dev$|^(gcc|g\+\+|cpp|binutils|libc6|libgcc|libstdc\+\+|clang|llvm)"
)


def fingerprint() -> str:
    """A digest of the installed compilers and -dev packages, known before building: what
    the uv cache's built wheels are keyed by, besides the build pins. It covers each such
    package's version and the size and modification time of each file it installed (dpkg
    keeps the archive's times), so an edited or over-mounted header changes it too; stating
    the example's 14 000 files takes 0.1 s, and only a build pays it."""
    versions = installed_versions()
    digest = hashlib.sha256()
    for name, version in sorted(versions.items()):
        if _TOOLCHAIN_PACKAGE.search(name):
            digest.update(f"{name}={version}\n".encode())
    try:
        listings = sorted(
            name
            for name in os.listdir(DPKG_INFO)
            if name.endswith(".list")
            and _TOOLCHAIN_PACKAGE.search(name[: -len(".list")].split(":")[0])
        )
    except OSError:
        listings = []
    for listing in listings:
        with open(DPKG_INFO / listing, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                path = line.rstrip("\n")
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                digest.update(
                    f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode(
                        "utf-8", "surrogateescape"
                    )
                )
    return digest.hexdigest()


def _field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(": ")
    return key, value


def current(recorded: Mapping[str, object]) -> dict[str, object]:
    """The host's state of what ``recorded`` (a :func:`record`) lists: the same packages'
    installed versions and digests of the same files, re-read only where a file's size or
    modification time moved. Compilers are covered by their packages."""
    versions = installed_versions()
    packages: dict[str, dict[str, object]] = {}
    for name, package in _table(recorded, "packages").items():
        files = {path: _restat(path, state) for path, state in _table(package, "files").items()}
        packages[name] = {
            "version": versions.get(name, ""),
            "files": files,
            "digest": files_digest(files),
        }
    unowned = {path: _restat(path, state) for path, state in _table(recorded, "files").items()}
    return {"compilers": recorded.get("compilers", {}), "packages": packages, "files": unowned}


def _restat(path: str, state: list[object]) -> list[object]:
    try:
        st = os.stat(path)
    except OSError:
        return ["missing", 0, 0]
    if st.st_size == state[1] and st.st_mtime_ns == state[2]:
        return list(state)
    now = file_state(path)
    return [now.sha256, now.size, now.mtime_ns] if now else ["missing", 0, 0]


def paths(recorded: Mapping[str, object]) -> list[str]:
    """Every file a record says the builds read, and the package database: what a
    repeated lookup's shortcut must see unchanged (:mod:`lockbox.cli.shortcut`)."""
    found = [str(DPKG_STATUS)]
    for package in _table(recorded, "packages").values():
        found += list(_table(package, "files"))
    found += list(_table(recorded, "files"))
    return found


def summary(recorded: Mapping[str, object]) -> dict[str, object]:
    """What of a record goes into the committed inputs file: compilers, each package's
    version and digest, unowned files' digests. A summary is its own summary."""
    root = {"root": recorded["root"]} if recorded.get("root") else {}
    return {
        **root,
        "compilers": dict(_table(recorded, "compilers")),
        "packages": {
            name: {"version": p["version"], "digest": p["digest"]}
            for name, p in _table(recorded, "packages").items()
        },
        "files": {
            path: state if isinstance(state, str) else state[0]
            for path, state in _table(recorded, "files").items()
        },
    }


def _table(recorded: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``recorded[key]``, a table of a record read back from JSON or TOML (empty when
    absent, or when the record holds something else there)."""
    value = recorded.get(key, {})
    return value if isinstance(value, Mapping) else {}


def modified_files(package: str, paths: Iterable[str]) -> list[str]:
    """Of ``paths`` (files of ``package``), those whose content differs from what the
    package shipped (dpkg's md5sums)."""
    sums = DPKG_INFO / f"{package}.md5sums"
    if not sums.is_file():
        candidates = sorted(DPKG_INFO.glob(f"{package}:*.md5sums"))
        if not candidates:
            return []
        sums = candidates[0]
    shipped = {}
    for line in sums.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        digest, _, name = line.partition("  ")
        shipped["/" + name] = digest
    changed = []
    for path in sorted(paths):
        expected = next((shipped[n] for n in dpkg_names(path) if n in shipped), None)
        if expected is None:
            continue
        try:
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "md5").hexdigest() != expected:
                    changed.append(path)
        except OSError:
            changed.append(path)
    return changed
