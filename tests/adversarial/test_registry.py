"""A hostile registry: one that answers everything with 200 and junk, one that never answers.

``lockbox image --push`` succeeds only when the registry then gives back, for the reference
pushed, the manifest lockbox wrote (the same sha256); a registry that does not answer stops
it within its timeout. A real registry (Debian's docker-registry) still takes a push.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    project = root / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = []\n\n[tool.lockbox]\npython = "3.12"\n'
    )
    (project / "uv.lock").write_text(
        'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n\n[[package]]\nname = "demo"\n'
        'version = "0.1.0"\nsource = { virtual = "." }\n'
    )
    store = root / "store"
    built = lockbox("image", project, "--layout", root / "layout", store=store)
    assert built.returncode == 0, built.stderr
    return project, store


class _Junk(http.server.BaseHTTPRequestHandler):
    """200 and the same junk for every request, whatever it is."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"junk, not a manifest\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def junk_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Junk)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_a_registry_answering_junk_does_not_make_the_push_succeed(
    demo: tuple[Path, Path], junk_registry: str
) -> None:
    project, store = demo
    result = lockbox(
        "image",
        project,
        "--push",
        f"{junk_registry}/team/demo:1",
        "--no-tls-verify",
        "--timeout",
        "60",
        store=store,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert junk_registry in result.stderr
    assert "@sha256:" not in result.stdout  # no digest reported as pushed


def test_a_registry_that_never_answers_is_given_up_on(
    demo: tuple[Path, Path], silent_registry: str
) -> None:
    project, store = demo
    started = time.monotonic()
    result = lockbox(
        "image",
        project,
        "--push",
        f"{silent_registry}/team/demo:1",
        "--no-tls-verify",
        "--timeout",
        "3",
        store=store,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "took longer than 3 s" in result.stderr and "--timeout" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 60


def test_a_bad_timeout_is_refused(demo: tuple[Path, Path]) -> None:
    project, store = demo
    result = lockbox("image", project, "--push", "127.0.0.1:1/x:1", "--timeout", "-1", store=store)
    assert result.returncode == 2 and "above 0" in result.stderr


def test_a_real_registry_takes_the_push_and_gives_it_back(
    demo: tuple[Path, Path], registry: tuple[str, Path]
) -> None:
    project, store = demo
    host, auth = registry
    result = lockbox(
        "-v",
        "image",
        project,
        "--push",
        f"{host}/team/demo:1",
        "--authfile",
        auth,
        "--no-tls-verify",
        store=store,
    )
    assert result.returncode == 0, result.stderr
    reference, _, digest = result.stdout.strip().rpartition("@")
    assert reference == f"{host}/team/demo:1" and digest.startswith("sha256:")
    assert "inspect --raw" in result.stderr  # the manifest was read back
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            auth,
            f"docker://{host}/team/demo:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    import hashlib

    assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == digest
