"""Garbage collection against commands that have the store open.

Every command holds the store's shared gc lock for as long as it has the store open, so gc
waits for it: an entry a build looked up stays until the build ends, and a scratch area a
command uses survives every other command that opens the store.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.errors import StoreError
from lockbox.store.store import Store
from tests.adversarial.test_crashes import PROJECT
from tests.unit.test_store import make_tree

pytestmark = pytest.mark.integration

HOLD = """\
import sys
from lockbox.store.store import Store
store = Store.open(__import__("pathlib").Path(sys.argv[1]))
entry = store.get(sys.argv[2])
print("open", flush=True)
sys.stdin.readline()
print(entry.path.exists(), flush=True)
store.close()
"""


def lockbox(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)]


def read_line(stream: object, timeout: float) -> str:
    """One line from a pipe, or "" if none comes within ``timeout`` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    ready = selector.select(timeout)
    selector.close()
    return stream.readline() if ready else ""  # type: ignore[attr-defined]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    """A store with one unrooted entry, and another process that has it open."""
    root = tmp_path / "store"
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), entry.path_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert read_line(process.stdout, 30) == "open\n"
    yield root, entry.path, process
    process.kill()
    process.wait()


def test_gc_waits_until_no_other_command_has_the_store_open(holder) -> None:  # type: ignore[no-untyped-def]
    root, entry, process = holder
    gc = subprocess.Popen(
        lockbox(root, "gc"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = read_line(gc.stderr, 30)
        assert "waiting for 1 other lockbox command using the store" in line, line
        time.sleep(0.5)
        assert gc.poll() is None and entry.exists()
    finally:
        assert process.stdin is not None
        process.stdin.write("\n")
        process.stdin.flush()
    assert read_line(process.stdout, 30) == "True\n"  # the entry it found stayed while it had it
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert f"removed {entry}" in out and not entry.exists()
    assert subprocess.run(lockbox(root, "store", "verify"), capture_output=True).returncode == 0


def test_gc_gives_up_after_its_timeout_with_a_message(holder) -> None:  # type: ignore[no-untyped-def]
    root, entry, _process = holder
    started = time.monotonic()
    gc = subprocess.run(
        lockbox(root, "gc", "--timeout", "0.5"), capture_output=True, text=True, timeout=60
    )
    assert gc.returncode == 1
    assert "still have the store" in gc.stderr and "Traceback" not in gc.stderr
    assert time.monotonic() - started < 20
    assert entry.exists()


def test_gc_through_a_second_store_of_the_same_process_is_refused_not_a_deadlock(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:
        entry = store.add_tree(make_tree(tmp_path / "src"), name="demo", kind="source")
        with Store.open(root) as collector, pytest.raises(StoreError, match="more than once"):
            collector.gc(timeout=5)
        assert entry.path.exists()
        assert store.gc(timeout=5).removed == (entry,)
        # Its shared lock is back: a collection elsewhere waits for it.
        other = subprocess.run(
            lockbox(root, "gc", "--timeout", "0.3"), capture_output=True, text=True, timeout=60
        )
        assert other.returncode == 1, other.stderr


def test_a_staging_area_survives_other_commands_opening_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store, store.staging() as scratch:
        (scratch / "layout").mkdir()
        (scratch / "layout" / "index.json").write_text("{}")
        for command in (["store", "ls"], ["store", "verify"], ["gc", "--timeout", "0.3"]):
            subprocess.run(lockbox(root, *command), capture_output=True, timeout=60)
        assert (scratch / "layout" / "index.json").read_text() == "{}"


# A build held between its lookups and its assembly --------------------------------------


@dataclass(frozen=True)
class Held:
    store: Path
    project: Path
    build: subprocess.CompletedProcess[str]
    gc: subprocess.CompletedProcess[str]
    gc_waited: bool


def wait_stopped(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not reach its stop step")


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Held:
    """Build a tiny project, stopped right after its interpreter entry is registered (the
    dependency layer too, neither rooted yet); collect garbage meanwhile; let it go on."""
    root = tmp_path_factory.mktemp("held")
    project = root / "demo"
    for relative, content in PROJECT.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(textwrap.dedent(content))
    store = root / "store"
    env = {**os.environ, "LOCKBOX_STOP_AT_STEP": "settled *-python-*"}
    build = subprocess.Popen(
        lockbox(store, "build", project),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_stopped(build.pid)
        gc = subprocess.Popen(
            lockbox(store, "gc"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        gc_waited = "waiting for" in read_line(gc.stderr, 60)
        time.sleep(0.5)
        gc_waited = gc_waited and gc.poll() is None
    finally:
        os.kill(build.pid, signal.SIGCONT)
    out, err = build.communicate(timeout=600)
    gc_out, gc_err = gc.communicate(timeout=600)
    return Held(
        store,
        project,
        subprocess.CompletedProcess(build.args, build.returncode, out, err),
        subprocess.CompletedProcess(gc.args, gc.returncode, gc_out, gc_err),
        gc_waited,
    )


def test_gc_during_a_build_waits_and_the_build_succeeds(held: Held) -> None:
    assert held.gc_waited
    assert held.build.returncode == 0, held.build.stderr
    assert held.gc.returncode == 0, held.gc.stderr
    app = Path(held.build.stdout.strip().splitlines()[-1])
    assert app.is_dir()
    ran = subprocess.run(
        [app / "bin" / "python", "-c", "print(6 * 7)"], capture_output=True, text=True, timeout=60
    )
    assert ran.stdout == "42\n", ran.stderr
    verify = subprocess.run(lockbox(held.store, "store", "verify"), capture_output=True, text=True)
    assert verify.returncode == 0 and "unknown" not in verify.stderr, verify.stderr


class SilentRegistry:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a push to it
    hangs with its layout written, until the pushing process is killed."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def test_the_push_scratch_survives_another_command_opening_the_store(held: Held) -> None:
    registry = SilentRegistry()
    tmp = held.store / ".lockbox" / "tmp"
    push = subprocess.Popen(
        lockbox(
            held.store,
            "image",
            held.project,
            "--push",
            f"docker://127.0.0.1:{registry.port}/demo:latest",
            "--no-tls-verify",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        layouts: list[Path] = []
        while not layouts and push.poll() is None and time.monotonic() < deadline:
            layouts = list(tmp.glob("*/layout/index.json"))
            time.sleep(0.1)
        assert layouts, push.communicate(timeout=5) if push.poll() is not None else "no layout"
        while registry.held == [] and time.monotonic() < deadline:  # skopeo is pushing
            time.sleep(0.1)
        listed = subprocess.run(
            lockbox(held.store, "store", "ls"), capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert layouts[0].is_file() and push.poll() is None
    finally:
        push.kill()
        push.wait()
        registry.close()
    # Its process is gone: the next open removes its staging area, and only that.
    verify = subprocess.run(lockbox(held.store, "store", "verify"), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert list(tmp.iterdir()) == []
