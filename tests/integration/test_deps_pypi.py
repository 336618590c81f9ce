"""The dependency phase on real PyPI packages: a manylinux wheel, a pure wheel, and a C
extension compiled from its PyPI sdist because the project says no-binary-package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter

pytestmark = pytest.mark.integration


def test_a_pypi_project_builds_into_a_working_layer(tmp_path: Path) -> None:
    python = find_interpreter("3.12", None).executable
    project = tmp_path / "web"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
        [project]
        name = "web"
        version = "1.0"
        requires-python = "==3.12.*"
        dependencies = ["six==1.17.0", "pyyaml==6.0.2", "markupsafe==3.0.2"]

        [tool.uv]
        no-binary-package = ["markupsafe"]
        """
        )
    )
    subprocess.run(
        ["uv", "lock", "--python", str(python)],
        cwd=project,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    # markupsafe is built offline: its build dependencies must be pinned to be fetched.
    pinned = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockbox",
            "--store",
            str(tmp_path / "store"),
            "lock-build",
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert pinned.returncode == 0, pinned.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockbox",
            "--store",
            str(tmp_path / "store"),
            "build",
            "--deps-only",
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "were already there" in result.stderr  # everything was fetched before the build
    assert "Building markupsafe==3.0.2" in result.stderr
    site = Path(result.stdout.strip()) / "lib" / "python3.12" / "site-packages"
    assert list((site / "markupsafe").glob("_speedups.cpython-312-*.so"))
    assert list((site / "yaml").glob("_yaml*.so")) or list(site.glob("_yaml/*.so"))
    check = subprocess.run(
        [
            python,
            "-c",
            f"import sys; sys.path.insert(0, {str(site)!r})\n"
            "import markupsafe, markupsafe._speedups, six, yaml\n"
            "assert str(markupsafe.escape('<a>')) == '&lt;a&gt;'\n"
            "print(yaml.safe_dump({'ok': six.PY3}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "ok: true"
    for path in site.rglob("*"):
        if path.is_file():
            assert str(tmp_path).encode() not in path.read_bytes(), path
