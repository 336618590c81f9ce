"""Planning real locks with real interpreters, checked against uv's own reading of the lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from lockbox.errors import InterpreterNotFound
from lockbox.inputs.interpreters import find_interpreter, probe
from tests.conftest import AUTHENTIK, CliResult

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gatekeeper"


def uv_export_names(project: Path, python: Path, tmp_path: Path) -> set[str]:
    """The packages `uv export` lists without the dev group, whose markers hold for ``python``."""
    copy = tmp_path / "export"
    shutil.copytree(project, copy)
    result = subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--format",
            "requirements-txt",
            "--python",
            str(python),
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"},
    )
    interpreter = probe(python)
    names = set()
    for line in result.stdout.splitlines():
        requirement, _, marker = line.partition(" ; ")
        if marker and not interpreter.evaluate(Marker(marker)):
            continue
        if requirement.startswith("-e "):
            name = (copy / requirement[3:]).resolve()
            pyproject = (name / "pyproject.toml").read_text()
            names.add(str(canonicalize_name(pyproject.split('name = "')[1].split('"')[0])))
        elif "==" in requirement:
            names.add(str(canonicalize_name(requirement.split("==")[0])))
        elif " @ " in requirement:
            names.add(str(canonicalize_name(requirement.split(" @ ")[0])))
    return names


@pytest.fixture(scope="module")
def authentik_plan() -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "lockbox", "plan", "--json", str(AUTHENTIK)],
        capture_output=True,
        text=True,
        check=True,
    )
    plan: dict[str, object] = json.loads(result.stdout)
    return plan


def test_authentik_plan_names_sources_and_builds(authentik_plan: dict[str, object]) -> None:
    installed = {p["name"]: p for p in authentik_plan["installed"]}  # type: ignore[attr-defined]
    by_form: dict[str, set[str]] = {}
    for name, planned in installed.items():
        by_form.setdefault(planned["form"], set()).add(name)
    assert authentik_plan["locked"] == 254
    assert by_form["sdist"] == {"gssapi", "lxml", "psycopg-c", "xmlsec"}
    assert installed["lxml"]["reason"] == "[tool.uv] no-binary-package"
    assert installed["xmlsec"]["reason"] == "[tool.uv] no-binary-package"
    assert by_form["git"] == {"opencontainers"}
    assert by_form["member"] == {
        "authentik",
        "ak-guardian",
        "django-channels-postgres",
        "django-dramatiq-postgres",
        "django-postgres-cache",
    }
    assert installed["psycopg"]["extras"] == ["c", "pool"]
    assert installed["django"]["file"].endswith("-py3-none-any.whl")
    assert installed["django"]["sha256"].startswith("sha256-")
    skipped = {s["name"]: s["reason"] for s in authentik_plan["skipped"]}  # type: ignore[attr-defined]
    assert skipped["pywin32"] == 'not for this platform (sys_platform == "win32")'
    assert skipped["py-ubjson"] == "only in dependency group 'dev'"
    assert len(installed) + len(skipped) == 254


def test_authentik_plan_installs_what_uv_would(
    authentik_plan: dict[str, object], tmp_path: Path
) -> None:
    python = Path(authentik_plan["interpreter"]["path"])  # type: ignore[index]
    planned = {p["name"] for p in authentik_plan["installed"]}  # type: ignore[attr-defined]
    assert planned == uv_export_names(AUTHENTIK, python, tmp_path)


def test_example_plan_is_printed_for_people(cli: Callable[..., CliResult]) -> None:
    result = cli("plan", EXAMPLE)
    assert result.code == 0, result.err
    assert "built from sdist: 4" in result.out
    assert "lxml" in result.out and "[tool.uv] no-binary-package" in result.out
    assert "workspace members: 3" in result.out
    assert "pytest" in result.out.split("left out:")[1]


def test_a_broken_lock_is_reported_with_its_line(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project)
    lock = project / "uv.lock"
    text = lock.read_text()
    lock.write_text(text.replace('{ registry = "https://pypi.org/simple" }', "{ }", 1))
    result = cli("plan", project)
    assert result.code == 1
    assert "Traceback" not in result.err
    line = text[: text.index('{ registry = "https://pypi.org/simple" }')].count("\n") + 1
    assert f"uv.lock:{line}: package[" in result.err
    assert "expected exactly one of registry, git" in result.err


def test_interpreters_are_found_by_version_and_requires_python() -> None:
    assert find_interpreter("3.12", None).version.release[:2] == (3, 12)
    newest = find_interpreter(None, ">=3.11,<3.13")
    assert newest.version.release[:2] == (3, 12)
    assert newest.abi == "cp312"
    with pytest.raises(InterpreterNotFound, match="no CPython on this machine matches"):
        find_interpreter("3.4", None)
    with pytest.raises(InterpreterNotFound, match="neither a version"):
        find_interpreter("three", None)


def test_an_interpreter_path_must_satisfy_requires_python() -> None:
    python = find_interpreter("3.12", None).executable
    assert find_interpreter(str(python), ">=3.12").executable == python
    with pytest.raises(InterpreterNotFound, match="but the project requires Python ==3.13"):
        find_interpreter(str(python), "==3.13.*")


def test_a_virtual_environment_is_not_an_install(tmp_path: Path) -> None:
    python = find_interpreter("3.12", None).executable
    subprocess.run([python, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    with pytest.raises(
        InterpreterNotFound,
        match="belongs to the virtual environment .*venv; give the Python it was made from",
    ):
        probe(tmp_path / "venv" / "bin" / "python")
