"""The build root made from pinned .deb files: real dpkg-deb packages, served on loopback.

The packages are built here with ``dpkg-deb --build`` and served by a local HTTP server,
so these tests need no archive; what the Debian archive itself gives is exercised by the
example's build (tests/integration/test_example.py).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockbox.deps.buildroot import DebPackage, RootPins, changes, ensure_root, read_pins
from lockbox.environment import Environment
from lockbox.errors import BuildRootError, HashMismatch, PinnedPackagesGone
from lockbox.store.store import Store
from lockbox.tools.toolbox import Toolbox

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def own_deb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test fetches into a .deb cache of its own, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_deb(
    directory: Path,
    name: str,
    version: str,
    files: dict[str, str],
    links: dict[str, str] | None = None,
) -> Path:
    """A real .deb of ``files`` (path → text) and ``links`` (path → target)."""
    tree = directory / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: lockbox <lockbox@example.invalid>\nDescription: test package\n"
    )
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    for path, target in (links or {}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).symlink_to(target)
    deb = directory / f"{name}_{version}_amd64.deb"
    import subprocess

    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1"},
    )
    return deb


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP on 127.0.0.1: (base URL, directory)."""
    served = tmp_path / "archive"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def pin(deb: Path, base: str, name: str, version: str) -> DebPackage:
    data = deb.read_bytes()
    return DebPackage(
        name, version, "amd64", f"{base}/{deb.name}", hashlib.sha256(data).hexdigest(), len(data)
    )


def two_packages(archive: tuple[str, Path]) -> RootPins:
    base, served = archive
    first = make_deb(
        served,
        "alpha",
        "1.0-1",
        {
            "usr/include/alpha.h": "#define ALPHA 1\n",
            "usr/lib/x86_64-linux-gnu/libalpha.so.1": "elf",
        },
        {"usr/lib/x86_64-linux-gnu/libalpha.so": "libalpha.so.1"},
    )
    # Shipped under /lib: it must land in /usr/lib (merged /usr), not replace the link.
    second = make_deb(
        served,
        "beta",
        "2:2.0-3",
        {
            "lib/x86_64-linux-gnu/libbeta.so.2": "elf",
            "usr/share/base-passwd/passwd.master": "root:*:0:0:root:/root:/bin/sh\n",
            "usr/share/base-passwd/group.master": "root:*:0:\n",
        },
    )
    return RootPins(
        "bookworm",
        ("alpha",),
        ("beta",),
        (pin(first, base, "alpha", "1.0-1"), pin(second, base, "beta", "2:2.0-3")),
    )


def test_a_root_is_made_from_the_pinned_packages_without_their_scripts(
    tmp_path: Path, archive: tuple[str, Path]
) -> None:
    pins = two_packages(archive)
    tools = Toolbox(Environment.from_process())
    with Store.open(tmp_path / "store") as store:
        entry = ensure_root(store, pins, tools, project_dir=tmp_path)
        assert entry.kind == "toolchain"
        root = entry.path
        assert (root / "usr/include/alpha.h").read_text() == "#define ALPHA 1\n"
        assert os.readlink(root / "lib") == "usr/lib"
        assert (root / "usr/lib/x86_64-linux-gnu/libbeta.so.2").is_file()
        assert (root / "etc/passwd").read_text().startswith("root:")
        assert all((root / sub).is_dir() for sub in ("tmp", "dev", "proc", "run"))
        # Found again by its hash, without downloading or unpacking anything.
        pinned = RootPins(
            pins.distribution, pins.requested, pins.implied, pins.packages, entry.nar_hash
        )
        assert ensure_root(store, pinned, tools, project_dir=tmp_path).path == root
    # The same packages give the same root in another store: the hash is a pin.
    with Store.open(tmp_path / "other") as other:
        again = ensure_root(other, pinned, tools, project_dir=tmp_path)
        assert again.nar_hash == entry.nar_hash


def test_a_root_that_unpacks_to_another_hash_is_refused(
    tmp_path: Path, archive: tuple[str, Path]
) -> None:
    pins = two_packages(archive)
    wrong = RootPins(
        pins.distribution,
        pins.requested,
        pins.implied,
        pins.packages,
        read_pins(
            {"build-root": {"distribution": "bookworm", "hash": "sha256-" + "A" * 43 + "="}},
            tmp_path,
        ).hash,
    )
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(HashMismatch, match="build root"):
            ensure_root(store, wrong, Toolbox(Environment.from_process()), project_dir=tmp_path)
        assert not [e for e in store.entries() if e.kind == "toolchain"]


def test_packages_gone_from_the_archive_are_named_with_the_repin_command(
    tmp_path: Path, archive: tuple[str, Path]
) -> None:
    pins = two_packages(archive)
    _, served = archive
    for deb in served.glob("*.deb"):
        deb.unlink()
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(PinnedPackagesGone) as raised:
            ensure_root(
                store, pins, Toolbox(Environment.from_process()), project_dir=tmp_path / "proj"
            )
        assert not [e for e in store.entries() if e.kind == "toolchain"]
    message = str(raised.value)
    assert "no longer offers 2 packages" in message
    assert "alpha 1.0-1" in message and "beta 2:2.0-3" in message
    assert "not a lockbox failure" in message
    assert f"lockbox lock-toolchain {tmp_path / 'proj'}" in message


def test_a_package_whose_bytes_differ_from_the_pin_is_not_unpacked(
    tmp_path: Path, archive: tuple[str, Path]
) -> None:
    pins = two_packages(archive)
    _, served = archive
    first = served / "alpha_1.0-1_amd64.deb"
    first.write_bytes(first.read_bytes() + b"tampered")
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(Exception, match="alpha 1.0-1"):
            ensure_root(store, pins, Toolbox(Environment.from_process()), project_dir=tmp_path)
        assert not [e for e in store.entries() if e.kind == "toolchain"]


def test_pins_are_checked_field_by_field(tmp_path: Path) -> None:
    bad = {
        "build-root": {
            "distribution": "sid",
            "hash": "",
            "requested": ["ok", "Not OK"],
            "packages": [
                {
                    "name": "a",
                    "version": "1",
                    "architecture": "amd64",
                    "url": "file:///etc/passwd",
                    "sha256": "00",
                    "size": 1,
                }
            ],
        }
    }
    with pytest.raises(BuildRootError) as raised:
        read_pins(bad, tmp_path / "lockbox.inputs.toml")
    message = str(raised.value)
    for expected in (
        "distribution",
        "requested",
        "packages[0].sha256",
        "packages[0].url",
        "lockbox lock-toolchain",
    ):
        assert expected in message
    assert read_pins({}, tmp_path) is None


def test_changes_name_each_moved_version() -> None:
    def pins(**versions: str) -> RootPins:
        return RootPins(
            "bookworm",
            (),
            (),
            tuple(
                DebPackage(name, version, "amd64", f"http://x/{name}", "0" * 64, 1)
                for name, version in versions.items()
            ),
        )

    assert changes(pins(a="1", b="2", c="3"), pins(a="1", b="2.1", d="4")) == [
        "b 2 → 2.1",
        "- c 3",
        "+ d 4",
    ]
    assert changes(None, pins(a="1")) == ["+ a 1"]
