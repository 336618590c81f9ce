"""The build root: a file system of pinned Debian packages that the dependency phase compiles in.

A recipe with ``[deps.toolchain]`` has its sdists built not against the host's compiler and
``-dev`` headers but inside a root assembled from exact Debian packages: the compiler,
binutils, ``libc6-dev``, ``make`` and ``pkg-config`` (:data:`BASE_PACKAGES`), Debian's
``Essential: yes`` set (a shell and the core utilities that build scripts run), the
libraries the interpreter itself loads, the packages the recipe names, and everything they
depend on.

- **Pinning** (:func:`resolve`, ``lockbox lock-toolchain``) asks apt, in a private state
  directory of its own (the host's package database and sources play no part), which
  packages that set is today, and writes each one's name, version, architecture, URL,
  size and the ``.deb``'s SHA-256 (from the archive's signed index) into
  ``lockbox.inputs.toml`` (``[build-root]``), with the NAR hash of the root they make.
- **Making** the root (:func:`ensure_root`) downloads exactly those files (in parallel,
  each checked against its SHA-256 as it arrives, kept in :func:`deb_cache`),
  unpacks each with ``dpkg-deb --fsys-tarfile | tar -x`` into a merged-``/usr`` tree —
  no maintainer script runs — in lockbox's offline sandbox, where only the new tree is
  writable, so no archive member can reach outside it through a link. A few files
  maintainer scripts would make are written by lockbox (:func:`_finish`). The tree is
  registered as a ``toolchain`` store entry, content-addressed by its NAR hash, which must
  be the pinned one. A layer built in it references it, so ``gc`` keeps it.

What the builds still take from the host is the kernel (system calls, ``uname``), the
interpreter entry and uv, which are mounted in (:meth:`lockbox.tools.sandbox.Sandbox.wrap`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockbox import fs
from lockbox.errors import BuildRootError, LockboxError, PinnedPackagesGone, ToolFailed
from lockbox.hashes import Sha256
from lockbox.progress import Progress, silent
from lockbox.tools.run import run, which

if TYPE_CHECKING:
    from lockbox.environment import Environment
    from lockbox.inputs.interpreters import Interpreter
    from lockbox.inputs.project import Project
    from lockbox.store.store import Entry, Store
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.toolbox import Toolbox

BASE_PACKAGES = ("gcc", "g++", "make", "pkgconf", "libc6-dev")
"""What every build root holds besides the recipe's packages and the essential set."""

SECTION = "build-root"
"""The table of ``lockbox.inputs.toml`` the pins are written to."""

ARCHIVES = {
    # distribution → (archive, suites), (security archive, suites)
    "bookworm": (
        ("http://deb.debian.org/debian", ("bookworm", "bookworm-updates")),
        ("http://deb.debian.org/debian-security", ("bookworm-security",)),
    ),
    "trixie": (
        ("http://deb.debian.org/debian", ("trixie", "trixie-updates")),
        ("http://deb.debian.org/debian-security", ("trixie-security",)),
    ),
}
"""Where each supported Debian release's packages are fetched from when pinning."""

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+\Z")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+\Z")
_ARCH = re.compile(r"^[a-z0-9-]+\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True, order=True)
class DebPackage:
    """One pinned ``.deb``."""

    name: str
    version: str
    architecture: str
    url: str
    sha256: str
    size: int

    @property
    def file_name(self) -> str:
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.architecture}.deb"


@dataclass(frozen=True)
class RootPins:
    """What a build root is made of."""

    distribution: str
    requested: tuple[str, ...]
    """The packages the recipe names (``deps.toolchain.packages``)."""
    implied: tuple[str, ...]
    """What pinning asked for besides: the base set, the essential set, the packages of
    the libraries the interpreter loads."""
    packages: tuple[DebPackage, ...]
    hash: Sha256 | None = None
    """The NAR hash of the root these packages make; None until it was made once."""

    @property
    def name(self) -> str:
        return f"toolchain-{self.distribution}"

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}

    def record(self) -> dict[str, object]:
        """The layer record's ``toolchain`` for builds in this root (:mod:`lockbox.deps.inputs`)."""
        return {
            "root": self.hash.sri if self.hash else "",
            "compilers": {},
            "packages": {
                p.name: {"version": p.version, "digest": f"sha256:{p.sha256}"}
                for p in self.packages
            },
            "files": {},
        }

    def to_toml(self) -> dict[str, object]:
        return {
            "distribution": self.distribution,
            "hash": self.hash.sri if self.hash else "",
            "requested": list(self.requested),
            "implied": list(self.implied),
            "packages": [
                {
                    "name": p.name,
                    "version": p.version,
                    "architecture": p.architecture,
                    "url": p.url,
                    "sha256": p.sha256,
                    "size": p.size,
                }
                for p in self.packages
            ],
        }


def read_pins(data: Mapping[str, Any] | None, where: Path) -> RootPins | None:
    """The pins of a committed record's ``[build-root]``, checked field by field (the file
    may have been edited by anyone), or None if it has none."""
    if not data or SECTION not in data:
        return None
    table = data[SECTION]
    problems: list[str] = []

    def fail(message: str) -> None:
        problems.append(message)

    if not isinstance(table, Mapping):
        raise BuildRootError(f"{where}: [{SECTION}] must be a table")
    distribution = table.get("distribution")
    if not isinstance(distribution, str) or distribution not in ARCHIVES:
        fail(f"distribution: expected one of {', '.join(sorted(ARCHIVES))}, got {distribution!r}")
    lists = {}
    for key in ("requested", "implied"):
        names = table.get(key, [])
        if not isinstance(names, list) or not all(
            isinstance(n, str) and _NAME.match(n) for n in names
        ):
            fail(f"{key}: expected a list of Debian package names")
            names = []
        lists[key] = tuple(names)
    declared = None
    if table.get("hash"):
        try:
            declared = Sha256.parse(str(table["hash"]))
        except LockboxError as error:
            fail(f"hash: {error}")
    packages = []
    for index, raw in enumerate(table.get("packages", [])):
        package = _read_package(raw, f"packages[{index}]", problems)
        if package is not None:
            packages.append(package)
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        fail("packages: a package is listed twice")
    if problems:
        raise BuildRootError(
            f"{where}: [{SECTION}] is not valid:\n"
            + "\n".join(f"  {problem}" for problem in problems)
            + "\nre-pin it with `lockbox lock-toolchain`"
        )
    return RootPins(
        str(distribution), lists["requested"], lists["implied"], tuple(sorted(packages)), declared
    )


def _read_package(raw: object, key: str, problems: list[str]) -> DebPackage | None:
    """The package a record's ``packages`` entry ``key`` pins, adding what is wrong with it to
    ``problems``; None if the entry has not even the fields of one."""
    if not isinstance(raw, Mapping):
        problems.append(f"{key}: expected a table")
        return None
    try:
        package = DebPackage(
            str(raw["name"]),
            str(raw["version"]),
            str(raw["architecture"]),
            str(raw["url"]),
            str(raw["sha256"]),
            int(raw["size"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        problems.append(f"{key}: missing or invalid {error}")
        return None
    for label, value, pattern in (
        ("name", package.name, _NAME),
        ("version", package.version, _VERSION),
        ("architecture", package.architecture, _ARCH),
        ("sha256", package.sha256, _SHA256),
    ):
        if not pattern.match(value):
            problems.append(f"{key}.{label}: {value!r} is not valid")
    if urllib.parse.urlsplit(package.url).scheme not in ("http", "https"):
        problems.append(f"{key}.url: {package.url!r} is not an http(s) URL")
    return package


# Pinning ----------------------------------------------------------------------------------------


def host_distribution() -> str:
    """The codename of the host's Debian release (``bookworm``), the default distribution."""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r'^VERSION_CODENAME="?([a-z]+)"?$', text, re.M)
    return match.group(1) if match else "bookworm"


class _Apt:
    """apt-get and apt-cache in a private state directory: their own sources (the
    distribution's archives, signed by Debian's keyring), an empty package database, no
    preferences or configuration of the host's."""

    def __init__(
        self, directory: Path, distribution: str, tools: Toolbox, progress: Progress
    ) -> None:
        environment = tools.environment
        if distribution not in ARCHIVES:
            raise BuildRootError(
                f"unknown distribution {distribution!r}: lockbox pins build "
                f"roots of {', '.join(sorted(ARCHIVES))}"
            )
        if not KEYRING.is_file():
            raise BuildRootError(
                f"{KEYRING} is missing: install debian-archive-keyring "
                "(apt-get install debian-archive-keyring)"
            )
        self.progress = progress
        self.search_path = environment.path()
        hint = "lockbox pins build roots with Debian's apt"
        self.apt_get = which("apt-get", hint, self.search_path)
        self.apt_cache = which("apt-cache", hint, self.search_path)
        for sub in (
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
        ):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "status").write_text("")
        stanzas = [
            f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
            f"Signed-By: {KEYRING}\n"
            for uri, suites in ARCHIVES[distribution]
        ]
        (directory / "etc/sources.list.d/lockbox.sources").write_text("\n".join(stanzas))
        architecture = tools.dpkg.architecture(progress) or "amd64"
        options = {
            "Dir::Etc": directory / "etc",
            "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": directory / "etc/sources.list.d",
            "Dir::Etc::Parts": directory / "etc/apt.conf.d",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": directory / "etc/preferences.d",
            "Dir::Etc::Trusted": "/dev/null",
            "Dir::Etc::TrustedParts": directory / "etc/trusted.gpg.d",
            "Dir::State": directory,
            "Dir::State::Lists": directory / "lists",
            "Dir::State::status": directory / "status",
            "Dir::Cache": directory / "cache",
            "APT::Architecture": architecture,
            "APT::Architectures::": architecture,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Debug::NoLocking": "true",
            "Acquire::ForceHash": "SHA256",
        }
        if os.getuid() != 0:
            options["APT::Sandbox::User"] = environment.get("USER", "nobody")
        self.options = [word for key, value in options.items() for word in ("-o", f"{key}={value}")]

    def get(self, *args: str) -> str:
        return self._run([self.apt_get, *self.options, *args])

    def cache(self, *args: str) -> str:
        return self._run([self.apt_cache, *self.options, *args])

    def _run(self, argv: Sequence[str | os.PathLike[str]]) -> str:
        try:
            return run(
                argv,
                env={"LC_ALL": "C.UTF-8", "PATH": self.search_path},
                progress=self.progress,
            ).stdout
        except ToolFailed as error:
            raise BuildRootError(
                f"apt failed while pinning the build root: "
                f"{(error.stderr or error.stdout).strip()[-2000:]}"
            ) from None


def resolve(
    packages: Iterable[str],
    distribution: str,
    interpreter: Interpreter | None,
    tools: Toolbox,
    progress: Progress = silent,
) -> RootPins:
    """What the archive offers today for the build root of ``packages``: every package of
    the closure, pinned (its ``hash`` is None: the root has not been made yet)."""
    named = tuple(dict.fromkeys(packages))
    for name in named:
        if not _NAME.match(name):
            raise BuildRootError(f"deps.toolchain.packages: {name!r} is not a Debian package name")
    implied = list(BASE_PACKAGES)
    if interpreter is not None:
        implied += interpreter_packages(interpreter)
    with tempfile.TemporaryDirectory(prefix="lockbox-apt-") as temporary:
        apt = _Apt(Path(temporary), distribution, tools, progress)
        progress.info(f"reading the package index of Debian {distribution}")
        apt.get("update", "-qq")
        essential = sorted(
            set(
                re.findall(
                    r"^Package: (\S+)\n(?:[^\n]+\n)*?Essential: yes$", apt.cache("dumpavail"), re.M
                )
            )
        )
        implied = [name for name in dict.fromkeys([*implied, *essential]) if name not in named]
        requested = [*named, *implied]
        progress.info(f"resolving the build root: {len(requested)} packages asked for")
        try:
            plan = apt.get("install", "--print-uris", "-qq", *requested)
        except BuildRootError as error:
            raise BuildRootError(
                f"{error}\n(is every name in deps.toolchain.packages a package "
                f"of Debian {distribution}? `apt-cache policy NAME` shows it)"
            ) from None
        simulated = apt.get("install", "-s", "-qq", *requested)
    versions = dict(re.findall(r"^Inst (\S+) \((\S+) ", simulated, re.M))
    pinned = []
    for line in plan.splitlines():
        match = re.match(r"^'([^']+)' (\S+) (\d+) SHA256:([0-9a-f]{64})$", line)
        if not match:
            continue
        url, file_name, size, digest = match.groups()
        name, _, rest = file_name.partition("_")
        architecture = rest.rsplit("_", 1)[-1].removesuffix(".deb")
        pinned.append(
            DebPackage(
                name,
                versions.get(name, rest.rsplit("_", 1)[0]),
                architecture,
                url,
                digest,
                int(size),
            )
        )
    if not pinned:
        raise BuildRootError("apt resolved no package for the build root")
    return RootPins(distribution, named, tuple(implied), tuple(sorted(pinned)))


def interpreter_packages(interpreter: Interpreter) -> list[str]:
    """The host packages that provide the shared libraries the interpreter's own ELF files
    need (``libssl3`` for ``_ssl``, ``libffi8`` for ``_ctypes``, …): the interpreter is
    mounted into the root and must find them there."""
    from lockbox.deps.toolchain import dpkg_names, package_owners
    from lockbox.native.hostlibs import files_needs
    from lockbox.native.resolve import host_libraries

    prefix = interpreter.prefix.resolve()
    elfs = [
        path
        for directory, _, names in fs.walk(prefix, skip_unreadable=True)
        for path in (Path(directory, name) for name in names)
        if (path.suffix == ".so" or ".so." in path.name or path.parent.name == "bin")
        and path.is_file()
        and not path.is_symlink()
    ]
    needed = files_needs(elfs)
    host = host_libraries()
    owners = package_owners()
    found = set()
    for soname in needed:
        path = host.get(soname)
        if path is None:
            continue
        for name in dpkg_names(str(path)):
            if name in owners:
                found.add(owners[name])
                break
    return sorted(found)


def changes(old: RootPins | None, new: RootPins) -> list[str]:
    """One line per package whose pin moved."""
    from lockbox.deps.inputs import version_changes

    return version_changes(old.versions() if old else {}, new.versions())


# Making -----------------------------------------------------------------------------------------


def deb_cache(environment: Environment) -> Path:
    """Where fetched ``.deb`` files are kept for every store of the user:
    ``$XDG_CACHE_HOME/lockbox/debs`` (``~/.cache/lockbox/debs``). Each is checked against
    its pinned SHA-256 whenever it is used, so a changed one is fetched again."""
    return environment.cache_home() / "lockbox" / "debs"


def ensure_root(
    store: Store,
    pins: RootPins,
    tools: Toolbox,
    progress: Progress = silent,
    *,
    project_dir: Path,
) -> Entry:
    """The build root of ``pins`` in ``store``: found by its pinned hash, or made from the
    pinned packages and checked against it. With no pinned hash (while pinning) the root
    made is registered under the hash it has."""
    from lockbox.deps.download import Download, download_all
    from lockbox.errors import DownloadGone, HashMismatch
    from lockbox.store.nar import nar_hash

    if pins.hash is not None:
        found = store.find_content("toolchain", pins.name, pins.hash)
        if found is not None:
            progress.info(f"build root {pins.hash} is in the store: {found.path}")
            return found
    debs = deb_cache(tools.environment)
    total = sum(p.size for p in pins.packages)
    progress.info(
        f"making the build root: {len(pins.packages)} Debian packages of "
        f"{pins.distribution}, {total / 1e6:.1f} MB"
    )
    try:
        files = download_all(
            [
                Download(
                    p.url,
                    p.sha256,
                    f"{p.sha256[:16]}-{p.file_name}",
                    p.size,
                    f"{p.name} {p.version}",
                )
                for p in pins.packages
            ],
            debs,
            progress,
        )
    except DownloadGone as gone:
        by_url = {p.url: p for p in pins.packages}
        raise PinnedPackagesGone(
            [
                by_url[item.url]
                for item in gone.items
                if isinstance(item, Download) and item.url in by_url
            ],
            project_dir,
        ) from None
    with store.staging() as stage:
        tree = stage / "root"
        _unpack(tree, [files[p.sha256] for p in pins.packages], debs, tools.sandbox, progress)
        _finish(tree)
        progress.info("hashing the build root")
        nar = nar_hash(tree)
        if pins.hash is not None and nar.sha256 != pins.hash:
            raise HashMismatch(
                "the build root",
                pins.hash.sri,
                nar.sha256.sri,
                None,
                "every package was checked against its pinned SHA-256, so the files are the "
                "pinned ones: unpacking them gave another tree (a different dpkg-deb or tar "
                "on this machine, or a lockbox defect). `lockbox lock-toolchain --dry-run` "
                "shows what the archive offers now",
            )
        entry = store.register(
            tree,
            name=pins.name,
            kind="toolchain",
            nar=nar,
            metadata={
                "distribution": pins.distribution,
                "packages": pins.versions(),
            },
        )
    progress.info(
        f"build root: {len(pins.packages)} packages, {entry.nar_size / 1e6:.0f} MB "
        f"as NAR, {entry.nar_hash}"
    )
    return entry


def _unpack(
    tree: Path, debs: Sequence[Path], directory: Path, sandbox: Sandbox, progress: Progress
) -> None:
    """Unpack ``debs`` into ``tree`` as dpkg would place their files (merged ``/usr``), with
    no maintainer script run, in the offline sandbox where only ``tree`` is writable."""
    tree.mkdir()
    for sub in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (tree / sub).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (tree / link).symlink_to(f"usr/{link}")
    target = Path("/lockbox/root")
    script = (
        'set -e; for deb in "$@"; do dpkg-deb --fsys-tarfile "$deb" | '
        "tar -x --keep-directory-symlink --no-same-owner --no-same-permissions "
        f'-C {target} || {{ echo "cannot unpack $deb" >&2; exit 1; }}; done'
    )
    inside = Path("/lockbox/debs")
    argv = ["sh", "-c", script, "sh", *[str(inside / deb.name) for deb in debs]]
    progress.info(f"unpacking {len(debs)} packages (no maintainer scripts)")
    try:
        run(
            sandbox.offline(
                argv,
                cwd=Path("/"),
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                writable=[(tree, target)],
                read_only=[(directory, inside)],
            ),
            progress=progress,
        )
    except ToolFailed as error:
        raise BuildRootError(
            f"unpacking the build root's packages failed: {error.stderr.strip()[-2000:]}"
        ) from None


def _finish(tree: Path) -> None:
    """What maintainer scripts would have made and builds rely on: ``cc``/``c++`` (the
    default alternatives), ``/etc/passwd`` and ``/etc/group`` (base-passwd's masters),
    the directories mounts are made on. Nothing is written through a link."""
    bin_dir = tree / "usr" / "bin"
    for alias, target in (("cc", "gcc"), ("c++", "g++")):
        alias_path = bin_dir / alias
        if not os.path.lexists(alias_path) and (bin_dir / target).exists():
            alias_path.symlink_to(target)
    etc = tree / "etc"
    etc.mkdir(exist_ok=True)
    masters = tree / "usr" / "share" / "base-passwd"
    for name in ("passwd", "group"):
        wanted = etc / name
        if not os.path.lexists(wanted) and (masters / f"{name}.master").is_file():
            shutil.copyfile(masters / f"{name}.master", wanted)
    for sub in ("tmp", "var/tmp", "run", "dev", "proc", "home", "root"):
        path = tree / sub
        if not os.path.lexists(path):
            path.mkdir(parents=True)


def root_libraries(root: Path) -> dict[str, Path]:
    """The shared libraries of a build root, as its loader finds them: soname → file,
    from the multiarch and the plain library directories, links followed inside the root
    only (an absolute link names a path of the root, not of the host)."""
    import sysconfig

    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    found: dict[str, Path] = {}
    for directory in (f"usr/lib/{multiarch}", "usr/lib", "usr/lib64"):
        try:
            names = sorted(os.listdir(root / directory))
        except OSError:
            continue
        for name in names:
            if ".so." not in name or name in found:
                continue
            target = _inside(root, root / directory / name)
            if target is not None and target.is_file():
                found[name] = target
    return found


def _inside(root: Path, path: Path) -> Path | None:
    """``path`` with every link resolved as the root's loader would see it, or None if it
    leads nowhere or loops."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
        path = (
            root / os.path.normpath(path.relative_to(root)) if path.is_relative_to(root) else path
        )
        if not Path(os.path.normpath(path)).is_relative_to(root):
            return None
    return None


SYSTEM = ("usr", "etc", "var", "bin", "sbin", "lib", "lib64", "lib32", "libx32")
"""The parts of a build root the sandbox mounts (:meth:`lockbox.tools.sandbox.Sandbox.wrap`)."""


def pinned_root(project: Project) -> RootPins | None:
    """The build root the project's recipe asks for, as ``lockbox.inputs.toml`` pins it;
    None if the recipe has no ``[deps.toolchain]``. An error names what to run when the
    pins are missing or no longer match the recipe."""
    from lockbox.deps.inputs import inputs_file, read_committed

    wanted = project.recipe.deps.toolchain
    if wanted is None:
        return None
    where = inputs_file(project)
    pins = read_pins(read_committed(project), where)
    fix = f"pin it with `lockbox lock-toolchain {project.root}`"
    if pins is None or pins.hash is None:
        raise BuildRootError(
            f"the recipe asks for a build root ([deps.toolchain]) but {where} pins none: {fix}"
        )
    distribution = wanted.distribution or pins.distribution
    if distribution != pins.distribution:
        raise BuildRootError(
            f"deps.toolchain.distribution is {distribution} but the build root "
            f"in {where} is of {pins.distribution}: {fix}"
        )
    missing = [name for name in wanted.packages if name not in pins.requested]
    extra = [name for name in pins.requested if name not in wanted.packages]
    if missing or extra:
        moved = [*(f"+ {name}" for name in missing), *(f"- {name}" for name in extra)]
        raise BuildRootError(
            f"deps.toolchain.packages changed since the build root in {where} "
            f"was pinned ({', '.join(moved)}): {fix}"
        )
    return pins
