"""``lockbox check`` on small projects from a loopback index: one whose every byte is
reproducible (a C extension compiled from an sdist, a wheel, the project's own package
with bytecode), and one with an sdist whose build writes the time into a module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from tests.packages import serve, write_sdist, write_wheel

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable

STEADY = {
    "setup.py": """\
        from setuptools import Extension, setup
        setup(packages=["steady"], package_dir={"": "src"},
              ext_modules=[Extension("steady._c", ["src/steady/_c.c", "src/steady/_d.c"])])
        """,
    "src/steady/__init__.py": "from steady._c import answer\n",
    "src/steady/_c.c": """\
        #include <Python.h>
        int twenty_one(void);
        static PyObject *answer(PyObject *self, PyObject *unused) {
            return PyLong_FromLong(2 * twenty_one());
        }
        static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL}};
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_c", NULL, -1, methods};
        PyMODINIT_FUNC PyInit__c(void) { return PyModule_Create(&module); }
        """,
    "src/steady/_d.c": "int twenty_one(void) { return 21; }\n",
}

# The build writes the time it runs at into the module: no two builds are alike.
STAMPED = {
    "setup.py": """\
        import time
        from setuptools import setup
        with open("stamped.py", "w") as module:
            module.write(f"BUILT = {time.strftime('%Y-%m-%d %H:%M:%S')!r}\\n")
        setup(py_modules=["stamped"])
        """,
    "stamped.py": "BUILT = None\n",
}


@dataclass(frozen=True)
class Projects:
    steady: Path
    stamped: Path
    store: Path


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


def make_project(root: Path, url: str, dependencies: list[str], imports: list[str]) -> Path:
    root.mkdir()
    (root / "checkapp").mkdir()
    (root / "checkapp" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "{root.name}"
        version = "1.0"
        requires-python = ">=3.12"
        dependencies = {json.dumps(dependencies)}

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["checkapp"]

        [tool.uv]
        find-links = ["{url}"]

        [tool.lockbox]
        python = "{PYTHON}"

        [tool.lockbox.app]
        compile-bytecode = true

        [tool.lockbox.verify]
        imports = {json.dumps(imports)}
        """)
    )
    subprocess.run(
        ["uv", "lock", "--python", str(PYTHON)],
        cwd=root,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    # Builds run offline from what is pinned: the sdists' build dependencies are pinned
    # first, as a user would commit them.
    pinned = lockbox("lock-build", root, store=root.parent / "pinning-store")
    assert pinned.returncode == 0, pinned.stderr
    return root


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Projects]:
    root = tmp_path_factory.mktemp("check")
    index = root / "index"
    index.mkdir()
    write_sdist(index, "steady", "1.0", STEADY)
    write_sdist(index, "stamped", "1.0", STAMPED)
    write_wheel(index, "plainwheel", "2.0", {"plainwheel.py": "X = 2\n"})
    with serve(index) as url:
        yield Projects(
            steady=make_project(
                root / "steady-app",
                url,
                ["steady", "plainwheel"],
                ["steady", "plainwheel", "checkapp"],
            ),
            stamped=make_project(
                root / "stamped-app", url, ["stamped", "plainwheel"], ["stamped", "checkapp"]
            ),
            store=root / "store",
        )


def store_listing(store: Path) -> list[str]:
    return sorted(path.name for path in store.iterdir())


def test_a_reproducible_project_passes_with_every_variation(projects: Projects) -> None:
    built = lockbox("build", projects.steady, store=projects.store)
    assert built.returncode == 0, built.stderr
    before = store_listing(projects.store)
    result = lockbox("check", projects.steady, "--json", store=projects.store)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["kept"] is None
    assert [entry["kind"] for entry in report["entries"]] == ["deps", "python", "bytecode", "app"]
    for entry in report["entries"]:
        assert entry["same"] and entry["rebuilt"]["hash"] == entry["registered"]["hash"], entry
        assert entry["rebuilt"]["path"] != entry["registered"]["path"]
    applied = set(report["variations"]["applied"])
    assert applied | set(report["variations"]["skipped"]) == {
        "build-path",
        "time",
        "umask",
        "tz",
        "locale",
        "hostname",
        "user",
        "env",
        "cpus",
        "file-order",
    }
    assert set(report["variations"]["skipped"]) <= {"cpus"}, report["variations"]
    # The sdist was really built again: uv said so in the rebuild's progress.
    assert "rebuild: uv: Built steady==1.0" in result.stderr
    # Nothing registered, nothing kept.
    assert store_listing(projects.store) == before
    assert not (projects.store / ".lockbox" / "checks").exists()


def test_a_build_that_embeds_the_time_is_caught(projects: Projects) -> None:
    built = lockbox("build", projects.stamped, store=projects.store)
    assert built.returncode == 0, built.stderr
    before = store_listing(projects.store)
    result = lockbox(
        "check", projects.stamped, "--no-vary", "file-order,user", store=projects.store
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "DIFFERENT  dependency layer stamped-app-deps" in out
    assert "identical  interpreter entry" in out
    assert "unchecked  application stamped-app: not rebuilt: its dependency layer differs" in out, (
        out
    )
    # The differing files, grouped under their distribution, with the module's diff.
    group = out.split("  stamped 1.0:\n", 1)[1].splitlines()[:2]
    assert group == [
        "    ~ lib/python3.12/site-packages/stamped-1.0.dist-info/RECORD (522 → 522 bytes)",
        "    ~ lib/python3.12/site-packages/stamped.py (30 → 30 bytes)",
    ]
    assert "plainwheel" not in out.split("files differ:", 1)[1]
    assert "-BUILT = '" in out and "+BUILT = '" in out
    kept = Path(out.split("the rebuilt trees are kept in ", 1)[1].split("\n", 1)[0])
    rebuilt = Path(out.split("  rebuilt    ", 1)[1].split("\n", 1)[0].split("  ", 1)[1])
    assert rebuilt.is_relative_to(kept)
    module = rebuilt / "lib/python3.12/site-packages/stamped.py"
    assert module.read_text().startswith("BUILT = '")
    assert (
        module.read_text()
        != (lockbox_path(projects, "deps") / "lib/python3.12/site-packages/stamped.py").read_text()
    )
    assert store_listing(projects.store) == before


def lockbox_path(projects: Projects, kind: str) -> Path:
    listing = lockbox("store", "ls", "--json", store=projects.store)
    entries = [
        e
        for e in json.loads(listing.stdout)
        if e["kind"] == kind and e["name"].startswith("stamped-app")
    ]
    return Path(entries[-1]["path"])


def test_check_json_reports_the_difference_by_distribution(projects: Projects) -> None:
    result = lockbox(
        "check", projects.stamped, "--json", "--no-vary", "file-order", store=projects.store
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    deps = report["entries"][0]
    assert deps["kind"] == "deps" and not deps["same"]
    changed = {d["path"]: d for d in deps["differences"]}
    module = changed["lib/python3.12/site-packages/stamped.py"]
    assert (module["change"], module["distribution"]) == ("changed", "stamped 1.0")
    assert "BUILT" in module["explanation"]
    assert "file-order" not in report["variations"]["applied"]
    assert Path(report["kept"]).is_dir()


def test_an_unknown_variation_is_a_clear_error(projects: Projects) -> None:
    result = lockbox("check", projects.steady, "--no-vary", "moon-phase", store=projects.store)
    assert result.returncode == 1
    assert "no variation named moon-phase; the variations are build-path" in result.stderr
    assert "Traceback" not in result.stderr
