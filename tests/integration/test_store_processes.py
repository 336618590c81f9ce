"""The store under real processes: concurrent writers and writers killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockbox.store.nar import nar_hash
from lockbox.store.store import Store

pytestmark = pytest.mark.integration


def lockbox(store: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lockbox", "--store", str(store), *args]


def big_tree(root: Path, files: int = 1500, size: int = 16384) -> Path:
    for index in range(files):
        directory = root / f"d{index % 37:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:05d}.bin").write_bytes(os.urandom(size))
    return root


def test_concurrent_writers_of_the_same_entry_all_succeed(tmp_path: Path) -> None:
    source = big_tree(tmp_path / "tree", files=400)
    store = tmp_path / "store"
    processes = [
        subprocess.Popen(
            lockbox(store, "store", "add", str(source), "--name", "tree"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    codes = [process.returncode for process in processes]
    assert codes == [0, 0, 0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    with Store.open(store) as opened:
        entries = opened.entries()
        assert [str(e.path) for e in entries] == list(paths)
        assert opened.verify().ok
    assert entries[0].nar_hash == nar_hash(source).sha256


def test_sigkill_at_any_point_leaves_a_store_that_verifies(tmp_path: Path) -> None:
    source = big_tree(tmp_path / "tree")
    store = tmp_path / "store"
    subprocess.run(lockbox(store, "store", "ls"), check=True, capture_output=True)

    # Time one complete add in a scratch store to spread the kills over its duration.
    started = time.monotonic()
    subprocess.run(
        lockbox(tmp_path / "timing", "store", "add", str(source), "--name", "tree"),
        check=True,
        capture_output=True,
    )
    duration = time.monotonic() - started

    kills = 12
    interrupted = 0
    for attempt in range(kills):
        process = subprocess.Popen(
            lockbox(store, "store", "add", str(source), "--name", f"tree{attempt % 3}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * (attempt + 0.5) / kills)
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted += any(
            not p.name.endswith(".lock") for p in (store / ".lockbox" / "tmp").iterdir()
        )

        verify = subprocess.run(lockbox(store, "store", "verify"), capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
        # Opening the store (which verify did) removed every leftover.
        assert [p.name for p in (store / ".lockbox" / "tmp").iterdir()] == []
        with Store.open(store) as opened:
            registered = {e.path_name for e in opened.entries()}
        on_disk = {p.name for p in store.iterdir() if not p.name.startswith(".")}
        assert on_disk == registered

    assert interrupted >= 1, "no kill landed while an entry was being staged"

    # The store is still usable, and a complete add after all that gives the right content.
    done = subprocess.run(
        lockbox(store, "store", "add", str(source), "--name", "tree0"),
        capture_output=True,
        text=True,
        check=True,
    )
    with Store.open(store) as opened:
        entry = opened.resolve(done.stdout.strip())
        assert entry.nar_hash == nar_hash(source).sha256
        assert opened.verify().ok
