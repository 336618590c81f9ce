"""The assembly phase with real uv and bubblewrap on a small workspace.

One project (pure wheels from a loopback index, two workspace members with entry points, a
recipe using every step) is built once for the module; tests read the application, rebuild
it, and break copies of the project's recipe in the ways users do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from tests.packages import serve, write_wheel

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


FILES = {
    "packages/tools/pyproject.toml": """\
        [project]
        name = "asm-tools"
        version = "1.2.0"
        description = "A member with a console script"
        dependencies = ["asm-alpha>=1"]

        [project.optional-dependencies]
        fast = ["asm-alpha"]

        [project.scripts]
        asm-tool = "asm_tools.cli:main"

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        """,
    "packages/tools/src/asm_tools/__init__.py": "NAME = 'tools'\n",
    "packages/tools/src/asm_tools/cli.py": """\
        import importlib.metadata, sys
        def main():
            print("asm-tool", importlib.metadata.version("asm-tools"), sys.prefix)
            return 0
        """,
    "packages/plain/pyproject.toml": """\
        [project]
        name = "asm-plain"
        version = "0.3.0"

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["lib/plainpkg"]
        """,
    "packages/plain/lib/plainpkg/__init__.py": "from asm_alpha import VALUE\n",
    "app/__init__.py": "",
    "app/settings.py": 'DATA = "/srv/data"\nTEMPLATES = "/srv/templates"\nGREETING = "hello"\n',
    "app/fragile.py": "ORDER = ['second', 'first']\n",
    "app/tests/test_nothing.py": "",
    "manage.py": "import sys\nfrom app import settings\nprint('manage', settings.DATA, *sys.argv[1:])\n",
    "data/seed.yaml": "a: 1\n",
    "patches/order.diff": """\
        --- a/app/fragile.py
        +++ b/app/fragile.py
        @@ -1 +1 @@
        -ORDER = ['second', 'first']
        +ORDER = ['first', 'second']
        """,
}

RECIPE = """\
    [tool.lockbox]
    python = "3.12"

    [tool.lockbox.libraries]
    paths = ["@NEEDLIB@"]

    [tool.lockbox.app]
    site-packages = ["app"]
    root = ["manage.py", { from = "data", to = "seed" }]
    patches = ["patches/order.diff"]
    delete = ["lib/python3.12/site-packages/app/tests"]

    [[tool.lockbox.app.substitute]]
    file = "app/settings.py"
    replace = "/srv/"
    with = "@out@/"
    expect = 2

    [tool.lockbox.verify]
    imports = ["asm_alpha", "asm_tools", "plainpkg", "app.fragile"]
    commands = [
        ["python", "-c", "from app.fragile import ORDER; assert ORDER == ['first', 'second'], ORDER"],
        ["asm-tool"],
        ["python", "manage.py", "check"],
    ]
    """


@dataclass(frozen=True)
class App:
    root: Path
    project: Path
    store: Path
    path: Path
    output: subprocess.CompletedProcess[str]
    url: str


def make_project(root: Path, url: str, needlib: Path, recipe: str = RECIPE) -> Path:
    recipe = recipe.replace("@NEEDLIB@", str(needlib))
    project = root / "asm"
    for relative, text in FILES.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "asm"
        version = "2.0.0"
        requires-python = ">=3.12"
        dependencies = ["asm-alpha", "asm-tools", "asm-plain", "asm-native"]

        [project.scripts]
        asm-manage = "app.settings:main"

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [tool.uv]
        find-links = ["{url}"]

        [tool.uv.sources]
        asm-tools = {{ workspace = true }}
        asm-plain = {{ workspace = true }}

        [tool.uv.workspace]
        members = ["packages/tools", "packages/plain"]

        """)
        + textwrap.dedent(recipe)
    )
    subprocess.run(
        ["uv", "lock", "--python", str(PYTHON)],
        cwd=project,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    return project


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("assemble")
    index = root / "index"
    index.mkdir()
    write_wheel(
        index,
        "asm_alpha",
        "1.0",
        {
            "asm_alpha.py": "VALUE = 'alpha'\ndef main():\n    print('alpha script')\n",
            "asm_alpha-1.0.dist-info/entry_points.txt": "[console_scripts]\nasm-alpha = asm_alpha:main\n",
        },
    )
    needlib = root / "needlib"
    native = build_native(root, needlib)
    write_wheel(
        index, "asm_native", "1.0", {"asm_native/__init__.py": "", "asm_native/_helper.so": native}
    )
    with serve(index) as url:
        project = make_project(root, url, needlib)
        store = root / "store"
        output = lockbox("build", project, store=store)
        assert output.returncode == 0, output.stderr
        yield App(root, project, store, Path(output.stdout.strip()), output, url)


def build_native(root: Path, needlib: Path) -> bytes:
    """A shared object that needs ``libneed.so.1``, which only ``needlib`` holds."""
    work = root / "native"
    work.mkdir()
    needlib.mkdir()
    (work / "need.c").write_text("int need(void) { return 42; }\n")
    (work / "helper.c").write_text("int need(void);\nint helper(void) { return need(); }\n")
    subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libneed.so.1",
            "-o",
            needlib / "libneed.so.1",
            work / "need.c",
        ],
        check=True,
    )
    subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-o",
            work / "helper.so",
            work / "helper.c",
            f"-L{needlib}",
            "-l:libneed.so.1",
        ],
        check=True,
    )
    return (work / "helper.so").read_bytes()


def readelf_runpath(path: Path) -> str:
    dynamic = subprocess.run(
        ["readelf", "-d", path], capture_output=True, text=True, check=True
    ).stdout
    found = [
        line.split("[")[1].rstrip("]")
        for line in dynamic.splitlines()
        if "(RUNPATH)" in line or "(RPATH)" in line
    ]
    return found[0] if found else ""


def site(app: App) -> Path:
    return app.path / "lib" / "python3.12" / "site-packages"


def test_the_application_is_a_registered_store_entry_that_references_its_layer(app: App) -> None:
    listing = json.loads(lockbox("store", "ls", "--json", store=app.store).stdout)
    entries = {Path(entry["path"]).name: entry for entry in listing}
    entry = entries[app.path.name]
    assert entry["kind"] == "app" and entry["addressing"] == "inputs"
    assert app.path.parent == app.store
    deps = [name for name in entries if entries[name]["kind"] == "deps"]
    python = [name for name in entries if entries[name]["kind"] == "python"]
    libraries = [name for name in entries if entries[name]["kind"] == "libraries"]
    assert len(deps) == 1 and len(python) == 1 and len(libraries) == 1
    assert entry["references"] == sorted(deps + python + libraries)
    assert (app.path / "python").resolve() == app.store / python[0]
    assert "application: 3 members, 1 patches, 2 substitutions" in app.output.stderr


def test_layout_is_a_virtual_environment_with_members_and_their_metadata(app: App) -> None:
    python = app.path / "bin" / "python"
    assert os.readlink(python) == "../python/bin/python3.12"
    assert os.readlink(app.path / "bin" / "python3.12") == "python"
    config = (app.path / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config and "home" not in config
    probe = subprocess.run(
        [
            python,
            "-c",
            "import sys, importlib.metadata as m; print(sys.prefix); "
            "print(m.version('asm-tools'), m.version('asm-plain'), m.version('asm'), m.version('asm-alpha')); "
            "print(m.requires('asm-tools')); print(sorted(e.name for e in m.entry_points(group='console_scripts')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin"},
    ).stdout.splitlines()
    assert probe[0] == str(app.path)
    assert probe[1] == "1.2.0 0.3.0 2.0.0 1.0"
    assert probe[2] == "['asm-alpha>=1', 'asm-alpha; extra == \"fast\"']"
    assert probe[3] == "['asm-alpha', 'asm-manage', 'asm-tool']"
    assert (site(app) / "asm_tools" / "cli.py").is_file()
    assert (site(app) / "plainpkg" / "__init__.py").is_file()  # from hatch's packages
    record = (site(app) / "asm_tools-1.2.0.dist-info" / "RECORD").read_text()
    assert "asm_tools/cli.py,sha256=" in record


def test_entry_point_scripts_of_members_and_dependencies_run(app: App) -> None:
    tool = subprocess.run(
        [app.path / "bin" / "asm-tool"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin"},
    )
    assert tool.stdout.split() == ["asm-tool", "1.2.0", str(app.path)]
    alpha = subprocess.run(
        [app.path / "bin" / "asm-alpha"], capture_output=True, text=True, check=True
    )
    assert alpha.stdout == "alpha script\n"


def test_recipe_steps_patch_substitute_copy_and_delete(app: App) -> None:
    settings = (site(app) / "app" / "settings.py").read_text()
    assert settings.startswith(f'DATA = "{app.path}/data"\nTEMPLATES = "{app.path}/templates"')
    assert "ORDER = ['first', 'second']" in (site(app) / "app" / "fragile.py").read_text()
    assert (app.path / "manage.py").is_file() and (app.path / "seed" / "seed.yaml").is_file()
    assert not (site(app) / "app" / "tests").exists()
    # The project's own source is untouched.
    assert "ORDER = ['second', 'first']" in (app.project / "app" / "fragile.py").read_text()


def test_verification_ran_each_import_and_command(app: App) -> None:
    for what in ("import asm_alpha", "import plainpkg", "asm-tool", "python manage.py check"):
        assert f"verifying: {what}" in app.output.stderr


def test_an_unchanged_rebuild_is_a_lookup_and_a_source_change_is_not(
    app: App, tmp_path: Path
) -> None:
    again = lockbox("build", app.project, store=app.store)
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()) == app.path
    assert "the application is in the store" in again.stderr
    assert "verifying" not in again.stderr


def test_run_uses_the_built_application(app: App) -> None:
    result = lockbox("run", app.project, "--", "python", "manage.py", "check", store=app.store)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"manage {app.path}/data check\n"
    failing = lockbox(
        "run", app.project, "--", "python", "-c", "raise SystemExit(7)", store=app.store
    )
    assert failing.returncode == 7
    # Run as root, it imported modules without bytecode: none was written into the entry.
    assert not list(app.path.rglob("__pycache__"))
    verified = lockbox("store", "verify", store=app.store)
    assert verified.returncode == 0, verified.stderr


def traced(
    *args: str | Path,
    store: Path,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str | Path] = (),
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run lockbox (under the command ``wrapper``, if given) and tell whether it was
    answered by the shortcut: whether it got by without importing how projects are read."""
    result = subprocess.run(
        [
            *map(str, wrapper),
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "lockbox",
            "--store",
            str(store),
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines = result.stderr.splitlines(keepends=True)
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    result.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return result, "lockbox.inputs.project" not in imported


def settle(project: Path) -> None:
    """Wait until nothing in ``project`` changed in the last two seconds: a run records its
    lookup only then (a change in the same clock tick could go unnoticed otherwise)."""
    newest = max(
        max(info.st_mtime, info.st_ctime)
        for path in [project, *project.rglob("*")]
        for info in (path.lstat(),)
    )
    time.sleep(max(0.0, newest + 2.1 - time.time()))


@pytest.fixture(scope="module")
def pinned(app: App, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the project with deps.hash declared (so its layer is a lookup too), built;
    and its application."""
    project = tmp_path_factory.mktemp("pinned") / "copy"
    shutil.copytree(app.project, project, ignore=shutil.ignore_patterns("__pycache__"))
    result = lockbox("lock-hash", project, store=app.store)
    assert result.returncode == 0, result.stderr
    built, quick = traced("build", project, store=app.store)
    assert built.returncode == 0 and not quick, built.stderr
    return project, Path(built.stdout.strip())


def test_a_repeated_build_or_run_is_answered_from_the_record_of_its_lookup(
    app: App, pinned: tuple[Path, Path]
) -> None:
    project, path = pinned
    settle(project)
    looked_up, quick = traced("build", project, store=app.store)
    assert looked_up.returncode == 0 and not quick
    records = list((app.store / ".lockbox" / "shortcuts").iterdir())
    assert records
    answered, quick = traced("build", project, store=app.store)
    assert quick
    assert (answered.returncode, answered.stdout, answered.stderr) == (
        0,
        looked_up.stdout,
        looked_up.stderr,
    )
    assert "the application is in the store" in answered.stderr
    silent, quick = traced("-q", "build", project, store=app.store)
    assert quick and silent.stdout == looked_up.stdout and silent.stderr == ""

    command = (
        "run",
        project,
        "--",
        "python",
        "-c",
        "import sys; print(sys.prefix); raise SystemExit(3)",
    )
    first, quick = traced(*command, store=app.store)
    assert (first.returncode, first.stdout, quick) == (3, f"{path}\n", False)
    second, quick = traced(*command, store=app.store)
    assert (second.returncode, second.stdout, second.stderr, quick) == (
        3,
        first.stdout,
        first.stderr,
        True,
    )


def test_a_change_to_what_the_lookup_read_is_not_answered_from_its_record(
    app: App, pinned: tuple[Path, Path], tmp_path: Path
) -> None:
    project, path = pinned
    settle(project)
    recorded, _ = traced("build", project, store=app.store)  # a lookup, recorded (or answered)
    assert recorded.returncode == 0, recorded.stderr

    def answered(env: dict[str, str] | None = None) -> bool:
        result, quick = traced("build", project, store=app.store, env=env)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()) == path
        return quick

    assert answered()
    member = next(project.glob("packages/tools/src/asm_tools"))
    (member / "cli.py").touch()  # new mtime, same bytes: the same application, looked up
    assert not answered()
    assert not answered()  # that change was too recent to trust: not recorded
    settle(project)
    assert not answered()
    assert answered()
    (member / "scratch.txt").write_text("")
    (member / "scratch.txt").unlink()  # the directory changed, its listing did not
    settle(project)
    assert not answered()
    assert answered()
    assert not answered({"UV_PYTHON_INSTALL_DIR": str(tmp_path / "pythons")})
    # The module's application takes its root back (the copy took it), then a collection
    # drops every record: one may name an entry it removes.
    assert lockbox("build", app.project, store=app.store).returncode == 0
    assert (app.store / ".lockbox" / "shortcuts").is_dir()
    gc = lockbox("gc", store=app.store)
    assert gc.returncode == 0, gc.stderr
    assert not (app.store / ".lockbox" / "shortcuts").exists()


def test_export_writes_a_runnable_tree_for_its_own_path(app: App, tmp_path: Path) -> None:
    target = tmp_path / "exported"
    result = lockbox("export", app.project, "--to", target, store=app.store)
    assert result.returncode == 0, result.stderr
    settings = target / "lib" / "python3.12" / "site-packages" / "app" / "settings.py"
    assert f'DATA = "{target}/data"' in settings.read_text()
    tool = subprocess.run([target / "bin" / "asm-tool"], capture_output=True, text=True, check=True)
    assert tool.stdout.split()[2] == str(target)
    again = lockbox("export", app.project, "--to", target, store=app.store)
    assert again.returncode == 0, again.stderr
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious").write_text("keep")
    refused = lockbox("export", app.project, "--to", occupied, store=app.store)
    assert refused.returncode == 1 and "not an earlier export" in refused.stderr
    assert (occupied / "precious").read_text() == "keep"


def test_the_sandbox_has_no_interface_but_loopback(app: App, tmp_path: Path) -> None:
    project = variant(
        app,
        tmp_path,
        "commands = [",
        "commands = [\n"
        '    ["python", "-c", "import socket; print(\'IFACES\', sorted(n for _, n in socket.if_nameindex())); '
        "print('ROUTES', open('/proc/net/route').read().splitlines()[1:])\"],",
    )
    result = lockbox("-v", "build", project, store=app.store)
    assert result.returncode == 0, result.stderr
    assert "IFACES ['lo']" in result.stderr
    assert "ROUTES []" in result.stderr


def variant(app: App, tmp_path: Path, old: str | None = None, new: str = "") -> Path:
    """A copy of the project, with ``old`` replaced by ``new`` in its pyproject.toml."""
    project = tmp_path / "variant"
    shutil.copytree(app.project, project)
    if old is not None:
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text()
        assert old in text
        pyproject.write_text(text.replace(old, new, 1))
    return project


def assert_fails_cleanly(app: App, project: Path, *needles: str) -> str:
    before = sorted(p.name for p in app.store.iterdir())
    result = lockbox("build", project, store=app.store)
    assert result.returncode == 1, result.stderr
    # A failing check's own output may hold its traceback; lockbox's message must not.
    assert "Traceback" not in result.stderr.split("verification failed")[0]
    for needle in needles:
        assert needle in result.stderr
    assert sorted(p.name for p in app.store.iterdir()) == before
    return result.stderr


def test_a_patch_that_does_not_apply_fails_naming_file_and_hunk(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path)
    (project / "app" / "fragile.py").write_text("ORDER = ['changed']\n")
    assert_fails_cleanly(app, project, "patches/order.diff", "app/fragile.py", "hunk 1")


def test_a_missing_substitution_pattern_fails(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path, 'replace = "/srv/"', 'replace = "/opt/"')
    assert_fails_cleanly(app, project, "app/settings.py", "'/opt/' was not found")


def test_a_wrong_substitution_count_fails(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path, "expect = 2", "expect = 3")
    assert_fails_cleanly(app, project, "occurs 2 times, the recipe expects 3")


def test_a_failing_verification_import_fails_and_keeps_its_log(app: App, tmp_path: Path) -> None:
    project = variant(
        app, tmp_path, 'imports = ["asm_alpha"', 'imports = ["asm_missing", "asm_alpha"'
    )
    stderr = assert_fails_cleanly(
        app, project, "verification failed: import asm_missing", "ModuleNotFoundError"
    )
    log = Path(stderr.split("the whole log is at ")[1].split(";")[0].split()[0])
    assert "No module named 'asm_missing'" in log.read_text()


def test_a_failing_verification_command_fails(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path, '["asm-tool"]', '["python", "-c", "raise SystemExit(3)"]')
    assert_fails_cleanly(app, project, "verification failed", "exit code 3")


def test_a_delete_pattern_matching_nothing_fails(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path, 'delete = ["', 'delete = ["nothing/here", "')
    assert_fails_cleanly(app, project, "'nothing/here' matches nothing")


def test_a_member_with_dynamic_metadata_fails_clearly(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path)
    member = project / "packages" / "plain" / "pyproject.toml"
    member.write_text(
        member.read_text().replace('version = "0.3.0"', 'version = "0.3.0"\ndynamic = ["scripts"]')
    )
    assert_fails_cleanly(app, project, "asm-plain declares scripts as dynamic")


def test_compiled_bytecode_is_unchecked_hash_and_identical_on_a_rebuild(
    app: App, tmp_path: Path
) -> None:
    project = variant(
        app, tmp_path, "[tool.lockbox.app]\n", "[tool.lockbox.app]\ncompile-bytecode = true\n"
    )
    store = tmp_path / "store"
    first = lockbox("build", project, store=store)
    assert first.returncode == 0, first.stderr
    out = Path(first.stdout.strip())
    pyc = sorted((out / "lib" / "python3.12" / "site-packages").rglob("*.pyc"))
    assert {p.parent.parent.name for p in pyc} >= {"app", "asm_tools", "site-packages"}
    assert all(int.from_bytes(p.read_bytes()[4:8], "little") == 0b01 for p in pyc)
    # The layer's bytecode is an entry of its own, made once and linked into the application.
    bytecode = next(store.glob("*-asm-deps-bytecode"))
    layer_pyc = (
        bytecode
        / "lib"
        / "python3.12"
        / "site-packages"
        / "__pycache__"
        / "asm_alpha.cpython-312.pyc"
    )
    app_pyc = (
        out / "lib" / "python3.12" / "site-packages" / "__pycache__" / "asm_alpha.cpython-312.pyc"
    )
    assert os.stat(layer_pyc).st_ino == os.stat(app_pyc).st_ino
    assert not list(bytecode.rglob("*.py"))
    digest = lockbox("hash", out, store=store).stdout
    assert lockbox("store", "roots", store=store).stdout.split()[0] == "asm"  # the build's root
    assert lockbox("gc", store=store).returncode == 0
    assert out.exists()  # rooted by the build
    assert lockbox("store", "unroot", "asm", store=store).returncode == 0
    assert lockbox("gc", store=store).returncode == 0  # nothing is rooted now: all of it goes
    assert not out.exists()
    second = lockbox("build", project, store=store)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip()) == out and "verifying" in second.stderr
    assert lockbox("hash", out, store=store).stdout == digest


def test_a_library_from_the_recipe_paths_is_bundled_and_linked_relatively(app: App) -> None:
    helper = site(app) / "asm_native" / "_helper.so"
    assert (app.path / "lib" / "libneed.so.1").is_file()
    assert readelf_runpath(helper) == "$ORIGIN/../../.."  # asm_native/ → lib/
    ldd = subprocess.run(["ldd", helper], capture_output=True, text=True, check=True).stdout
    assert f"libneed.so.1 => {site(app)}/asm_native/../../../libneed.so.1" in ldd
    # The dependency layer's copy was not touched: the application has its own.
    deps = next(p for p in app.store.iterdir() if p.name.endswith("-asm-deps"))
    layer_helper = deps / "lib" / "python3.12" / "site-packages" / "asm_native" / "_helper.so"
    assert readelf_runpath(layer_helper) == ""
    assert os.stat(layer_helper).st_ino != os.stat(helper).st_ino
    entries = json.loads(lockbox("store", "ls", "--json", store=app.store).stdout)
    entry = next(e for e in entries if e["path"] == str(app.path))
    # The bundled copy is a hardlink of a `libraries` entry the application references: the
    # same libraries, the same entry, whichever build bundles them.
    libraries = next(
        e
        for e in entries
        if e["kind"] == "libraries" and Path(e["path"]).name in entry["references"]
    )
    assert os.path.samefile(
        Path(libraries["path"]) / "lib" / "libneed.so.1", app.path / "lib" / "libneed.so.1"
    )
    assert entry["inputs"]["metadata"]["bundled"]["libneed.so.1"]["from"] == str(
        app.root / "needlib" / "libneed.so.1"
    )


def test_lockbox_why_names_the_files_that_need_a_library(app: App) -> None:
    result = lockbox("-q", "why", app.project, "libneed.so.1", store=app.store)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "application: lib/python3.12/site-packages/asm_native/_helper.so -> lib/libneed.so.1\n"
    )


def test_a_library_found_nowhere_fails_with_what_wants_it(app: App, tmp_path: Path) -> None:
    project = variant(app, tmp_path, f'paths = ["{app.root / "needlib"}"]', "paths = []")
    assert_fails_cleanly(
        app,
        project,
        "1 dependency could not be satisfied",
        "libneed.so.1 wanted by lib/python3.12/site-packages/asm_native/_helper.so",
        "ignore-missing",
    )


def test_ignore_missing_lets_it_pass_with_a_warning(app: App, tmp_path: Path) -> None:
    project = variant(
        app,
        tmp_path,
        f'paths = ["{app.root / "needlib"}"]',
        'paths = []\nignore-missing = ["libneed.so.*"]',
    )
    result = lockbox("build", project, store=app.store)
    assert result.returncode == 0, result.stderr
    assert "warning: libneed.so.1 is not found" in result.stderr
    assert not (Path(result.stdout.strip()) / "lib" / "libneed.so.1").exists()


@pytest.mark.parametrize("how", ["recipe", "flag"])
def test_without_bundling_run_paths_name_the_library_directories(
    app: App, tmp_path: Path, how: str
) -> None:
    if how == "recipe":
        project = variant(
            app,
            tmp_path,
            "[tool.lockbox.libraries]\n",
            "[tool.lockbox.libraries]\nbundle = false\n",
        )
        result = lockbox("build", project, store=app.store)
    else:
        result = lockbox("build", "--no-bundle", app.project, store=app.store)
    assert result.returncode == 0, result.stderr
    out = Path(result.stdout.strip())
    assert out != app.path
    assert not (out / "lib" / "libneed.so.1").exists()
    helper = out / "lib" / "python3.12" / "site-packages" / "asm_native" / "_helper.so"
    assert readelf_runpath(helper) == str(app.root / "needlib")


def test_a_changed_bundled_library_is_a_new_application(app: App, tmp_path: Path) -> None:
    needlib = tmp_path / "needlib"
    shutil.copytree(app.root / "needlib", needlib)
    project = variant(
        app, tmp_path, f'paths = ["{app.root / "needlib"}"]', f'paths = ["{needlib}"]'
    )
    assert lockbox("lock-hash", project, store=app.store).returncode == 0  # a layer lookup too
    first, _ = traced("build", project, store=app.store)
    assert first.returncode == 0, first.stderr
    old = Path(first.stdout.strip())
    settle(needlib)
    settle(project)
    assert traced("build", project, store=app.store)[0].stdout == first.stdout  # recorded
    answered, quick = traced("build", project, store=app.store)
    assert quick and answered.stdout == first.stdout

    # The same size, the same modification time: only the bytes (and the ctime) differ.
    library = needlib / "libneed.so.1"
    original, before = library.read_bytes(), library.stat()
    (tmp_path / "need.c").write_text("int need(void) { return 43; }\n")
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-Wl,-soname,libneed.so.1", "-o", library, tmp_path / "need.c"],
        check=True,
    )
    changed = library.read_bytes()
    assert changed != original and len(changed) == len(original)
    os.utime(library, ns=(before.st_atime_ns, before.st_mtime_ns))

    rebuilt, quick = traced("build", project, store=app.store)
    assert rebuilt.returncode == 0 and not quick, rebuilt.stderr
    new = Path(rebuilt.stdout.strip())
    assert new != old and "verifying" in rebuilt.stderr
    assert (new / "lib" / "libneed.so.1").read_bytes() == changed
    assert (old / "lib" / "libneed.so.1").read_bytes() == original
    entry = next(
        e
        for e in json.loads(lockbox("store", "ls", "--json", store=app.store).stdout)
        if e["path"] == str(new)
    )
    assert entry["inputs"]["libraries"]["libneed.so.1"]["path"] == str(library)
    assert entry["inputs"]["patchelf"]

    # The library's bytes are what addresses the application: back to them, back to it.
    library.write_bytes(original)
    looked_up = lockbox("-v", "build", project, store=app.store)  # never answered by a record
    assert looked_up.returncode == 0, looked_up.stderr
    assert Path(looked_up.stdout.strip()) == old
    assert "the application is in the store" in looked_up.stderr


def test_an_upgraded_host_library_is_a_new_interpreter_and_application(
    app: App, tmp_path: Path
) -> None:
    """libffi (which the interpreter's ``_ctypes`` needs) upgraded on the host, simulated by
    mounting a copy with other bytes over it in a private mount namespace: neither the
    record of the last lookup nor the lookup itself answers with the old bundle."""
    from lockbox.native.resolve import host_libraries

    project = variant(app, tmp_path)
    assert lockbox("lock-hash", project, store=app.store).returncode == 0
    first, _ = traced("build", project, store=app.store)
    assert first.returncode == 0, first.stderr
    old = Path(first.stdout.strip())
    settle(project)
    assert traced("build", project, store=app.store)[0].stdout == first.stdout  # recorded
    assert traced("build", project, store=app.store)[1]

    host = host_libraries()["libffi.so.8"].resolve()
    upgraded = tmp_path / host.name
    upgraded.write_bytes(host.read_bytes() + b"\0lockbox test\0")  # still a loadable library
    mounted = [
        shutil.which("bwrap") or "bwrap",
        "--dev-bind",
        "/",
        "/",
        "--ro-bind",
        upgraded,
        host,
        "--",
    ]
    rebuilt, quick = traced("build", project, store=app.store, wrapper=mounted)
    assert rebuilt.returncode == 0 and not quick, rebuilt.stderr
    new = Path(rebuilt.stdout.strip())
    assert new != old and "importing CPython" in rebuilt.stderr
    assert (new / "python" / "lib" / "libffi.so.8").read_bytes() == upgraded.read_bytes()
    assert (old / "python" / "lib" / "libffi.so.8").read_bytes() == host.read_bytes()
    entries = {
        e["path"]: e for e in json.loads(lockbox("store", "ls", "--json", store=app.store).stdout)
    }
    python = entries[str((new / "python").resolve())]
    assert python["inputs"]["libraries"]["libffi.so.8"] == {
        "path": str(host),
        "sha256": hashlib.sha256(upgraded.read_bytes()).hexdigest(),
    }
    assert python["inputs"]["patchelf"]
    assert entries[str(new)]["inputs"]["python"] == python["path"].rsplit("/", 1)[1]

    # Without the mount, the host's libffi is the old one again: so is the application.
    back, _ = traced("build", project, store=app.store)
    assert back.returncode == 0, back.stderr
    assert Path(back.stdout.strip()) == old
