"""`lockbox lock-toolchain` against the real Debian archive, on a project with no sdist.

Pinning reads the archive's index and resolves a root (about 20 s); the root's .deb files
come from the user's cache when the example's build fetched them already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RECIPE = """
[tool.lockbox.deps.toolchain]
packages = ["zlib1g-dev"]
"""


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )


def test_pinning_shows_the_changes_then_writes_what_builds_use(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project(RECIPE)
    store = tmp_path / "store"
    before = (project / "pyproject.toml").read_text()

    unpinned = lockbox("build", "--deps-only", project, store=store)
    assert unpinned.returncode != 0
    assert "pins none" in unpinned.stderr and f"lockbox lock-toolchain {project}" in unpinned.stderr

    dry = lockbox("lock-toolchain", "--dry-run", project, store=store)
    assert dry.returncode == 0, dry.stderr
    assert "build root of Debian" in dry.stderr and "+ zlib1g-dev " in dry.stderr
    assert "deps.hash: (none) → sha256-" in dry.stderr and "nothing written" in dry.stderr
    assert not (project / "lockbox.inputs.toml").exists()
    assert (project / "pyproject.toml").read_text() == before

    pinned = lockbox("lock-toolchain", project, store=store)
    assert pinned.returncode == 0, pinned.stderr
    record = tomllib.loads((project / "lockbox.inputs.toml").read_text())
    root = record["build-root"]
    assert root["requested"] == ["zlib1g-dev"] and "gcc" in root["implied"]
    names = {package["name"] for package in root["packages"]}
    assert {"zlib1g-dev", "gcc-12", "libc6-dev", "dash"} <= names
    assert all(len(package["sha256"]) == 64 for package in root["packages"])
    assert record["toolchain"]["root"] == root["hash"]
    assert 'hash = "sha256-' in (project / "pyproject.toml").read_text()

    built = lockbox("build", "--deps-only", project, store=store)
    assert built.returncode == 0, built.stderr

    # The archive drops a pinned version: the message names it and the command that re-pins,
    # and tells it apart from a lockbox failure. (A fresh store: the root is made again.)
    text = (project / "lockbox.inputs.toml").read_text()
    zlib = next(p for p in root["packages"] if p["name"] == "zlib1g-dev")
    directory, _, name = zlib["url"].rpartition("/")
    gone = f"{directory}/lockbox-gone-{name}"
    # Another file (not in the user's cache of .deb files, which answers by hash) at a URL
    # the archive does not serve.
    (project / "lockbox.inputs.toml").write_text(
        text.replace(zlib["url"], gone).replace(zlib["sha256"], "0" * 64)
    )
    moved = lockbox("build", "--deps-only", project, store=tmp_path / "fresh")
    assert moved.returncode != 0
    assert "no longer offers 1 package" in moved.stderr and "zlib1g-dev" in moved.stderr
    assert "not a lockbox failure" in moved.stderr
    assert f"lockbox lock-toolchain {project}" in moved.stderr
    assert "Traceback" not in moved.stderr
    (project / "lockbox.inputs.toml").write_text(text)

    # The recipe asks for another package than was pinned: refused, with the fix.
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml")
        .read_text()
        .replace('"zlib1g-dev"', '"zlib1g-dev", "libffi-dev"')
    )
    changed = lockbox("build", "--deps-only", project, store=store)
    assert changed.returncode != 0
    assert "+ libffi-dev" in changed.stderr and "lockbox lock-toolchain" in changed.stderr
