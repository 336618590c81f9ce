"""Shared test fixtures."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
AUTHENTIK = FIXTURES / "authentik-2026.2.0rc1"
"""authentik's uv workspace definition (see its README): 254 locked packages."""


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., CliResult]:
    """Run ``lockbox`` in-process with a private store; return exit code and output."""
    store = tmp_path / "cli-store"

    def run(*argv: str | os.PathLike[str]) -> CliResult:
        capfd.readouterr()
        args = [os.fspath(a) for a in argv]
        if "--store" not in args:
            args = ["--store", str(store), *args]
        code = main(args)
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def make_project(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Write a minimal uv project (pyproject.toml, an empty-dependency uv.lock, extra files)."""

    def make(
        pyproject_extra: str = "", files: dict[str, str] | None = None, name: str = "demo"
    ) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        (root / "pyproject.toml").write_text(
            textwrap.dedent(
                f"""\
                [project]
                name = "{name}"
                version = "0.1.0"
                requires-python = ">=3.11"
                dependencies = []
                """
            )
            + textwrap.dedent(pyproject_extra)
        )
        (root / "uv.lock").write_text(
            textwrap.dedent(
                f"""\
                version = 1
                revision = 3
                requires-python = ">=3.11"

                [[package]]
                name = "{name}"
                version = "0.1.0"
                source = {{ virtual = "." }}
                """
            )
        )
        for relative, content in (files or {}).items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(content))
        return root

    yield make


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry on loopback with htpasswd auth (user lockbox, password s3cret)."""
    import base64
    import socket
    import time

    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", "lockbox", "s3cret"], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "htpasswd").write_text(htpasswd)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp_path / 'htpasswd'}\n"
    )
    server = subprocess.Popen(
        ["docker-registry", "serve", tmp_path / "config.yml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        host = f"127.0.0.1:{port}"
        auth = base64.b64encode(b"lockbox:s3cret").decode()
        (tmp_path / "auth.json").write_text(f'{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}')
        yield host, tmp_path / "auth.json"
    finally:
        server.terminate()
        server.wait(timeout=10)
