"""Killing ``lockbox export`` and ``lockbox image --layout`` at each of their steps.

Over an earlier export or layout, the target is at every instant the complete old tree or
the complete new one. What a killed run leaves beside the target (its locked work directory,
``.NAME.lockbox-TOKEN``) is removed by the next run to the same target; nothing else beside
it is, however much it looks like one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockbox.fs import KILL_AFTER_STEP, STEPS_LOG, remove_leftovers, work_beside


def lockbox(
    *args: str | Path, store: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def project(root: Path, marker: str) -> Path:
    """A project without dependencies whose application holds ``marker.txt``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = []\n\n[tool.lockbox]\npython = "3.12"\n\n'
        '[tool.lockbox.app]\nroot = ["marker.txt"]\n'
    )
    (root / "uv.lock").write_text(
        'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n\n[[package]]\nname = "demo"\n'
        'version = "0.1.0"\nsource = { virtual = "." }\n'
    )
    (root / "marker.txt").write_text(marker)
    return root


def snapshot(top: Path) -> dict[str, str]:
    """Every path below ``top`` with what it is: a directory, a link's target, a file's hash."""
    found = {}
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = Path(directory, name)
            relative = str(path.relative_to(top))
            if path.is_symlink():
                found[relative] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[relative] = "dir"
            else:
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("replace")
    old, new = project(root / "old" / "demo", "old\n"), project(root / "new" / "demo", "new\n")
    store = root / "store"
    built = lockbox("build", new, store=store)
    assert built.returncode == 0, built.stderr
    return old, new, store


def strangers(parent: Path, name: str) -> Iterator[Path]:
    """Things beside the target that resemble a work directory but are not a dead writer's."""
    notmine = parent / f".{name}.lockbox-notmine"
    notmine.mkdir()
    (notmine / "keep").write_text("keep")
    yield notmine
    other = parent / f".other.lockbox-{secrets.token_hex(16)}"
    other.mkdir()
    yield other
    elsewhere = parent.parent / f"elsewhere-{name}"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("keep")
    link = parent / f".{name}.lockbox-{secrets.token_hex(16)}"
    link.symlink_to(elsewhere)
    yield link
    yield elsewhere / "keep"
    longer = parent / f".{name}.lockbox-{secrets.token_hex(16)}0"
    longer.mkdir()
    yield longer


def kill_at_every_step(
    command: list[str | Path],
    target: Path,
    old: dict[str, str],
    restore: Path,
    store: Path,
    tmp_path: Path,
) -> dict[str, str]:
    """Run ``command`` once to count its steps, then kill it at each over the old tree;
    the target is always the old or the new tree. Returns the new tree's snapshot."""
    log = tmp_path / "steps"
    counted = lockbox(*command, store=store, env={STEPS_LOG: str(log)})
    assert counted.returncode == 0, counted.stderr
    new = snapshot(target)
    assert new != old
    steps = len(log.read_text().splitlines())
    assert steps >= 2
    for step in range(1, steps + 1):
        shutil.rmtree(target)
        shutil.copytree(restore, target, symlinks=True)
        killed = lockbox(*command, store=store, env={KILL_AFTER_STEP: str(step)})
        assert killed.returncode == -9, (step, killed.stderr)
        assert snapshot(target) in (old, new), f"killed at step {step}: neither old nor new"
    return new


def assert_clean_after_a_run(
    command: list[str | Path], target: Path, new: dict[str, str], store: Path
) -> None:
    parent = target.parent
    debris = [p for p in parent.iterdir() if p.name.startswith(f".{target.name}.lockbox-")]
    assert debris, "the kills left nothing to clear away"
    planted = list(strangers(parent, target.name))
    held = parent / f".{target.name}.lockbox-{secrets.token_hex(16)}"
    held.mkdir()
    descriptor = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # a writer that is alive
    try:
        done = lockbox(*command, store=store)
        assert done.returncode == 0, done.stderr
    finally:
        os.close(descriptor)
    assert snapshot(target) == new
    for path in planted + [held]:
        assert os.path.lexists(path), f"{path} was removed"
    assert (planted[0] / "keep").read_text() == "keep"
    left = sorted(p.name for p in parent.iterdir())
    assert left == sorted([target.name, *(p.name for p in planted + [held] if p.parent == parent)])


def test_a_killed_export_leaves_the_old_or_the_new_export(
    demo: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    old_project, new_project, store = demo
    target = tmp_path / "exports" / "demo"
    first = lockbox("export", old_project, "--to", target, store=store)
    assert first.returncode == 0, first.stderr
    old = snapshot(target)
    pristine = tmp_path / "pristine"
    shutil.copytree(target, pristine, symlinks=True)
    command: list[str | Path] = ["export", new_project, "--to", target]
    new = kill_at_every_step(command, target, old, pristine, store, tmp_path)
    assert new["marker.txt"] == hashlib.sha256(b"new\n").hexdigest()
    assert_clean_after_a_run(command, target, new, store)


def test_a_killed_image_leaves_the_old_or_the_new_layout(
    demo: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    old_project, new_project, store = demo
    target = tmp_path / "images" / "layout"
    first = lockbox("image", old_project, "--layout", target, store=store)
    assert first.returncode == 0, first.stderr
    old = snapshot(target)
    pristine = tmp_path / "pristine"
    shutil.copytree(target, pristine, symlinks=True)
    command: list[str | Path] = ["image", new_project, "--layout", target]
    new = kill_at_every_step(command, target, old, pristine, store, tmp_path)
    assert_clean_after_a_run(command, target, new, store)


def test_a_killed_archive_leaves_the_old_or_the_new_archive(
    demo: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    old_project, new_project, store = demo
    target = tmp_path / "archives" / "demo.tar"
    first = lockbox("image", old_project, "-o", target, store=store)
    assert first.returncode == 0, first.stderr
    old = hashlib.sha256(target.read_bytes()).hexdigest()
    log = tmp_path / "steps"
    command: list[str | Path] = ["image", new_project, "-o", target]
    assert lockbox(*command, store=store, env={STEPS_LOG: str(log)}).returncode == 0
    new = hashlib.sha256(target.read_bytes()).hexdigest()
    assert new != old
    for step in range(1, len(log.read_text().splitlines()) + 1):
        killed = lockbox(*command, store=store, env={KILL_AFTER_STEP: str(step)})
        assert killed.returncode == -9
        assert hashlib.sha256(target.read_bytes()).hexdigest() in (old, new)
    assert [p for p in target.parent.iterdir() if p.name.startswith(".demo.tar.lockbox-")]
    assert lockbox(*command, store=store).returncode == 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["demo.tar"]


def test_leftovers_are_removed_only_when_their_lock_is_free(tmp_path: Path) -> None:
    target = tmp_path / "target"
    with work_beside(target) as alive:
        (alive / "file").write_text("busy")
        assert remove_leftovers(target) == []
        assert (alive / "file").read_text() == "busy"
    assert not alive.exists()
    dead = tmp_path / f".target.lockbox-{secrets.token_hex(16)}"
    dead.mkdir()
    (dead / "sub").mkdir()
    (dead / "sub" / "file").write_text("x")
    os.chmod(dead / "sub", 0o500)
    assert remove_leftovers(target) == [dead]
    assert not dead.exists()


def test_a_killed_image_leaves_no_debris_among_the_kept_layers(
    demo: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, new_project, store = demo
    command: list[str | Path] = ["image", new_project, "-o", tmp_path / "x.tar"]

    def forget_kept_layers() -> None:
        for kept in (store / ".lockbox" / "derived").glob("*/layer-*"):
            kept.unlink()

    forget_kept_layers()
    log = tmp_path / "steps"
    assert lockbox(*command, store=store, env={STEPS_LOG: str(log)}).returncode == 0
    names = [line.split(maxsplit=2)[2] for line in log.read_text().splitlines()]
    keeping = next(n for n, name in enumerate(names, 1) if name.startswith("rename layer-"))
    forget_kept_layers()
    killed = lockbox(*command, store=store, env={KILL_AFTER_STEP: str(keeping)})
    assert killed.returncode == -9
    assert list((store / ".lockbox" / "derived").glob("*/.layer-*.lockbox-*"))
    assert lockbox(*command, store=store).returncode == 0
    assert not list((store / ".lockbox" / "derived").glob("*/.*"))
    assert list((store / ".lockbox" / "derived").glob("*/layer-*.blob"))
