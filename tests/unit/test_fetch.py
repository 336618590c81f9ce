"""The fetch step's git sources: checked out through the toolbox's git at the commit uv.lock
pins, and refused when the checkout is not that commit or has no such subdirectory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from lockbox.deps.fetch import FetchError, fetch_dependencies
from lockbox.inputs.lock import read_lock
from lockbox.inputs.plan import make_plan
from lockbox.inputs.project import load_project
from lockbox.store.store import Store
from tests.fakes import FakeGit, FakeToolbox, running_interpreter

COMMIT = "c" * 40
REPOSITORY = "https://git.example/oci"


def _lock(subdirectory: str) -> str:
    return textwrap.dedent(
        f"""\
        version = 1
        revision = 3
        requires-python = ">=3.11"

        [[package]]
        name = "demo"
        version = "0.1.0"
        source = {{ virtual = "." }}
        dependencies = [{{ name = "oci" }}]

        [[package]]
        name = "oci"
        version = "0.0.14"
        source = {{ git = "{REPOSITORY}?rev=v1&subdirectory={subdirectory}#{COMMIT}" }}
        """
    )


@pytest.fixture
def fetch(make_project: Callable[..., Path], tmp_path: Path) -> Callable[[FakeGit, str], Path]:
    """Fetch what the project's plan needs with ``git``; return its checkout of oci."""

    def fetch(git: FakeGit, subdirectory: str = "py") -> Path:
        root = make_project()
        (root / "uv.lock").write_text(_lock(subdirectory))
        project = load_project(root)
        plan = make_plan(project, read_lock(project.lock_path), running_interpreter())
        work = tmp_path / "work"
        work.mkdir()
        with Store.open(tmp_path / "store") as store:
            fetched = fetch_dependencies(project, plan, store, work, FakeToolbox(git=git))
        assert list((work / "links").iterdir()) == []  # nothing else to fetch
        return fetched.local["oci"]

    return fetch


def test_a_git_source_is_checked_out_at_the_locked_commit(
    fetch: Callable[..., Path], tmp_path: Path
) -> None:
    git = FakeGit({"py/pyproject.toml": "[project]\nname = 'oci'\n"})

    checkout = fetch(git)

    assert git.calls == [(REPOSITORY, COMMIT, tmp_path / "work" / "git" / "oci")]
    assert checkout == (tmp_path / "work" / "git" / "oci" / "py").resolve()


def test_a_checkout_of_another_commit_is_refused(fetch: Callable[..., Path]) -> None:
    with pytest.raises(FetchError, match=f"checked out as {'d' * 40}: uv.lock pins a full commit"):
        fetch(FakeGit({"py/pyproject.toml": ""}, commit="d" * 40))


@pytest.mark.parametrize("subdirectory", ["missing", "../.."])
def test_a_subdirectory_outside_or_not_in_the_checkout_is_refused(
    fetch: Callable[..., Path], subdirectory: str
) -> None:
    with pytest.raises(FetchError, match="is not a directory of"):
        fetch(FakeGit({"py/pyproject.toml": ""}), subdirectory)
