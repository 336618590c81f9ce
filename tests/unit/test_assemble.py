"""The assembly phase on a small project: what it reads, what it asks of the sandbox and
patchelf, and what it makes.

The sandbox is :class:`tests.fakes.FakeSandbox`: it records each command line and, unless a
test says otherwise, runs the command on the host with the mounts' paths put back, so the
bytecode compilation and the [verify] checks really run against the assembled tree. The
application's interpreter is the one running the tests.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.assemble import tree
from lockbox.assemble.app import build_app
from lockbox.assemble.bytecode import deps_bytecode
from lockbox.assemble.interpreter import BYTECODE_ENV, PythonEntry
from lockbox.assemble.sources import read_sources
from lockbox.assemble.tree import AssemblyReport, assemble_tree
from lockbox.environment import Environment
from lockbox.errors import AssemblyError, VerificationFailed
from lockbox.hashes import Sha256
from lockbox.inputs.build import BuildInputs
from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.lock import read_lock
from lockbox.inputs.plan import make_plan
from lockbox.inputs.project import Project, load_project
from lockbox.progress import Recorder
from lockbox.store.store import Entry, Store
from lockbox.tools.dpkg import Dpkg
from lockbox.tools.sandbox import REPRODUCIBLE_ENV
from tests.fakes import (
    FakePatchelf,
    FakeSandbox,
    FakeToolbox,
    SandboxCall,
    fake_installation,
    running_interpreter,
)

SHORT = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE = Path("lib") / SHORT / "site-packages"
TAG = sys.implementation.cache_tag

PYPROJECT = """\
    scripts = {{ demo-hello = "demo.cli:main" }}

    [build-system]
    requires = ["hatchling"]
    build-backend = "hatchling.build"

    [tool.lockbox.libraries]
    paths = ["libs"]
    bundle = {bundle}

    [tool.lockbox.app]
    root = ["manage.py"]
    compile-bytecode = {compile}

    [[tool.lockbox.app.substitute]]
    file = "src/demo/settings.py"
    replace = "/srv"
    with = "@out@/data"

    [tool.lockbox.verify]
    imports = ["demo", "dep"]
    commands = [["demo-hello"], ["python", "manage.py", "check"]]
    """

FILES = {
    "src/demo/__init__.py": "",
    "src/demo/settings.py": 'DATA = "/srv"\n',
    "src/demo/cli.py": "from demo import settings\ndef main():\n    print('hello', settings.DATA)\n",
    "manage.py": "import sys\nprint('manage', *sys.argv[1:])\n",
    "libs/README": "the recipe's library directory\n",
}

LOCK = """\
    version = 1
    revision = 3
    requires-python = ">=3.11"

    [[package]]
    name = "demo"
    version = "0.1.0"
    source = { editable = "." }
    """


def _project(
    make_project: Callable[..., Path], *, bundle: bool = True, compile: bool = True
) -> Project:
    root = make_project(
        PYPROJECT.format(bundle=str(bundle).lower(), compile=str(compile).lower()), FILES
    )
    (root / "uv.lock").write_text(textwrap.dedent(LOCK))
    return load_project(root)


def _layer(directory: Path) -> Path:
    """A dependency layer: the distribution ``dep`` with a console script."""
    site = directory / SITE
    (site / "dep").mkdir(parents=True)
    (site / "dep" / "__init__.py").write_text("VALUE = 1\ndef main():\n    print(VALUE)\n")
    info = site / "dep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dep\nVersion: 1.0\n")
    (info / "RECORD").write_text("dep/__init__.py,,\n")
    (info / "entry_points.txt").write_text("[console_scripts]\ndep-tool = dep:main\n")
    return directory


def _python_tree(directory: Path) -> Path:
    """An interpreter entry's tree: its ``bin/pythonX.Y`` the interpreter running the tests."""
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / SHORT).symlink_to(os.path.realpath(sys.executable))
    return directory


@dataclass
class Assembly:
    """One call of :func:`assemble_tree` for a project, ready to make."""

    project: Project
    interpreter: Interpreter
    deps: Path
    python: PythonEntry
    out: Path
    content: Path
    work: Path
    hidden: Path
    log: Path

    def make(
        self,
        sandbox: FakeSandbox,
        patchelf: FakePatchelf,
        *,
        link: bool = False,
        checks: bool = True,
    ) -> AssemblyReport:
        plan = make_plan(self.project, read_lock(self.project.lock_path), self.interpreter)
        sources = read_sources(self.project, plan)
        return assemble_tree(
            tree.Assembly(self.project, sources, self.deps, self.interpreter, self.python),
            tree.Placement(
                self.out, self.content, self.work, link=link, hidden=[self.hidden], log=self.log
            ),
            FakeToolbox(sandbox=sandbox, patchelf=patchelf, dpkg=Dpkg.find()),
            progress=Recorder(),
            checks=checks,
        )


@pytest.fixture
def assembly(make_project: Callable[..., Path], tmp_path: Path) -> Callable[..., Assembly]:
    def make(**recipe: bool) -> Assembly:
        project = _project(make_project, **recipe)
        entry = Entry(
            _python_tree(tmp_path / "store" / f"abc-python-{sys.version_info.major}"),
            "python",
            "python",
            Sha256(bytes(32)),
            0,
            "inputs",
        )
        work = tmp_path / "work"
        work.mkdir()
        return Assembly(
            project,
            running_interpreter(),
            _layer(tmp_path / "layer"),
            PythonEntry(entry, f"bin/{SHORT}", reused=True),
            tmp_path / "store" / "xyz-demo",
            work / "content",
            work,
            tmp_path / "store",
            tmp_path / "verify.log",
        )

    return make


def _verification_env(out: Path) -> dict[str, str]:
    return {
        **REPRODUCIBLE_ENV,
        "PATH": f"{out}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp/lockbox-home",
        "TMPDIR": "/tmp/lockbox-home/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "VIRTUAL_ENV": str(out),
    }


def _asked(sandbox: FakeSandbox, kind: str) -> list[SandboxCall]:
    return [call for call in sandbox.calls if call.kind == kind]


# What the assembly reads ----------------------------------------------------------------------


def test_the_sources_are_what_the_recipe_names_and_their_digest_covers_them(
    make_project: Callable[..., Path],
) -> None:
    project = _project(make_project)
    plan = make_plan(project, read_lock(project.lock_path), running_interpreter())
    sources = read_sources(project, plan)
    assert sources.paths == ("manage.py", "pyproject.toml", "src/demo")
    assert [(member.name, member.version) for member in sources.members] == [("demo", "0.1.0")]
    assert str(project.root / "src" / "demo" / "settings.py") in sources.consulted

    def digest() -> str:
        return read_sources(project, plan).digest

    first = digest()
    (project.root / "src" / "demo" / "__pycache__").mkdir()
    (project.root / "src" / "demo" / "__pycache__" / "settings.cpython-311.pyc").write_bytes(b"x")
    (project.root / "README.md").write_text("not read by the assembly\n")
    assert digest() == first
    (project.root / "manage.py").chmod(0o755)
    assert digest() != first
    changed = digest()
    (project.root / "src" / "demo" / "settings.py").write_text('DATA = "/srv/"\n')
    assert digest() != changed


def test_a_path_the_recipe_names_must_exist(make_project: Callable[..., Path]) -> None:
    project = _project(make_project)
    (project.root / "manage.py").unlink()
    plan = make_plan(project, read_lock(project.lock_path), running_interpreter())
    with pytest.raises(AssemblyError, match=r"recipe app.root\[0\]: manage.py does not exist"):
        read_sources(project, plan)


def test_elf_files_among_the_sources_are_named_with_their_digest(
    make_project: Callable[..., Path],
) -> None:
    import hashlib

    project = _project(make_project)
    blob = b"\x7fELF\x02\x01\x01 not much of one"
    (project.root / "src" / "demo" / "_speedups.so").write_bytes(blob)
    sources = read_sources(
        project, make_plan(project, read_lock(project.lock_path), running_interpreter())
    )
    assert sources.elf_files == {
        str(project.root / "src" / "demo" / "_speedups.so"): hashlib.sha256(blob).hexdigest()
    }


# What it asks of the sandbox -----------------------------------------------------------------


def test_each_check_runs_unprivileged_with_the_environment_the_recipe_implies(
    assembly: Callable[..., Assembly],
) -> None:
    parts = assembly()
    sandbox, patchelf = FakeSandbox(), FakePatchelf()

    report = parts.make(sandbox, patchelf)

    out = parts.out
    checks = _asked(sandbox, "unprivileged")
    python = str(out / "bin" / "python")
    assert [call.argv[:2] + call.argv[3:] for call in checks[:2]] == [
        (python, "-c", "demo"),
        (python, "-c", "dep"),
    ]
    assert [call.argv for call in checks[2:]] == [("demo-hello",), ("python", "manage.py", "check")]
    for call in checks:
        assert call.cwd == out
        assert call.env == _verification_env(out)
        # The application at its final path, read-only; the store hidden; nothing writable
        # but empty scratch directories.
        assert call.read_only == ((parts.content, out),)
        assert call.hidden == (parts.hidden,)
        assert call.writable == ()
        assert call.scratch == (Path("/tmp/lockbox-home"), Path("/tmp/lockbox-home/tmp"))
    assert report.verified == ["import demo", "import dep", "demo-hello", "python manage.py check"]
    log = parts.log.read_text()
    assert log.startswith(f"verification of demo at {out}\n$ import demo\n")
    # The checks ran against the assembled tree: the substitution names the final path.
    assert f"$ demo-hello\nhello {out}/data\n$ python manage.py check\nmanage check\n" in log
    assert patchelf.calls == []  # nothing in this application is an ELF file


def test_the_project_packages_are_compiled_writing_only_their_own_directories(
    assembly: Callable[..., Assembly],
) -> None:
    parts = assembly()
    sandbox = FakeSandbox()

    parts.make(sandbox, FakePatchelf(), checks=False)

    (compile,) = sandbox.calls
    site, out_site = parts.content / SITE, parts.out / SITE
    assert compile.kind == "offline"
    assert compile.writable == ((site / "demo", out_site / "demo"),)
    assert compile.read_only == ((parts.content, parts.out),)
    assert compile.hidden == (parts.hidden,)
    assert compile.cwd == Path("/")
    assert compile.env == _verification_env(parts.out)
    assert compile.argv == (
        str(parts.out / "bin" / "python"),
        "-S",
        "-m",
        "compileall",
        "-q",
        "-f",
        "-j",
        "0",
        "--invalidation-mode",
        "unchecked-hash",
        str(out_site / "demo"),
    )
    assert (site / "demo" / "__pycache__" / f"settings.{TAG}.pyc").is_file()
    assert not (site / "dep" / "__pycache__").exists()  # the layer's come from its entry


def test_verification_stops_at_the_first_failing_check(assembly: Callable[..., Assembly]) -> None:
    parts = assembly(compile=False)

    def answer(call: SandboxCall) -> list[str]:
        return ["/bin/false"] if call.argv == ("demo-hello",) else ["true"]

    sandbox = FakeSandbox(answer)
    with pytest.raises(VerificationFailed) as caught:
        parts.make(sandbox, FakePatchelf())

    assert caught.value.check == "demo-hello (exit code 1)"
    assert caught.value.log == parts.log
    assert [call.argv[-1] for call in sandbox.calls] == ["demo", "dep", "demo-hello"]


def test_a_linked_interpreter_entry_is_shown_to_verification(
    assembly: Callable[..., Assembly],
) -> None:
    parts = assembly(compile=False)
    sandbox = FakeSandbox(lambda call: ["true"])

    parts.make(sandbox, FakePatchelf(), link=True)

    entry = parts.python.entry.path
    assert os.readlink(parts.content / "python") == f"../{entry.name}"
    assert {call.read_only for call in sandbox.calls} == {
        ((parts.content, parts.out), (entry, entry))
    }


# Native libraries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Native:
    libmid: Path
    """A library the recipe's ``libs`` directory provides."""
    extension: Path
    """An extension module that needs it."""


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Native:
    work = tmp_path_factory.mktemp("native")

    def cc(*args: str) -> None:
        subprocess.run(["cc", *args], cwd=work, check=True, capture_output=True)

    (work / "mid.c").write_text("int mid(void) { return 1; }\n")
    cc("-shared", "-fPIC", "-Wl,-soname,libmid.so.1", "-o", "libmid.so.1", "mid.c")
    (work / "ext.c").write_text("int mid(void);\nint ext(void) { return mid(); }\n")
    cc("-shared", "-fPIC", "-o", "_ext.so", "ext.c", "-L.", "-l:libmid.so.1")
    return Native(work / "libmid.so.1", work / "_ext.so")


@pytest.mark.parametrize("bundle", [True, False])
def test_an_extension_module_is_relinked_to_the_recipe_library(
    assembly: Callable[..., Assembly], native: Native, bundle: bool
) -> None:
    parts = assembly(bundle=bundle, compile=False)
    libmid = parts.project.root / "libs" / "libmid.so.1"
    libmid.write_bytes(native.libmid.read_bytes())
    (parts.deps / SITE / "dep" / "_ext.so").write_bytes(native.extension.read_bytes())
    sandbox, patchelf = FakeSandbox(lambda call: ["true"]), FakePatchelf()

    report = parts.make(sandbox, patchelf)

    extension = parts.content / SITE / "dep" / "_ext.so"
    if bundle:
        assert patchelf.calls == [([extension], "$ORIGIN/../../..")]
        assert report.bundled == {"libmid.so.1": {"from": str(libmid), "package": ""}}
        assert (parts.content / "lib" / "libmid.so.1").read_bytes() == libmid.read_bytes()
        assert report.linked == []
        shown: tuple[tuple[Path, Path], ...] = ((parts.content, parts.out),)
    else:
        assert patchelf.calls == [([extension], str(libmid.parent))]
        assert report.bundled == {}
        assert report.linked == [libmid]
        # Verification sees the one library the application links to, not its directory.
        shown = ((parts.content, parts.out), (libmid, libmid))
    assert report.relinked == 1
    assert {call.read_only for call in sandbox.calls} == {shown}


# The layer's bytecode ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as store:
        yield store


def _register(
    store: Store,
    tree: Callable[[Path], Path],
    name: str,
    kind: str,
    inputs: Mapping[str, object] | None = None,
) -> Entry:
    with store.staging() as stage:
        return store.register(tree(stage / "content"), name=name, kind=kind, inputs=inputs)


def test_the_layer_bytecode_is_an_entry_of_caches_made_once(store: Store) -> None:
    deps = _register(store, _layer, "demo-deps", "deps")
    python = _register(store, _python_tree, "python-3", "python", inputs={"test": 1})
    entry = PythonEntry(python, f"bin/{SHORT}", reused=True)
    sandbox = FakeSandbox()

    bytecode = deps_bytecode(store, deps, entry, sandbox)

    (call,) = sandbox.calls
    inside = Path("/tmp/lockbox-bytecode")
    assert call.kind == "offline" and call.cwd == Path("/")
    assert call.env == BYTECODE_ENV
    assert call.hidden == (store.root,)
    assert [mount[1] for mount in call.writable] == [inside]
    assert call.read_only == ((python.path, python.path),)
    assert call.argv[0] == str(python.path / "bin" / SHORT)
    assert call.argv[-5:] == ("-s", str(inside), "-p", "/lockbox/deps", str(inside))
    assert bytecode.kind == "bytecode"
    files = [
        os.path.relpath(os.path.join(directory, name), bytecode.path)
        for directory, _, names in os.walk(bytecode.path)
        for name in names
    ]
    assert files == [str(SITE / "dep" / "__pycache__" / f"__init__.{TAG}.pyc")]
    data = (bytecode.path / files[0]).read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01  # unchecked hash
    assert marshal.loads(data[16:]).co_filename == f"/lockbox/deps/{SITE}/dep/__init__.py"

    assert deps_bytecode(store, deps, entry, sandbox) == bytecode
    assert len(sandbox.calls) == 1


# The whole phase -----------------------------------------------------------------------------


def test_an_unchanged_application_is_a_lookup_that_asks_for_no_sandbox(
    make_project: Callable[..., Path], store: Store, tmp_path: Path
) -> None:
    project = _project(make_project, compile=False)
    interpreter = fake_installation(tmp_path / "prefix", tmp_path / "started", {})
    inputs = BuildInputs(project, Environment(), interpreter=interpreter)
    deps = _register(store, _layer, "demo-deps", "deps")
    sandbox = FakeSandbox(lambda call: ["true"])

    built = build_app(
        inputs, store, deps, FakeToolbox(patchelf=FakePatchelf(), sandbox=sandbox, dpkg=Dpkg.find())
    )

    assert not built.reused and built.entry is not None
    assert sandbox.checked == 1
    assert len(_asked(sandbox, "unprivileged")) == 4
    out = built.path
    assert built.entry.kind == "app" and out.parent == store.root
    (python,) = [name for name in built.entry.references if name != deps.path_name]
    assert os.readlink(out / "python") == f"../{python}"
    assert store.resolve(python).kind == "python"
    assert (out / SITE / "demo" / "settings.py").read_text() == f'DATA = "{out}/data"\n'
    assert os.readlink(out / "bin" / "python") == f"../python/bin/{SHORT}"
    assert (out / "python" / "bin" / SHORT).is_file()
    assert store.roots()["demo"] == out.name

    again = build_app(inputs, store, deps, FakeToolbox(patchelf=FakePatchelf()))
    assert again.reused and again.path == out

    (project.root / "manage.py").write_text("print('changed')\n")
    changed = build_app(
        inputs,
        store,
        deps,
        FakeToolbox(
            patchelf=FakePatchelf(), sandbox=FakeSandbox(lambda call: ["true"]), dpkg=Dpkg.find()
        ),
    )
    assert not changed.reused and changed.path != out
    assert (changed.path / "manage.py").read_text() == "print('changed')\n"
