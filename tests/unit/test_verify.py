"""Verification: which commands the recipe's [verify] table makes, in which order and where,
what the log keeps, and the first failure stopping the rest.

The checks run for real, on the host, against a small application tree whose
``bin/python`` is the interpreter running the tests; the runner stands for the sandbox
(how the assembly puts them in it is tested in test_assemble.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from lockbox.assemble.verify import verify
from lockbox.errors import ToolFailed, VerificationFailed
from lockbox.inputs.recipe import Verify
from lockbox.progress import Recorder
from lockbox.tools.run import run


class Runner:
    """Runs each check on the host, in the directory asked, with the application's PATH."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.ran: list[tuple[list[str], Path]] = []

    def __call__(self, argv: Sequence[str], cwd: Path) -> str:
        self.ran.append((list(argv), cwd))
        result = run(argv, cwd=cwd, env={"PATH": f"{self.out}/bin:/usr/bin:/bin"})
        return result.stdout + result.stderr


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An application tree: bin/python (the running interpreter) and a distribution."""
    out = tmp_path / "app"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = out / "lib" / version / "site-packages"
    (site / "demo").mkdir(parents=True)
    (site / "demo" / "__init__.py").write_text("")
    (site / "demo-1.0.dist-info").mkdir()
    (site / "demo-1.0.dist-info" / "METADATA").write_text("Name: demo\nVersion: 1.0\n")
    (site / "demo-1.0.dist-info" / "RECORD").write_text("demo/__init__.py,,\n")
    (out / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
    (out / "bin").mkdir()
    (out / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    return out


def test_imports_then_commands_run_in_the_application(out: Path, tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    log.write_text("verification of demo\n")
    runner, progress = Runner(out), Recorder()
    checks = Verify(
        imports=("demo", "json"), commands=(("python", "-c", "print('ran')"), ("sh", "-c", "pwd"))
    )

    done = verify(checks, out, log, runner, progress)

    python = str(out / "bin" / "python")
    assert [argv[:2] + argv[3:] for argv, _ in runner.ran[:2]] == [
        [python, "-c", "demo"],
        [python, "-c", "json"],
    ]
    assert [argv for argv, _ in runner.ran[2:]] == [
        ["python", "-c", "print('ran')"],
        ["sh", "-c", "pwd"],
    ]
    assert {cwd for _, cwd in runner.ran} == {out}
    assert [check.what for check in done] == [
        "import demo",
        "import json",
        "python -c print('ran')",
        "sh -c pwd",
    ]
    site = (
        out / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    # Each import says which distribution and file it found: the application's own.
    assert done[0].output == f"demo: demo 1.0, {site / 'demo' / '__init__.py'}\n"
    assert done[1].output.startswith("json: no distribution, /")
    assert done[3].output == f"{out}\n"
    assert ("info", f"  demo: demo 1.0, {site / 'demo' / '__init__.py'}") in progress.messages
    text = log.read_text()
    assert text.startswith("verification of demo\n$ import demo\ndemo: demo 1.0")
    assert "$ python -c print('ran')\nran\n$ sh -c pwd\n" in text


def test_the_first_failing_check_stops_verification(out: Path, tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    runner = Runner(out)
    failing = ("sh", "-c", "echo half done; echo broken >&2; exit 3")
    checks = Verify(imports=("json",), commands=(("true",), failing, ("touch", "ran-after")))

    with pytest.raises(VerificationFailed) as caught:
        verify(checks, out, log, runner)

    assert len(runner.ran) == 3
    assert not (out / "ran-after").exists()
    error = caught.value
    assert error.check == f"{' '.join(failing)} (exit code 3)"
    assert error.output == "half done\nbroken"
    assert error.log == log
    assert str(error).endswith(f"the whole log is at {log}; nothing was registered")
    assert log.read_text().endswith(f"$ {' '.join(failing)}\nhalf done\nbroken\n(exit code 3)\n")


def test_an_import_that_fails_names_the_module(out: Path, tmp_path: Path) -> None:
    runner = Runner(out)

    with pytest.raises(VerificationFailed) as caught:
        verify(Verify(imports=("json", "demo.missing", "os")), out, tmp_path / "log", runner)

    assert caught.value.check == "import demo.missing (exit code 1)"
    assert "ModuleNotFoundError: No module named 'demo.missing'" in caught.value.output
    assert len(runner.ran) == 2


def test_nothing_to_verify_runs_nothing(out: Path, tmp_path: Path) -> None:
    def never(argv: Sequence[str], cwd: Path) -> str:
        raise ToolFailed(list(argv), 1, "", "must not run")

    assert verify(Verify(), out, tmp_path / "log", never) == []
