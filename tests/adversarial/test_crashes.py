"""A command killed at any of its steps leaves a store that verifies, without debris.

Every step that makes something visible (a rename into place, a database commit) goes
through :func:`lockbox.fs.step`. Each test first runs a command with
``LOCKBOX_STEPS_LOG`` to learn its steps, then runs it again from the same starting store
with ``LOCKBOX_KILL_AFTER_STEP=k`` (SIGKILL at step k) and checks what is left: the store
verifies, no staging area, pending record or unregistered directory remains once it has
been opened, nothing outside the store changed, and running the command again succeeds with
the same result as an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.fs import remove_tree
from lockbox.store.store import Store
from tests.adversarial.test_store_ownership import listing
from tests.unit.test_store import make_tree

pytestmark = pytest.mark.integration

PROJECT = {
    "pyproject.toml": """\
        [project]
        name = "demo"
        version = "0.1.0"
        requires-python = ">=3.11"
        dependencies = []
        """,
    "uv.lock": """\
        version = 1
        revision = 3
        requires-python = ">=3.11"

        [[package]]
        name = "demo"
        version = "0.1.0"
        source = { virtual = "." }
        """,
}


def lockbox(
    store: Path,
    *args: str | Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def steps_of(
    store: Path, *args: str | Path, log: Path
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The names of the steps the command takes (in the lockbox process itself)."""
    log.unlink(missing_ok=True)
    result = lockbox(store, *args, env={"LOCKBOX_STEPS_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    first_pid = lines[0][0]
    return [name for pid, _index, name in lines if pid == first_pid], result


def sample(steps: list[str]) -> list[int]:
    """Deterministically, one step (1-based) of each kind (the step name's first word):
    the i-th kind's (i mod occurrences)-th occurrence, so repeated kinds are met at
    different entries."""
    kinds: dict[str, list[int]] = {}
    for index, name in enumerate(steps, 1):
        kinds.setdefault(name.split()[0], []).append(index)
    return sorted(found[number % len(found)] for number, found in enumerate(kinds.values()))


def registered(store: Path) -> dict[str, str]:
    with Store.open(store) as opened:
        return {entry.path_name: entry.nar_hash.sri for entry in opened.entries()}


def assert_clean_after_crash(store: Path) -> None:
    """What every kill must leave: a store that verifies, no debris once opened, and every
    reference of every entry registered."""
    verify = lockbox(store, "store", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "unknown" not in verify.stderr, verify.stderr
    meta = store / ".lockbox"
    assert sorted(os.listdir(meta / "tmp")) == []
    assert sorted(os.listdir(meta / "pending")) == []
    with Store.open(store) as opened:
        entries = {entry.path_name: entry for entry in opened.entries()}
        assert opened.unknown() == []
        for entry in entries.values():
            assert set(entry.references) <= set(entries), entry.path_name
        for name, target in opened.roots().items():
            assert target in entries, f"root {name} -> {target}"
    on_disk = {name for name in os.listdir(store) if name != ".lockbox"}
    assert on_disk == set(entries)


def copy_store(source: Path, target: Path) -> None:
    """A copy of a store: its metadata copied, its entries (never written, only unlinked)
    hardlinked, which is fast."""
    remove_tree(target)
    target.mkdir()
    for child in sorted(source.iterdir()):
        flags = "-a" if child.name == ".lockbox" else "-al"
        subprocess.run(["cp", flags, str(child), str(target / child.name)], check=True)
    os.chmod(target, source.stat().st_mode)


@dataclass(frozen=True)
class Stores:
    work: Path
    project: Path
    full: Path
    """A store after a complete build (at ``work/store``'s path, copied aside)."""
    base: Path
    """The same store holding only the interpreter entry (rooted): a build from it makes
    the dependency layer and the application."""

    @property
    def store(self) -> Path:
        return self.work / "store"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    work = tmp_path_factory.mktemp("crashes")
    project = work / "demo"
    for relative, content in PROJECT.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(textwrap.dedent(content))
    # Every store is used at one path, work/store, so that paths inside entries agree.
    store = work / "store"
    built = lockbox(store, "build", project)
    assert built.returncode == 0, built.stderr
    copy_store(store, work / "full")
    python = next(name for name in registered(store) if "-python-" in name)
    for command in (["store", "root", "py", python], ["store", "unroot", "demo"], ["gc"]):
        assert lockbox(store, *command).returncode == 0
    assert list(registered(store)) == [python]
    os.rename(store, work / "base")
    yield Stores(work, project, work / "full", work / "base")


def test_a_build_killed_at_any_step(stores: Stores) -> None:
    copy_store(stores.base, stores.store)
    steps, result = steps_of(stores.store, "build", stores.project, log=stores.work / "steps")
    expected_output = result.stdout
    expected = registered(stores.store)
    project = listing(stores.project)
    assert {"pending", "rename", "register", "settled", "root"} <= {s.split()[0] for s in steps}
    for k in sample(steps):
        copy_store(stores.base, stores.store)
        killed = lockbox(
            stores.store, "build", stores.project, env={"LOCKBOX_KILL_AFTER_STEP": str(k)}
        )
        assert killed.returncode == -9, f"step {k} ({steps[k - 1]}): {killed.stderr}"
        assert_clean_after_crash(stores.store)
        assert listing(stores.project) == project
        again = lockbox(stores.store, "build", stores.project)
        assert again.returncode == 0, f"after a kill at {steps[k - 1]}: {again.stderr}"
        assert again.stdout == expected_output
        assert registered(stores.store) == expected, f"after a kill at {steps[k - 1]}"


def test_gc_killed_at_every_step(stores: Stores) -> None:
    def unrooted() -> None:
        copy_store(stores.full, stores.store)
        assert lockbox(stores.store, "store", "unroot", "demo").returncode == 0

    unrooted()
    steps, _ = steps_of(stores.store, "gc", log=stores.work / "steps")
    assert registered(stores.store) == {}
    assert sum(step.startswith("unregister") for step in steps) == 3
    assert sum(step.startswith("remove") for step in steps) == 3
    for k in range(1, len(steps) + 1):
        unrooted()
        killed = lockbox(stores.store, "gc", env={"LOCKBOX_KILL_AFTER_STEP": str(k)})
        assert killed.returncode == -9, f"step {k} ({steps[k - 1]}): {killed.stderr}"
        assert_clean_after_crash(stores.store)
        again = lockbox(stores.store, "gc")
        assert again.returncode == 0, again.stderr
        assert registered(stores.store) == {}
        assert os.listdir(stores.store) == [".lockbox"]


def test_creating_a_store_and_adding_to_it_killed_at_every_step(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    outside = listing(tmp_path)
    store = tmp_path / "store"
    steps, added = steps_of(
        store,
        "store",
        "add",
        source,
        "--name",
        "demo",
        "--root",
        "keep",
        log=tmp_path.parent / f"{tmp_path.name}.steps",
    )
    expected = registered(store)
    assert steps[:2] == ["rename .lockbox", "create database"]
    for k in range(1, len(steps) + 1):
        remove_tree(store)
        killed = lockbox(
            store,
            "store",
            "add",
            source,
            "--name",
            "demo",
            "--root",
            "keep",
            env={"LOCKBOX_KILL_AFTER_STEP": str(k)},
        )
        assert killed.returncode == -9, f"step {k} ({steps[k - 1]}): {killed.stderr}"
        assert_clean_after_crash(store)
        again = lockbox(store, "store", "add", source, "--name", "demo", "--root", "keep")
        assert again.returncode == 0, f"after a kill at {steps[k - 1]}: {again.stderr}"
        assert again.stdout == added.stdout
        assert registered(store) == expected
        assert_clean_after_crash(store)
    remove_tree(store)
    assert listing(tmp_path) == outside


def test_a_killed_store_creation_leaves_an_empty_directory_usable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    killed = lockbox(store, "store", "ls", env={"LOCKBOX_KILL_AFTER_STEP": "1"})
    assert killed.returncode == -9
    assert [name.startswith(".lockbox-new-") for name in os.listdir(store)] == [True]
    assert lockbox(store, "store", "ls").returncode == 0
    assert os.listdir(store) == [".lockbox"]
