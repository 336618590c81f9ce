"""Acceptance: ``lockbox check`` with every variation on real PyPI packages at scale.

Long (every sdist compiled twice, the second time on one CPU through FUSE), so outside the
default run: ``./scripts/test -m acceptance -k check``.

- authentik's dependency layer (tests/fixtures/authentik-2026.2.0rc1: 178 packages from
  PyPI on CPython 3.13, lxml, xmlsec, psycopg-c and gssapi compiled from sdists);
- the bundled example, every part: layer, interpreter entry, bytecode, application.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.acceptance]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "authentik-2026.2.0rc1"
RECIPE = """

[tool.lockbox]
python = "3.13"

[tool.lockbox.deps]
# A git source on GitHub, which this machine cannot reach; it would come from elsewhere.
exclude = ["opencontainers"]
"""


def check(project: Path, store: Path, *args: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockbox",
            "--store",
            str(store),
            "check",
            "--json",
            *args,
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1)
    return report


def assert_identical(report: dict, kinds: list[str]) -> None:
    problems = [
        (e["kind"], e["error"], [d["path"] for d in e["differences"]][:20])
        for e in report["entries"]
        if not e["same"]
    ]
    assert report["ok"], problems
    assert [entry["kind"] for entry in report["entries"]] == kinds
    assert set(report["variations"]["skipped"]) <= {"cpus"}, report["variations"]


def test_authentik_dependency_layer_is_reproducible(tmp_path: Path) -> None:
    project = tmp_path / "authentik"
    shutil.copytree(FIXTURE, project)
    with open(project / "pyproject.toml", "a") as file:
        file.write(RECIPE)
    report = check(project, tmp_path / "store", "--deps-only")
    assert_identical(report, ["deps"])


def test_the_example_is_reproducible_in_every_part(tmp_path: Path) -> None:
    report = check(ROOT / "examples" / "gatekeeper", tmp_path / "store")
    assert_identical(report, ["deps", "python", "bytecode", "app"])
