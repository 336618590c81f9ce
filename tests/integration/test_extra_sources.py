"""Extra sources: a package left out of uv.lock's install and fetched by URL or from git
instead, pinned by its own hash, built and installed into the layer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from lockbox.store.nar import nar_hash
from tests.packages import git_repository, pure_sdist_files, serve, write_sdist, write_wheel

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable
SITE = "lib/python3.12/site-packages"


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


def make_project(root: Path, url: str, sources: str) -> Path:
    root.mkdir()
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "extras-app"
        version = "1.0"
        requires-python = ">=3.12"
        dependencies = ["basewheel"]

        [tool.uv]
        find-links = ["{url}"]

        [tool.lockbox]
        python = "{PYTHON}"
        """)
        + textwrap.dedent(sources)
    )
    subprocess.run(
        ["uv", "lock", "--python", str(PYTHON)],
        cwd=root,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    return root


def test_url_and_git_sources_are_checked_and_installed(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    write_wheel(index, "basewheel", "1.0", {"basewheel.py": "X = 1\n"})
    sdist = write_sdist(index, "fromurl", "2.0", pure_sdist_files("fromurl", "URL = 'yes'\n"))
    file_hash = hashlib.sha256(sdist.read_bytes()).hexdigest()
    repo = git_repository(tmp_path / "repo", "fromgit", "3.0", "GIT = 'yes'\n")
    rev = subprocess.run(
        ["git", "-C", tmp_path / "repo", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    checkout = tmp_path / "checkout"
    shutil.copytree(tmp_path / "repo", checkout, ignore=shutil.ignore_patterns(".git"))
    tree_hash = nar_hash(checkout).sha256.sri
    with serve(index) as url:
        project = make_project(
            tmp_path / "app",
            url,
            f"""
            [[tool.lockbox.deps.extra-sources]]
            url = "{url}fromurl-2.0.tar.gz"
            hash = "sha256:{file_hash}"

            [[tool.lockbox.deps.extra-sources]]
            git = "{repo.removeprefix("git+")}"
            rev = "{rev}"
            hash = "{tree_hash}"
            """,
        )
        store = tmp_path / "store"
        # Their builds run offline: their build dependencies must be pinned and fetched.
        unpinned = lockbox("build", "--deps-only", project, store=store)
        assert unpinned.returncode == 1
        assert "the build dependency setuptools of from" in unpinned.stderr
        assert "was not fetched" in unpinned.stderr
        assert "lockbox lock-build" in unpinned.stderr
        pinned = lockbox("lock-build", project, store=store)
        assert pinned.returncode == 0, pinned.stderr
        assert "setuptools==" in (project / "pyproject.toml").read_text()
        result = lockbox("build", "--deps-only", project, store=store)
        assert result.returncode == 0, result.stderr
        assert "installing 2 extra sources" in result.stderr
        layer = Path(result.stdout.strip().splitlines()[-1])
        site = layer / SITE
        assert (site / "fromurl.py").read_text() == "URL = 'yes'\n"
        assert (site / "fromgit.py").read_text() == "GIT = 'yes'\n"
        for dist in ("fromurl-2.0.dist-info", "fromgit-3.0.dist-info"):
            assert (site / dist / "RECORD").is_file()
            assert not (site / dist / "direct_url.json").exists()  # it would name a path
        fetched = sorted(p.name.split("-", 1)[1] for p in (store / ".lockbox/sources").iterdir())
        assert fetched == ["fromurl-2.0.tar.gz", "repo"]

        # The same hash from another store: the layer does not depend on where it came from.
        again = lockbox("build", "--deps-only", project, store=tmp_path / "store2")
        assert again.returncode == 0, again.stderr
        assert (
            nar_hash(Path(again.stdout.strip().splitlines()[-1])).sha256 == nar_hash(layer).sha256
        )


def test_a_wrong_extra_source_hash_stops_the_build(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    write_wheel(index, "basewheel", "1.0", {"basewheel.py": "X = 1\n"})
    sdist = write_sdist(index, "fromurl", "2.0", pure_sdist_files("fromurl", "URL = 1\n"))
    actual = hashlib.sha256(sdist.read_bytes()).hexdigest()
    with serve(index) as url:
        project = make_project(
            tmp_path / "app",
            url,
            f"""
            [[tool.lockbox.deps.extra-sources]]
            url = "{url}fromurl-2.0.tar.gz"
            hash = "sha256:{"0" * 64}"
            """,
        )
        store = tmp_path / "store"
        result = lockbox("build", "--deps-only", project, store=store)
    assert result.returncode == 1
    assert f"hash mismatch in the extra source {url}fromurl-2.0.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr
    from lockbox.hashes import Sha256

    assert Sha256.parse(actual).sri in result.stderr
    listing = lockbox("store", "ls", "--json", store=store)
    assert json.loads(listing.stdout) == []
    assert not any((store / ".lockbox" / "sources").iterdir())
