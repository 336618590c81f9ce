"""A dependency's build backend is hostile: what it can reach while the dependency phase runs.

It has no network: not the host's loopback (a listener the test starts there), not even
name resolution.

The sdist's setup.py tries each attack while uv builds it, as root, and writes what happened
into the module it installs; the test reads the layer and the host afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from tests.packages import serve, write_sdist

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable

_SETUP = """\
import json, os, signal, socket, subprocess
from setuptools import setup

PLAN = json.loads({plan!r})
found = {{}}

def attempt(name, action):
    try:
        found[name] = ["done", repr(action())]
    except BaseException as error:
        found[name] = ["refused", type(error).__name__ + ": " + str(error)]

def write(path, text="written by a build"):
    with open(path, "a") as sink:
        sink.write(text)

attempt("host_file", lambda: write(PLAN["decoy"]))
attempt("store_entry", lambda: write(PLAN["entry_file"]))
attempt("store_root", lambda: write(PLAN["store"] + "/planted"))
attempt("store_database", lambda: write(PLAN["database"]))
attempt("store_database_inside", lambda: write("/tmp/lockbox-build/db.sqlite"))
attempt("store_database_wal", lambda: write(PLAN["database"] + "-wal"))
attempt("read_records", lambda: open(PLAN["records"] + "/record").read())
attempt("read_records_inside", lambda: open("/tmp/lockbox-build/shortcuts/record").read())
attempt("read_other_staging", lambda: open(PLAN["other_stage"] + "/secret").read())
attempt("read_other_staging_inside",
        lambda: open("/tmp/lockbox-build/tmp/" + PLAN["other_stage"][-32:] + "/secret").read())
attempt("signal_host", lambda: os.kill(PLAN["sleeper"], signal.SIGSTOP))
attempt("proc_root", lambda: write("/proc/%d/root%s" % (PLAN["sleeper"], PLAN["decoy"])))
attempt("remount", lambda: subprocess.run(["mount", "-o", "remount,rw", "/"], check=True,
                                          capture_output=True))
attempt("var_tmp_socket", lambda: socket.socket(socket.AF_UNIX).connect(PLAN["socket"]))
attempt("connect_host", lambda: socket.create_connection(("127.0.0.1", PLAN["port"]), timeout=5).close())
attempt("resolve_name", lambda: socket.getaddrinfo("pypi.org", 443))
with open("lbt_probe.py", "w") as module:
    module.write("FOUND = " + repr(json.dumps(found)) + "\\n")
setup(py_modules=["lbt_probe"])
"""


@dataclass(frozen=True)
class Attack:
    found: dict[str, list[str]]
    decoy: Path
    entry_file: Path
    database: Path
    sleeper: subprocess.Popen[bytes]
    store: Path
    connected: bool
    """Whether the host's TCP listener was ever connected to."""


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    root = tmp_path_factory.mktemp("hostile-build")
    store = root / "store"
    # An entry and a record the build must not be able to change or read.
    (root / "tree").mkdir()
    (root / "tree" / "file").write_text("registered")
    added = lockbox("store", "add", root / "tree", "--name", "victim", store=store)
    assert added.returncode == 0, added.stderr
    entry = Path(added.stdout.strip())
    (store / ".lockbox" / "shortcuts").mkdir(exist_ok=True)
    (store / ".lockbox" / "shortcuts" / "record").write_text("a record")
    other = store / ".lockbox" / "tmp" / ("0" * 32)
    decoy = root / "decoy"
    decoy.write_text("host file")
    sockets = Path("/var/tmp") / f"lockbox-test-{os.getpid()}"
    sockets.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sockets / "socket"))
    listener.listen()
    # A TCP listener on the host's loopback: the build has no network, not even this one.
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.setblocking(False)
    sleeper = subprocess.Popen(["sleep", "600"])
    plan = {
        "decoy": str(decoy),
        "entry_file": str(entry / "file"),
        "database": str(store / ".lockbox" / "db.sqlite"),
        "store": str(store),
        "records": str(store / ".lockbox" / "shortcuts"),
        "other_stage": str(other),
        "sleeper": sleeper.pid,
        "socket": str(sockets / "socket"),
        "port": tcp.getsockname()[1],
    }
    index = root / "index"
    index.mkdir()
    write_sdist(index, "lbt_probe", "1.0", {"setup.py": _SETUP.format(plan=json.dumps(plan))})
    try:
        with serve(index) as url:
            project = root / "app"
            project.mkdir()
            (project / "pyproject.toml").write_text(
                textwrap.dedent(f"""\
                [project]
                name = "app"
                version = "0.1.0"
                requires-python = ">=3.12"
                dependencies = ["lbt-probe"]

                [tool.uv]
                find-links = ["{url}"]

                [tool.lockbox]
                python = "3.12"
                """)
            )
            subprocess.run(
                ["uv", "lock", "--python", str(PYTHON)],
                cwd=project,
                check=True,
                capture_output=True,
                env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            )
            # Another build's staging area, as if one ran beside this one.
            other.mkdir(parents=True)
            (other / "secret").write_text("another build")
            pinned = lockbox("lock-build", project, store=store)
            assert pinned.returncode == 0, pinned.stderr
            # lock-build's discovery build keeps the network (docs/security.md): what it
            # reached does not count, the build's does.
            while True:
                try:
                    tcp.accept()[0].close()
                except BlockingIOError:
                    break
            built = lockbox("build", "--deps-only", project, store=store)
            assert built.returncode == 0, built.stderr
        layer = Path(built.stdout.strip())
        module = next(layer.glob("lib/python3.12/site-packages/lbt_probe.py"))
        namespace: dict[str, str] = {}
        exec(module.read_text(), namespace)
        try:
            tcp.accept()
            connected = True
        except BlockingIOError:
            connected = False
        yield Attack(
            json.loads(namespace["FOUND"]),
            decoy,
            entry / "file",
            store / ".lockbox" / "db.sqlite",
            sleeper,
            store,
            connected,
        )
    finally:
        sleeper.kill()
        listener.close()
        tcp.close()
        for child in sockets.iterdir():
            child.unlink()
        sockets.rmdir()


@pytest.mark.parametrize(
    "name",
    [
        "read_records",
        "read_records_inside",
        "read_other_staging",
        "read_other_staging_inside",
        "signal_host",
        "proc_root",
        "remount",
        "var_tmp_socket",
        "store_entry",
        "store_root",
        "connect_host",
        "resolve_name",
    ],
)
def test_the_build_cannot(attack: Attack, name: str) -> None:
    outcome, detail = attack.found[name]
    assert outcome == "refused", f"{name}: {detail}"


def test_the_build_has_no_network_at_all(attack: Attack) -> None:
    assert not attack.connected  # the host's listener never saw a connection
    # 127.0.0.1 is the sandbox's own loopback, where nothing listens.
    assert attack.found["connect_host"][1].startswith("ConnectionRefusedError")
    assert attack.found["resolve_name"][1].startswith("gaierror")


def test_what_it_wrote_reached_nothing_on_the_host(attack: Attack) -> None:
    # Writes into a fresh /tmp succeed and vanish with the sandbox; the rest are refused.
    assert not (attack.store / "planted").exists()
    assert attack.decoy.read_text() == "host file"
    assert attack.entry_file.read_text() == "registered"
    for path in attack.database.parent.glob("db.sqlite*"):
        assert b"written by a build" not in path.read_bytes()
    assert attack.sleeper.poll() is None
    with open(f"/proc/{attack.sleeper.pid}/stat") as stat:
        assert stat.read().split()[2] != "T"  # not stopped
    verified = lockbox("store", "verify", store=attack.store)
    assert verified.returncode == 0, verified.stdout + verified.stderr
