"""Shared test fixtures."""

from __future__ import annotations

import os
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

    def make(pyproject_extra: str = "", files: dict[str, str] | None = None, name: str = "demo") -> Path:
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
