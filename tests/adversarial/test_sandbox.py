"""Hostile verification: a recipe's ``[verify]`` commands and the code its imports run try
to reach out of the offline sandbox, as root builds run them.

Every attack aims at decoys this module makes (under a directory of its own in the real
``/var/tmp``, removed afterwards, and under ``tmp_path``) or at the test's own store; the
sandbox must leave each one as it was, the store must verify, and what verification
writes must not become part of the application.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from lockbox.store.nar import nar_hash
from tests.packages import serve, write_wheel

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable
SITE = "lib/python3.12/site-packages"


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


@dataclass(frozen=True)
class World:
    base: Path
    """The project, locked, with a dependency from a loopback index."""
    store: Path
    host: Path
    """A directory of this module's in the real /var/tmp: what a verification must not see."""
    libraries: Path
    """A library directory the recipe names: verification is not shown it."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sandbox")
    index = root / "index"
    index.mkdir()
    write_wheel(index, "sbxdep", "1.0", {"sbxdep.py": "VALUE = 1\n"})
    host = Path(tempfile.mkdtemp(prefix="lockbox-test-", dir="/var/tmp"))
    libraries = host / "libraries"
    libraries.mkdir()
    try:
        with serve(index) as url:
            base = root / "base"
            base.mkdir()
            (base / "sbxapp").mkdir()
            (base / "sbxapp" / "__init__.py").write_text("VALUE = 2\n")
            (base / "pyproject.toml").write_text(pyproject(url, libraries, [], []))
            subprocess.run(
                ["uv", "lock", "--python", str(PYTHON)],
                cwd=base,
                check=True,
                capture_output=True,
                env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            )
            store = root / "store"
            built = lockbox("build", base, store=store)
            assert built.returncode == 0, built.stderr
            yield World(base, store, host, libraries)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def pyproject(url: str, libraries: Path, imports: list[str], commands: list[list[str]]) -> str:
    return textwrap.dedent(f"""\
        [project]
        name = "sbxapp"
        version = "1.0"
        requires-python = ">=3.12"
        dependencies = ["sbxdep"]

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["sbxapp"]

        [tool.uv]
        find-links = ["{url}"]

        [tool.lockbox]
        python = "{PYTHON}"

        [tool.lockbox.libraries]
        paths = ["{libraries}"]

        [tool.lockbox.verify]
        imports = {json.dumps(imports)}
        commands = {json.dumps(commands)}
        """)


def variant(
    world: World,
    tmp_path: Path,
    script: str,
    *,
    imports: tuple[str, ...] = (),
    package: str = "VALUE = 2\n",
    commands: list[list[str]] | None = None,
) -> Path:
    """A copy of the project whose verification imports ``imports`` and runs ``script``
    with ``sh`` (or runs ``commands``), its package being ``package``."""
    project = tmp_path / "sbxapp"
    shutil.copytree(world.base, project, ignore=shutil.ignore_patterns(".venv"))
    (project / "sbxapp" / "__init__.py").write_text(package)
    text = (world.base / "pyproject.toml").read_text()
    head, _ = text.split("[tool.lockbox.verify]", 1)
    (project / "pyproject.toml").write_text(
        head
        + "[tool.lockbox.verify]\n"
        + f"imports = {json.dumps(list(imports))}\n"
        + f"commands = {json.dumps(commands or [['sh', '-c', script]])}\n"
    )
    return project


def entries(world: World, kind: str) -> list[dict[str, str]]:
    listing = lockbox("store", "ls", "--json", store=world.store)
    assert listing.returncode == 0, listing.stderr
    return [e for e in json.loads(listing.stdout) if e["kind"] == kind]


def app_path(built: subprocess.CompletedProcess[str]) -> Path:
    """The application a build made: its last line of output."""
    return Path(built.stdout.strip().splitlines()[-1])


def assert_store_verifies(world: World) -> None:
    checked = lockbox("store", "verify", store=world.store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def build(world: World, project: Path) -> subprocess.CompletedProcess[str]:
    return lockbox("build", project, store=world.store)


def test_remounting_the_root_read_write_writes_nothing_on_the_host(
    world: World, tmp_path: Path
) -> None:
    decoy = world.host / "remount-decoy"
    decoy.write_text("original\n")
    python = Path(entries(world, "python")[0]["path"])
    script = (
        f"mount -o remount,rw / ; echo pwned > {decoy} ; "
        f"mount -o remount,bind,rw {python} ; echo pwned > {python}/planted ; exit 0"
    )
    built = build(world, variant(world, tmp_path, script))
    assert built.returncode == 0, built.stderr
    assert decoy.read_text() == "original\n"
    assert not (python / "planted").exists()
    assert_store_verifies(world)


def test_the_host_root_is_not_reachable_through_proc(world: World, tmp_path: Path) -> None:
    decoy = world.host / "proc-decoy"
    decoy.write_text("original\n")
    target = f"/proc/{os.getpid()}/root{decoy}"
    planted = world.host / "proc-planted"
    script = (
        f"echo pwned > {target} ; echo pwned > /proc/{os.getpid()}/root{planted} ; "
        f"echo pwned > /proc/1/root{decoy} ; exit 0"
    )
    built = build(world, variant(world, tmp_path, script))
    assert built.returncode == 0, built.stderr
    assert decoy.read_text() == "original\n"
    assert not planted.exists()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_host_processes_cannot_be_seen_or_signalled(world: World, tmp_path: Path) -> None:
    helper = subprocess.Popen(["sleep", "600"])
    try:
        seen = world.host / "signal-seen"
        script = (
            f"kill -STOP {helper.pid} ; kill -0 {helper.pid} && touch {seen} ; "
            f"[ -e /proc/{helper.pid} ] && touch {seen} ; exit 0"
        )
        built = build(world, variant(world, tmp_path, script))
        assert built.returncode == 0, built.stderr
        assert helper.poll() is None
        assert _state(helper.pid) != "T"
        log = (world.store / ".lockbox" / "logs" / f"{app_path(built).name}.log").read_text()
        assert not seen.exists(), log
    finally:
        helper.send_signal(signal.SIGCONT)
        helper.kill()
        helper.wait()


@pytest.fixture
def listeners(world: World) -> Iterator[tuple[list[Path], list[bytes]]]:
    """Unix sockets, writable by anyone, listening in the module's /var/tmp directory and
    directly in /var/tmp; what connects to them is recorded."""
    paths = [
        world.host / "listener.sock",
        Path(tempfile.mktemp(prefix="lockbox-test-", suffix=".sock", dir="/var/tmp")),
    ]
    received: list[bytes] = []
    servers = []
    for path in paths:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.fspath(path))
        os.chmod(path, 0o777)
        server.listen()
        server.settimeout(0.2)
        servers.append(server)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for server in servers:
                try:
                    connection, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                with connection:
                    received.append(connection.recv(100) or b"connected")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield paths, received
    finally:
        stop.set()
        thread.join()
        for server, path in zip(servers, paths, strict=False):
            server.close()
            path.unlink(missing_ok=True)


def test_host_unix_sockets_are_out_of_reach(
    world: World, tmp_path: Path, listeners: tuple[list[Path], list[bytes]]
) -> None:
    paths, received = listeners
    connect = (
        "import socket, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX); s.connect(path); s.send(b'pwned')\n"
        "    except OSError as e:\n"
        "        print(path, e)\n"
    )
    project = variant(world, tmp_path, "", commands=[["python", "-c", connect, *map(str, paths)]])
    built = build(world, project)
    assert built.returncode == 0, built.stderr
    time.sleep(0.5)
    assert received == []


def test_the_dependency_layer_cannot_be_changed_through_the_application(
    world: World, tmp_path: Path
) -> None:
    deps = Path(entries(world, "deps")[0]["path"])
    python = Path(entries(world, "python")[0]["path"])
    module = deps / SITE / "sbxdep.py"
    before = nar_hash(deps).sha256.sri, nar_hash(python).sha256.sri
    through = f"$VIRTUAL_ENV/{SITE}/sbxdep.py"
    script = (
        f"chmod u+w {through} ; echo 'VALUE = 666' >> {through} ; "
        f"chmod u+w $VIRTUAL_ENV/python/bin/* ; "
        f"for f in $VIRTUAL_ENV/python/bin/*; do echo pwned >> $f ; done ; exit 0"
    )
    built = build(world, variant(world, tmp_path, script))
    assert built.returncode == 0, built.stderr
    assert module.read_text() == "VALUE = 1\n"
    assert (nar_hash(deps).sha256.sri, nar_hash(python).sha256.sri) == before
    assert_store_verifies(world)


def test_what_verification_writes_is_not_part_of_the_entry(world: World, tmp_path: Path) -> None:
    package = (
        "import os, sys\n"
        "for name in ('planted-by-import', 'lib/planted-by-import'):\n"
        "    try:\n"
        "        open(os.path.join(sys.prefix, name), 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
        "VALUE = 3\n"
    )
    script = (
        "echo x > $VIRTUAL_ENV/planted ; mkdir $VIRTUAL_ENV/planted-dir ; "
        "echo x > $VIRTUAL_ENV/bin/planted ; exit 0"
    )
    built = build(world, variant(world, tmp_path, script, imports=("sbxapp",), package=package))
    assert built.returncode == 0, built.stderr
    app = app_path(built)
    assert (app / "bin" / "python").exists()
    planted = sorted(str(p.relative_to(app)) for p in app.rglob("*planted*"))
    assert planted == []
    assert_store_verifies(world)


def test_root_only_files_cannot_be_read(world: World, tmp_path: Path) -> None:
    secret = world.libraries / "secret"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    # /etc/shadow is shown (all of /etc is): only the user verification runs as keeps it
    # unreadable.
    shadow = Path("/etc/shadow")
    assert shadow.exists() and not shadow.stat().st_mode & 0o004
    script = (
        f"[ -e {shadow} ] || exit 5 ; "
        + " ; ".join(
            f"if cat {path} >/dev/null 2>&1; then echo read {path}; exit 1; fi"
            for path in (secret, shadow, f"/proc/{os.getpid()}/root{secret}")
        )
        + " ; exit 0"
    )
    built = build(world, variant(world, tmp_path, script))
    assert built.returncode == 0, built.stderr


def test_a_hostile_failing_verification_registers_nothing(world: World, tmp_path: Path) -> None:
    before = [e["path"] for e in entries(world, "app")]
    script = (
        "echo x > $VIRTUAL_ENV/planted ; "
        f"chmod u+w $VIRTUAL_ENV/{SITE}/sbxdep.py ; "
        f"echo 'VALUE = 666' >> $VIRTUAL_ENV/{SITE}/sbxdep.py ; exit 3"
    )
    built = build(world, variant(world, tmp_path, script))
    assert built.returncode != 0
    assert "verification failed: sh -c" in built.stderr and "(exit code 3)" in built.stderr
    assert "nothing was registered" in built.stderr and "Traceback" not in built.stderr
    assert [e["path"] for e in entries(world, "app")] == before
    deps = Path(entries(world, "deps")[0]["path"])
    assert (deps / SITE / "sbxdep.py").read_text() == "VALUE = 1\n"
    assert_store_verifies(world)


def test_an_export_is_verified_read_only_too(world: World, tmp_path: Path) -> None:
    script = "echo x > $VIRTUAL_ENV/planted ; python -c 'import sbxdep'"
    target = tmp_path / "exported"
    exported = lockbox(
        "export", variant(world, tmp_path, script), "--to", target, store=world.store
    )
    assert exported.returncode == 0, exported.stderr
    assert not (target / "planted").exists()
    assert_store_verifies(world)
