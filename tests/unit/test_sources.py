"""Extra sources: what fetching them names on disk, and git sources checked out, stripped of
``.git`` and checked against their declared hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockbox.deps.sources import _name, fetch
from lockbox.environment import Environment
from lockbox.errors import HashMismatch
from lockbox.hashes import Sha256
from lockbox.inputs.recipe import ExtraSource
from lockbox.tools.toolbox import Toolbox
from tests.fakes import FakeGit, FakeToolbox


@pytest.mark.parametrize(
    "url", ["https://host/x/..", "https://host/.", "https://host/", "https://host/a/%2e%2e"]
)
def test_an_extra_source_name_is_one_path_component(url: str) -> None:
    name = _name(ExtraSource(Sha256(bytes(32)), url=url))
    assert "/" not in name and name.strip(".")


def test_a_kept_source_that_changed_is_fetched_again(tmp_path: Path) -> None:
    import hashlib

    archive = tmp_path / "demo-1.0.tar.gz"
    archive.write_bytes(b"the real archive")
    source = ExtraSource(Sha256(hashlib.sha256(b"the real archive").digest()), url=archive.as_uri())
    kept = fetch(source, tmp_path / "sources", Toolbox(Environment()))
    assert kept.read_bytes() == b"the real archive"
    # A build's code, or anyone, changes the kept copy; the next use must not take it.
    kept.chmod(0o644)
    kept.write_bytes(b"planted")
    again = fetch(source, tmp_path / "sources", Toolbox(Environment()))
    assert again.read_bytes() == b"the real archive"
    # And a declared hash the origin no longer matches is an error, not the kept copy.
    archive.write_bytes(b"moved on")
    again.write_bytes(b"planted")
    with pytest.raises(HashMismatch):
        fetch(source, tmp_path / "sources", Toolbox(Environment()))


REPOSITORY = "https://git.example/opencontainers.git"
REV = "c" * 40
CHECKOUT = {"pyproject.toml": "[project]\nname = 'opencontainers'\n", "oci/__init__.py": "V = 1\n"}


def _tree_hash(directory: Path, files: dict[str, str]) -> Sha256:
    """The NAR hash of a tree holding ``files``: what the recipe declares for a checkout."""
    from lockbox.store.nar import nar_hash

    for relative, text in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text)
    return nar_hash(directory).sha256


def test_a_git_source_is_checked_out_at_its_revision_and_kept_without_git(tmp_path: Path) -> None:
    declared = _tree_hash(tmp_path / "expected", CHECKOUT)
    source = ExtraSource(declared, git=REPOSITORY, rev=REV)
    git = FakeGit(CHECKOUT)
    sources = tmp_path / "sources"

    found = fetch(source, sources, FakeToolbox(git=git))

    ((repository, rev, target),) = git.calls
    assert (repository, rev) == (REPOSITORY, REV)
    assert target.parent == sources and target.name.endswith("-opencontainers")
    assert found == sources / f"{declared.base32[:32]}-opencontainers"
    assert sorted(os.listdir(found)) == ["oci", "pyproject.toml"]  # no .git
    assert (found / "oci" / "__init__.py").read_text() == "V = 1\n"
    assert os.listdir(sources) == [found.name]  # the checkout was moved, not copied
    # Kept: the next use checks it again and asks git for nothing.
    assert fetch(source, sources, FakeToolbox()) == found


def test_a_git_source_with_another_hash_is_refused_and_not_kept(tmp_path: Path) -> None:
    got = _tree_hash(tmp_path / "expected", CHECKOUT)
    declared = Sha256(bytes(32))
    sources = tmp_path / "sources"

    with pytest.raises(HashMismatch) as caught:
        fetch(
            ExtraSource(declared, git=REPOSITORY, rev=REV),
            sources,
            FakeToolbox(git=FakeGit(CHECKOUT)),
        )

    assert caught.value.what == f"the extra source {REPOSITORY} at {REV}"
    assert (caught.value.specified, caught.value.got) == (declared.sri, got.sri)
    assert "without .git" in caught.value.fix
    assert os.listdir(sources) == []


def test_a_kept_git_source_that_changed_is_checked_out_again(tmp_path: Path) -> None:
    source = ExtraSource(_tree_hash(tmp_path / "expected", CHECKOUT), git=REPOSITORY, rev=REV)
    sources = tmp_path / "sources"
    found = fetch(source, sources, FakeToolbox(git=FakeGit(CHECKOUT)))
    (found / "oci" / "__init__.py").chmod(0o644)
    (found / "oci" / "__init__.py").write_text("planted = True\n")

    git = FakeGit(CHECKOUT)
    again = fetch(source, sources, FakeToolbox(git=git))

    assert len(git.calls) == 1
    assert again == found and (again / "oci" / "__init__.py").read_text() == "V = 1\n"
