"""Real distributions, a package index on loopback and a git repository, made by tests.

Wheels are written directly (a wheel is a zip with metadata); sdists are tarballs of
setuptools projects that uv builds for real, compiling their C code against system
libraries. The index is a plain HTTP directory listing on 127.0.0.1, which uv reads as
a ``find-links`` page.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import re
import subprocess
import tarfile
import textwrap
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    files: Mapping[str, str | bytes],
    requires: tuple[str, ...] = (),
) -> Path:
    """A wheel ``name-version-py3-none-any.whl`` holding ``files`` (text or bytes)."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    contents = {
        **files,
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in contents.items():
        data = text if isinstance(text, bytes) else text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in contents.items():
            archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), text)
    return path


def _setuptools_pyproject(name: str, version: str) -> str:
    return textwrap.dedent(
        f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "{version}"
        """
    )


def write_sdist(directory: Path, name: str, version: str, files: Mapping[str, str]) -> Path:
    """An sdist ``name-version.tar.gz`` of a setuptools project made of ``files``."""
    base = f"{name}-{version}"
    contents = {
        "pyproject.toml": _setuptools_pyproject(name, version),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        **{path: textwrap.dedent(text) for path, text in files.items()},
    }
    path = directory / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member, text in sorted(contents.items()):
            data = text if isinstance(text, bytes) else text.encode()
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


# A C extension that links zlib, bakes the directory it was built in into a string (as
# real packages do with getcwd()), and reports a macro the recipe's per-package CFLAGS sets.
CEXT_FILES = {
    "setup.py": """\
        import os
        import subprocess
        from setuptools import Extension, setup

        # A tool found on PATH only through the recipe's deps.build.<package>.path.
        tool = subprocess.run(["cext-config"], capture_output=True, text=True, check=True).stdout.strip()
        setup(
            packages=["cext"],
            package_dir={"": "src"},
            ext_modules=[Extension(
                "cext._speed", ["src/cext/_speed.c"], libraries=["z"],
                define_macros=[("BUILD_DIR", '"' + os.getcwd() + '"'), ("TOOL", '"' + tool + '"')],
            )],
        )
        """,
    "src/cext/__init__.py": "from cext._speed import build_dir, crc, flag, optimized, tool\n",
    "src/cext/_speed.c": """\
        #include <Python.h>
        #include <zlib.h>
        #ifndef LOCKBOX_TEST_FLAG
        #define LOCKBOX_TEST_FLAG 0
        #endif
        static PyObject *crc(PyObject *self, PyObject *arg) {
            Py_buffer view;
            if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
            unsigned long value = crc32(0L, view.buf, (uInt)view.len);
            PyBuffer_Release(&view);
            return PyLong_FromUnsignedLong(value);
        }
        static PyObject *build_dir(PyObject *self, PyObject *unused) { return PyUnicode_FromString(BUILD_DIR); }
        static PyObject *flag(PyObject *self, PyObject *unused) { return PyLong_FromLong(LOCKBOX_TEST_FLAG); }
        static PyObject *tool(PyObject *self, PyObject *unused) { return PyUnicode_FromString(TOOL); }
        /* What the interpreter's own CFLAGS (-O3 -DNDEBUG) give every build. */
        static PyObject *optimized(PyObject *self, PyObject *unused) {
        #if defined(__OPTIMIZE__) && defined(NDEBUG)
            Py_RETURN_TRUE;
        #else
            Py_RETURN_FALSE;
        #endif
        }
        static PyMethodDef methods[] = {
            {"crc", crc, METH_O, NULL}, {"build_dir", build_dir, METH_NOARGS, NULL},
            {"flag", flag, METH_NOARGS, NULL}, {"tool", tool, METH_NOARGS, NULL},
            {"optimized", optimized, METH_NOARGS, NULL}, {NULL}};
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
        PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
        """,
}

# A C extension whose build fails the way a missing -dev package makes it fail.
BROKEN_FILES = {
    "setup.py": """\
        from setuptools import Extension, setup
        setup(ext_modules=[Extension("broken._c", ["broken.c"])], packages=[])
        """,
    "broken.c": "#include <libxml/lockbox-missing-header.h>\n",
}


def pure_sdist_files(module: str, text: str) -> dict[str, str]:
    return {
        "setup.py": f"from setuptools import setup\nsetup(py_modules=[{module!r}])\n",
        f"{module}.py": text,
    }


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self) -> io.BytesIO | None:  # type: ignore[override]
        """Also a simple index (PEP 503): ``/simple/<project>/`` lists that project's files."""
        if self.path.startswith("/simple/"):
            project = self.path.split("/")[2]
            return self.list_directory(self.directory, project, prefix="../../")
        return super().send_head()  # type: ignore[return-value]

    def list_directory(
        self, path: str | os.PathLike[str], project: str | None = None, prefix: str = ""
    ) -> io.BytesIO | None:
        """A find-links page whose links carry each file's SHA-256, as real indexes do."""
        links = []
        for entry in sorted(Path(path).iterdir()):
            name = re.sub(r"[-_.]+", "-", entry.name.split("-")[0]).lower()
            if entry.is_file() and (project is None or name == project):
                digest = hashlib.sha256(entry.read_bytes()).hexdigest()
                links.append(f'<a href="{prefix}{entry.name}#sha256={digest}">{entry.name}</a><br>')
        body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on an ephemeral loopback port; yield its URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def git_repository(directory: Path, name: str, version: str, module_text: str) -> str:
    """A git repository holding a setuptools project; returns its ``git+file://`` URL at
    the commit made."""
    directory.mkdir(parents=True)
    files = {
        "pyproject.toml": _setuptools_pyproject(name, version)
        + f'\n[tool.setuptools]\npy-modules = ["{name}"]\n',
        f"{name}.py": module_text,
    }
    for path, text in files.items():
        (directory / path).write_text(text)
    git = [
        "git",
        "-c",
        "user.name=lockbox tests",
        "-c",
        "user.email=tests@lockbox.invalid",
        "-c",
        "init.defaultBranch=main",
    ]
    subprocess.run([*git, "init", "-q"], cwd=directory, check=True)
    subprocess.run([*git, "add", "."], cwd=directory, check=True)
    subprocess.run(
        [*git, "commit", "-q", "-m", "release"],
        cwd=directory,
        check=True,
        env={
            "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
            "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
            "PATH": "/usr/bin:/bin",
        },
    )
    return f"git+file://{directory}"
