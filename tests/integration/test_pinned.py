"""Every input of the dependency layer pinned or recorded, drift explained, no stale answers.

Real uv, a loopback simple index serving a tiny PEP 517 build backend (so that a newer
release of it can appear between two builds and change what it builds), and a C extension
compiled against zlib's header for the toolchain cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_deps import PYTHON, lockbox
from tests.packages import serve, write_sdist, write_wheel

BACKEND = """
import base64, hashlib, os, zipfile
VERSION = "{version}"

def get_requires_for_build_wheel(config_settings=None):
    return ["tb-extra"]

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = open("NAME").read().split()
    files = {{f"{{name}}.py": f"BUILT_WITH = {{VERSION!r}}\\n"}}
    dist = f"{{name}}-{{version}}.dist-info"
    files[f"{{dist}}/METADATA"] = f"Metadata-Version: 2.1\\nName: {{name}}\\nVersion: {{version}}\\n"
    files[f"{{dist}}/WHEEL"] = ("Wheel-Version: 1.0\\nGenerator: tb\\nRoot-Is-Purelib: true\\n"
                               "Tag: py3-none-any\\n")
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{{path}},sha256={{digest.decode()}},{{len(text.encode())}}")
    files[f"{{dist}}/RECORD"] = "\\n".join(record + [f"{{dist}}/RECORD,,"]) + "\\n"
    wheel = f"{{name}}-{{version}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as archive:
        for path, text in sorted(files.items()):
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return wheel
"""


def write_backend(index: Path, version: str) -> None:
    write_wheel(index, "tb_backend", version, {"tb_backend.py": BACKEND.format(version=version)})


def write_thing(index: Path) -> None:
    """An sdist built by ``tb-backend``, which also asks for ``tb-extra`` dynamically."""
    import io
    import tarfile

    files = {
        "NAME": "tb_thing 1.0",
        "pyproject.toml": '[build-system]\nrequires = ["tb-backend"]\nbuild-backend = "tb_backend"\n'
        '[project]\nname = "tb-thing"\nversion = "1.0"\n',
        "PKG-INFO": "Metadata-Version: 2.1\nName: tb-thing\nVersion: 1.0\n",
    }
    with tarfile.open(index / "tb_thing-1.0.tar.gz", "w:gz") as archive:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"tb_thing-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    directory = tmp_path / "index"
    directory.mkdir()
    write_backend(directory, "1.0")
    write_wheel(directory, "tb_extra", "1.0", {"tb_extra.py": "X = 1\n"})
    write_wheel(directory, "tb_other", "1.0", {"tb_other.py": "X = 2\n"})
    write_thing(directory)
    with serve(directory) as url:
        yield directory, url + "simple/"


def make_app(root: Path, url: str, dependencies: str = '"tb-thing"', extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "app"
        version = "0"
        requires-python = ">=3.12"
        dependencies = [{dependencies}]

        [dependency-groups]
        dev = ["tb-other"]

        [tool.uv]
        package = false
        index-url = "{url}"

        [tool.lockbox]
        python = "3.12"
        """)
        + extra
        + "\n"
    )
    relock(root)
    return root


def relock(project: Path) -> None:
    subprocess.run(
        ["uv", "lock", "--python", str(PYTHON)],
        cwd=project,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )


def deps_hash(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stderr.split("deps hash: ")[1].split()[0]


def declare(project: Path, store: Path) -> str:
    result = lockbox("lock-hash", project, store=store)
    assert result.returncode == 0, result.stderr
    text = (project / "pyproject.toml").read_text()
    return text.split('hash = "')[1].split('"')[0]


def test_a_newer_build_backend_on_the_index_leaves_the_hash_unchanged(
    index: tuple[Path, str], tmp_path: Path
) -> None:
    directory, url = index
    project = make_app(tmp_path / "app", url)
    pinned = lockbox("lock-build", project, store=tmp_path / "s0")
    assert pinned.returncode == 0, pinned.stderr
    text = (project / "pyproject.toml").read_text()
    assert 'requirement = "tb-backend==1.0"' in text and "sha256:" in text
    assert 'name = "tb-extra"' in (project / "uv.lock").read_text()  # the dynamic one
    assert "tb-backend" in (project / "lockbox.inputs.toml").read_text()
    plan = lockbox("plan", project, store=tmp_path / "s0")
    assert plan.returncode == 0, plan.stderr
    assert "build dependencies of tb-thing, pinned in uv.lock: 2" in plan.stdout
    assert "tb-backend 1.0: sha256:" in plan.stdout and "tb-extra 1.0: sha256:" in plan.stdout
    before = deps_hash(lockbox("build", "--deps-only", project, store=tmp_path / "s1"))

    write_backend(directory, "2.0")  # builds differently, and is now the newest
    after = lockbox("build", "--deps-only", project, store=tmp_path / "s2")
    assert deps_hash(after) == before
    site = next(Path(after.stdout.strip()).glob("lib/python3.12/site-packages"))
    assert (site / "tb_thing.py").read_text() == "BUILT_WITH = '1.0'\n"

    # The same project without its pins does not build at all: builds are offline, and only
    # pinned build dependencies are fetched for them.
    unpinned = make_app(tmp_path / "unpinned", url)
    loose = lockbox("build", "--deps-only", unpinned, store=tmp_path / "s3")
    assert loose.returncode != 0
    assert "pins none of their build dependencies" in loose.stderr
    assert "lockbox lock-build" in loose.stderr and "Traceback" not in loose.stderr


def test_an_unpinned_build_dependency_is_an_error_naming_it(
    index: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = index
    project = make_app(tmp_path / "app", url)
    assert lockbox("lock-build", project, store=tmp_path / "s0").returncode == 0
    # Drop the pin of the dependency the backend asks for at build time.
    path = project / "pyproject.toml"
    lines = [line for line in path.read_text().splitlines() if "tb-extra==" not in line]
    path.write_text("\n".join(lines) + "\n")
    relock(project)
    result = lockbox("build", "--deps-only", project, store=tmp_path / "s1")
    assert result.returncode != 0
    assert "tb-extra" in result.stderr and "lockbox lock-build" in result.stderr
    assert "Traceback" not in result.stderr

    # A declared hash with no pins at all fails before building, naming the command.
    bare = make_app(
        tmp_path / "bare", url, extra='[tool.lockbox.deps]\nhash = "sha256-' + "A" * 43 + '="'
    )
    result = lockbox("build", "--deps-only", bare, store=tmp_path / "s2")
    assert result.returncode != 0
    assert "pins none of their build dependencies" in result.stderr
    assert "lockbox lock-build" in result.stderr


def test_a_replaced_build_dependency_artifact_is_refused(
    index: tuple[Path, str], tmp_path: Path
) -> None:
    directory, url = index
    project = make_app(tmp_path / "app", url)
    assert lockbox("lock-build", project, store=tmp_path / "s0").returncode == 0
    # The index now serves other bytes under the pinned backend's file name.
    tampered = BACKEND.replace("BUILT_WITH", "TAMPERED").format(version="1.0")
    write_wheel(directory, "tb_backend", "1.0", {"tb_backend.py": tampered})
    result = lockbox("build", "--deps-only", project, store=tmp_path / "s1")
    assert result.returncode != 0
    # Refused by the fetch step, before any build code runs: no file has the pinned hash.
    assert "lists no file of tb-backend with a pinned hash" in result.stderr
    assert "lockbox lock-build" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_changed_lock_under_an_unchanged_hash_is_never_answered_with_the_old_layer(
    index: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = index
    project = make_app(tmp_path / "app", url)
    store = tmp_path / "store"
    assert lockbox("lock-build", project, store=store).returncode == 0
    declared = declare(project, store)
    assert lockbox("build", "--deps-only", project, store=store).returncode == 0

    # A new dependency in uv.lock, deps.hash left alone, the old layer in the store.
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('dependencies = ["tb-thing"]', 'dependencies = ["tb-thing", "tb-other"]')
    )
    relock(project)
    result = lockbox("build", "--deps-only", project, store=store)
    assert result.returncode != 0
    assert "uv.lock: + tb-other 1.0" in result.stderr
    assert f"specified: {declared}" in result.stderr
    # Explained also from the committed record alone, in a store that holds nothing.
    fresh = lockbox("build", "--deps-only", project, store=tmp_path / "fresh")
    assert fresh.returncode != 0 and "uv.lock: + tb-other 1.0" in fresh.stderr

    # Back to the declared lock, but another dependency group selected: not the old answer.
    (project / "pyproject.toml").write_text(
        text.replace(f'hash = "{declared}"', f'hash = "{declared}"\ngroups = ["dev"]')
    )
    relock(project)
    result = lockbox("build", "--deps-only", project, store=store)
    assert result.returncode != 0
    assert "deps.groups" in result.stderr and "tb-other" in result.stderr

    # Unchanged inputs are still a lookup.
    (project / "pyproject.toml").write_text(text)
    relock(project)
    again = lockbox("build", "--deps-only", project, store=store)
    assert again.returncode == 0, again.stderr
    assert "is in the store" in again.stderr


ZLIB_FILES = {
    "setup.py": """\
        from setuptools import Extension, setup
        setup(packages=["zv"], package_dir={"": "src"},
              ext_modules=[Extension("zv._v", ["src/zv/_v.c"], libraries=["z"])])
        """,
    "src/zv/__init__.py": "from zv._v import version\n",
    "src/zv/_v.c": """\
        #include <Python.h>
        #include <zlib.h>
        static PyObject *version(PyObject *self, PyObject *unused) { return PyUnicode_FromString(ZLIB_VERSION); }
        static PyMethodDef methods[] = {{"version", version, METH_NOARGS, NULL}, {NULL}};
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_v", NULL, -1, methods};
        PyMODINIT_FUNC PyInit__v(void) { return PyModule_Create(&module); }
        """,
}


def test_a_changed_toolchain_package_is_named_in_the_mismatch(tmp_path: Path) -> None:
    """zlib.h mounted over with another ZLIB_VERSION, in a private mount namespace: the
    mismatch names zlib's -dev package, from the committed record, with no earlier layer
    in the store."""
    owner = subprocess.run(
        ["dpkg", "-S", "/usr/include/zlib.h"], capture_output=True, text=True, check=True
    ).stdout.split(":")[0]
    index = tmp_path / "index"
    index.mkdir()
    write_sdist(index, "zv", "1.0", ZLIB_FILES)
    with serve(index) as url:
        project = tmp_path / "app"
        project.mkdir()
        (project / "pyproject.toml").write_text(
            textwrap.dedent(f"""\
            [project]
            name = "app"
            version = "0"
            requires-python = ">=3.12"
            dependencies = ["zv"]

            [tool.uv]
            package = false
            find-links = ["{url}"]

            [tool.lockbox]
            python = "3.12"
            """)
        )
        relock(project)
        store = tmp_path / "store"
        assert lockbox("lock-build", project, store=store).returncode == 0
        declare(project, store)
        record = (project / "lockbox.inputs.toml").read_text()
        assert f"[toolchain.packages.{owner}]" in record or f"toolchain.packages.{owner}" in record

        header = tmp_path / "zlib.h"
        header.write_text(
            Path("/usr/include/zlib.h")
            .read_text()
            .replace('#define ZLIB_VERSION "', '#define ZLIB_VERSION "9.9.9-')
        )
        # The declared layer is in `store`, and a lookup there answers from it.
        assert "is in the store" in lockbox("build", "--deps-only", project, store=store).stderr

        def build_over_the_header(where: Path) -> subprocess.CompletedProcess[str]:
            command = (
                f"mount --bind {header} /usr/include/zlib.h && exec "
                f"{sys.executable} -m lockbox --store {where} build --deps-only {project}"
            )
            return subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
                capture_output=True,
                text=True,
            )

        for where in (tmp_path / "fresh", store):  # no earlier layer; the declared one
            result = build_over_the_header(where)
            assert result.returncode != 0, result.stderr
            assert "hash mismatch" in result.stderr
            assert owner in result.stderr and "/usr/include/zlib.h" in result.stderr
            assert "Traceback" not in result.stderr
        # Outside the namespace the header is the package's again: a lookup once more.
        assert "is in the store" in lockbox("build", "--deps-only", project, store=store).stderr
