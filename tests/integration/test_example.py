"""The bundled example (examples/gatekeeper), built from scratch as the README's main job does.

It is built once for the module, into a new store with an empty uv cache: lxml, xmlsec,
psycopg-c and gssapi are compiled from source (minutes on two cores), and the layer must
come out with the hash the example's recipe declares. The failure cases edit copies of the
example's recipe; their dependency layer is then found in the store by that hash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "gatekeeper"


@dataclass(frozen=True)
class Example:
    store: Path
    app: Path
    output: subprocess.CompletedProcess[str]


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "LOCKBOX_UV_CACHE"},
    )


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    store = tmp_path_factory.mktemp("example") / "store"
    output = lockbox("build", EXAMPLE, store=store)
    assert output.returncode == 0, output.stderr[-5000:]
    yield Example(store, Path(output.stdout.strip()), output)


def test_the_example_builds_with_its_declared_layer_and_passes_every_check(example: Example) -> None:
    err = example.output.stderr
    assert "Built lxml" in err and "Built psycopg-c" in err  # really compiled here
    assert "checks passed" in err and "13 checks passed" in err
    assert f"run it: {example.app}/bin/python" in err


def test_the_application_is_assembled_as_the_recipe_says(example: Example) -> None:
    site = example.app / "lib" / "python3.13" / "site-packages"
    settings = (site / "gatekeeper" / "settings.py").read_text()
    assert f'BLUEPRINTS_DIR = Path("{example.app}/blueprints")' in settings
    migration = site / "gatekeeper" / "accounts" / "migrations" / "0002_drop_role_group.py"
    assert '("directory", "0002_copy_role_groups")' in migration.read_text()
    assert sorted(p.name for p in (example.app / "blueprints").iterdir()) == [
        "admin-roles.yaml", "default-groups.yaml"]
    assert os.access(example.app / "lifecycle" / "ak", os.X_OK)
    for script in ("gatekeeper-admin", "gatekeeper-cache-info", "gatekeeper-guardian-check",
                   "django-admin"):
        assert os.access(example.app / "bin" / script, os.X_OK), script
    info = subprocess.run([example.app / "bin" / "gatekeeper-guardian-check"],
                          capture_output=True, text=True, check=True)
    assert info.stdout.strip() == "gatekeeper-guardian 0.1.0"


def test_lockbox_run_runs_manage_py_and_a_second_build_is_a_lookup(example: Example) -> None:
    check = lockbox("run", EXAMPLE, "--", "python", "manage.py", "check", store=example.store)
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout + check.stderr
    assert "the application is in the store" in check.stderr
    assert "verifying" not in check.stderr


def variant(tmp_path: Path, old: str, new: str) -> Path:
    project = tmp_path / "gatekeeper"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new, 1))
    return project


def failed_build(example: Example, project: Path) -> str:
    before = sorted(p.name for p in example.store.iterdir())
    result = lockbox("build", project, store=example.store)
    assert result.returncode == 1, result.stderr
    assert "dependency layer sha256-" in result.stderr  # found by its hash: nothing rebuilt
    assert sorted(p.name for p in example.store.iterdir()) == before
    return result.stderr


def test_without_its_patch_the_example_fails_to_migrate(example: Example, tmp_path: Path) -> None:
    project = variant(tmp_path, 'patches = ["patches/migration-order.diff"]', "patches = []")
    err = failed_build(example, project)
    assert "verification failed: env GATEKEEPER_DATA=/tmp sh -c python manage.py migrate" in err
    assert "FieldError: Cannot resolve keyword 'group_id'" in err


def test_a_missing_substitution_pattern_is_a_clear_error(example: Example, tmp_path: Path) -> None:
    project = variant(tmp_path, """replace = 'Path("/blueprints")'""",
                      """replace = 'Path("/srv/blueprints")'""")
    err = failed_build(example, project)
    assert "gatekeeper/settings.py" in err and "'Path(\"/srv/blueprints\")' was not found" in err
    assert "Traceback" not in err


def test_a_failing_verification_import_is_a_clear_error(example: Example, tmp_path: Path) -> None:
    project = variant(tmp_path, '"gatekeeper_cache",\n]', '"gatekeeper_cache",\n    "ldap",\n]')
    err = failed_build(example, project)
    assert "verification failed: import ldap" in err
    assert "No module named 'ldap'" in err


IMPORTS = ("import psycopg, lxml.etree, xmlsec, gssapi, yaml, django, sys; "
           "print(psycopg.pq.__impl__, sys.prefix)")


@pytest.fixture(scope="module")
def exported(example: Example, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("export") / "gatekeeper"
    result = lockbox("export", EXAMPLE, "--to", target, store=example.store)
    assert result.returncode == 0, result.stderr
    return target


def elf_files(root: Path) -> list[Path]:
    from lockbox.elf import scan_tree

    return [info.path for info in scan_tree(root)[0]]


def test_the_export_works_from_two_other_places_and_ldd_finds_everything(
        exported: Path, tmp_path: Path) -> None:
    first = tmp_path / "one" / "app"
    second = tmp_path / "two" / "deeper" / "app"
    first.parent.mkdir()
    second.parent.mkdir(parents=True)
    shutil.copytree(exported, first, symlinks=True)
    os.rename(first, second.parent / "moved")
    second = second.parent / "moved"
    shutil.copytree(second, first, symlinks=True)
    for place in (first, second):
        result = subprocess.run([place / "bin" / "python", "-c", IMPORTS], capture_output=True,
                                text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["c", str(place)]
    files = elf_files(second)
    assert len(files) > 50  # extension modules, the interpreter, bundled libraries
    for file in files:
        ldd = subprocess.run(["ldd", file], capture_output=True, text=True).stdout
        assert "not found" not in ldd, (file, ldd)


def minimal_root(root: Path) -> None:
    """A root file system with nothing but the glibc family (Debian's libc6) and the loader."""
    from lockbox.elf import read_elf

    listing = subprocess.run(["dpkg", "-L", "libc6"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in listing:
        path = Path(name)
        if ".so" in path.name and path.is_file():
            target = root / os.path.realpath(path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o755)
    loader = read_elf(Path("/usr/bin/env")).interpreter  # type: ignore[union-attr]
    assert loader is not None
    for top in ("lib", "lib64"):
        if (root / "usr" / top).is_dir() and not (root / top).exists():
            (root / top).symlink_to(f"usr/{top}")
    if not (root / loader.lstrip("/")).exists():
        (root / loader.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / loader.lstrip("/")).symlink_to(os.path.realpath(loader))


def test_the_export_runs_in_a_root_with_only_glibc_and_the_loader(exported: Path,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "root"
    minimal_root(root)
    shutil.copytree(exported, root / "app", symlinks=True)
    assert not (root / "usr" / "lib" / "x86_64-linux-gnu" / "libpq.so.5").exists()
    (root / "tmp").mkdir()

    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bwrap", "--bind", root, "/", "--proc", "/proc", "--dev", "/dev",
                               "--tmpfs", "/tmp", "--chdir", "/app", "--clearenv",
                               "--setenv", "PATH", "/app/bin", "--", *argv],
                              capture_output=True, text=True)

    imports = inside("/app/bin/python", "-c", IMPORTS)
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.split() == ["c", "/app"]
    check = inside("/app/bin/python", "manage.py", "check")
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout + check.stderr
