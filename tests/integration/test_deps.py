"""The dependency phase with real uv, a loopback index, a C extension and a git repository.

One project is locked and built once for the module; the tests read that layer, rebuild it
under different conditions, and break copies of the project in the ways users do.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from tests.packages import (
    BROKEN_FILES,
    CEXT_FILES,
    git_repository,
    pure_sdist_files,
    serve,
    write_sdist,
    write_wheel,
)

pytestmark = pytest.mark.integration

PYTHON = find_interpreter("3.12", None).executable


def lockbox(
    *args: str | Path, store: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@dataclass(frozen=True)
class Built:
    root: Path
    project: Path
    store: Path
    cache: Path
    layer: Path
    """The registered layer's directory."""
    site: Path
    digest: str
    """Its SRI hash as printed."""
    url: str
    """The loopback index."""
    output: subprocess.CompletedProcess[str]


def make_project(root: Path, url: str, tools: Path, repo: str, name: str = "app") -> Path:
    project = root / name
    (project / "packages" / "member").mkdir(parents=True)
    (project / "packages" / "member" / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
        [project]
        name = "lbt-member"
        version = "0.1.0"
        dependencies = ["lbt-alpha"]

        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        """
        )
    )
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
        [project]
        name = "{name}"
        version = "0.1.0"
        requires-python = ">=3.12"
        dependencies = ["lbt-alpha", "lbt-beta", "lbt-cext", "lbt-gamma", "lbt-delta", "lbt-member"]

        [dependency-groups]
        dev = ["lbt-epsilon"]

        [tool.uv]
        find-links = ["{url}"]
        no-binary-package = ["lbt-beta"]

        [tool.uv.sources]
        lbt-gamma = {{ git = "{repo.removeprefix("git+")}" }}
        lbt-member = {{ workspace = true }}

        [tool.uv.workspace]
        members = ["packages/member"]

        [tool.lockbox]
        python = "3.12"

        [tool.lockbox.deps]
        exclude = ["lbt-delta"]

        [tool.lockbox.deps.build.lbt-cext]
        env = {{ CFLAGS = "-DLOCKBOX_TEST_FLAG=42" }}
        path = ["{tools}"]
        """
        )
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
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("deps")
    index = root / "index"
    index.mkdir()
    write_wheel(
        index,
        "lbt_alpha",
        "1.0",
        {
            "lbt_alpha.py": "VALUE = 'alpha'\n",
            "lbt_alpha-1.0.dist-info/entry_points.txt": "[console_scripts]\nlbt-alpha = lbt_alpha:main\n",
        },
    )
    write_wheel(index, "lbt_beta", "1.0", {"lbt_beta.py": "VALUE = 'beta from a wheel'\n"})
    write_sdist(index, "lbt_beta", "1.0", pure_sdist_files("lbt_beta", "VALUE = 'beta built'\n"))
    write_sdist(index, "lbt_cext", "1.0", CEXT_FILES)
    write_wheel(index, "lbt_delta", "1.0", {"lbt_delta.py": "VALUE = 'excluded'\n"})
    write_wheel(index, "lbt_epsilon", "1.0", {"lbt_epsilon.py": "VALUE = 'dev only'\n"})
    write_sdist(index, "lbt_broken", "1.0", BROKEN_FILES)
    tools = root / "tools"
    tools.mkdir()
    (tools / "cext-config").write_text("#!/bin/sh\necho tool-found-on-recipe-path\n")
    (tools / "cext-config").chmod(0o755)
    repo = git_repository(root / "gamma-repo", "lbt_gamma", "2.0", "VALUE = 'gamma from git'\n")
    with serve(index) as url:
        project = make_project(root, url, tools, repo)
        store = root / "store"
        cache = store / ".lockbox" / "uv-cache"  # the store's own
        pinned = lockbox("lock-build", project, store=store)
        assert pinned.returncode == 0, pinned.stderr
        output = lockbox("build", "--deps-only", project, store=store)
        assert output.returncode == 0, output.stderr
        layer = Path(output.stdout.strip())
        digest = output.stderr.split("deps hash: ")[1].split()[0]
        yield Built(
            root,
            project,
            store,
            cache,
            layer,
            layer / "lib" / "python3.12" / "site-packages",
            digest,
            url,
            output,
        )


def test_the_layer_holds_exactly_the_locked_third_party_packages(built: Built) -> None:
    dists = sorted(p.name for p in built.site.glob("*.dist-info"))
    assert dists == [
        "lbt_alpha-1.0.dist-info",
        "lbt_beta-1.0.dist-info",
        "lbt_cext-1.0.dist-info",
        "lbt_gamma-2.0.dist-info",
    ]
    assert sorted(p.name for p in built.layer.iterdir()) == ["lib"]
    assert not list(built.layer.rglob("__pycache__")) and not list(built.layer.rglob("*.pyc"))
    assert not (built.site / "_virtualenv.pth").exists()


def test_packages_work_and_per_package_build_settings_were_applied(built: Built) -> None:
    script = textwrap.dedent(
        """\
        import json, cext, lbt_alpha, lbt_beta, lbt_gamma
        print(json.dumps({"crc": cext.crc(b"lockbox"), "flag": cext.flag(), "tool": cext.tool(),
                          "optimized": cext.optimized(),
                          "build_dir": cext.build_dir(), "beta": lbt_beta.VALUE,
                          "gamma": lbt_gamma.VALUE}))
        """
    )
    result = subprocess.run(
        [PYTHON, "-c", f"import sys; sys.path.insert(0, {str(built.site)!r})\n" + script],
        capture_output=True,
        text=True,
        check=True,
    )
    values = json.loads(result.stdout)
    assert values["crc"] == zlib.crc32(b"lockbox")
    assert values["flag"] == 42  # the recipe's CFLAGS were added ...
    assert values["optimized"] is True  # ... to the interpreter's -O3 -DNDEBUG, not instead
    assert values["tool"] == "tool-found-on-recipe-path"
    assert values["beta"] == "beta built"  # no-binary-package: built from the sdist
    assert values["gamma"] == "gamma from git"
    assert values["build_dir"].startswith("/lockbox-scrubbed---")


def test_no_build_path_survives(built: Built) -> None:
    needles = [
        b"/tmp/lockbox-build",
        b"lockbox-deps-",
        str(built.cache).encode(),
        str(built.project).encode(),
        str(PYTHON.parent.parent).encode(),
        b"/lockbox/uv-cache",
    ]
    for path in built.layer.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, f"{needle!r} in {path}"
    metadata = json.loads(lockbox("store", "ls", "--json", store=built.store).stdout)
    (entry,) = metadata
    assert entry["inputs"]["scrubbed"]["occurrences"] >= 1
    assert "scrubbed" in built.output.stderr and "build paths" in built.output.stderr


def test_files_uv_took_from_its_cache_stay_hardlinked_to_it(built: Built) -> None:
    """The store's uv cache is on the store's mount, so uv links instead of copying; a
    file scrubbing changed is a new file, and the cache keeps the original."""
    alpha = built.site / "lbt_alpha.py"
    assert os.stat(alpha).st_nlink > 1
    cached = [
        p for p in built.cache.rglob("lbt_alpha.py") if p.stat().st_ino == alpha.stat().st_ino
    ]
    assert cached
    speed = next((built.site / "cext").glob("_speed*.so"))
    assert os.stat(speed).st_nlink == 1
    originals = list(built.cache.rglob("_speed*.so"))
    assert originals and all(b"/tmp/lockbox-build/uv-cache" in p.read_bytes() for p in originals)


def test_a_rebuild_in_the_same_store_reads_only_files_it_has_not_seen(built: Built) -> None:
    """Same project directory (it is one of the roots scanned for), same store."""
    originals = {name: (built.project / name).read_text() for name in ("uv.lock", "pyproject.toml")}
    try:
        with serve(built.root / "index") as url:
            for name, text in originals.items():
                (built.project / name).write_text(text.replace(built.url, url))
            result = lockbox("-v", "build", "--deps-only", built.project, store=built.store)
    finally:
        for name, text in originals.items():
            (built.project / name).write_text(text)
    assert result.returncode == 0, result.stderr
    known = int(result.stderr.split(" files known clean")[0].rsplit("; ", 1)[1])
    assert known > 0  # lbt_alpha.py and others come hardlinked from the sealed cache
    assert result.stderr.split("deps hash: ")[1].split()[0] == built.digest


def test_records_match_the_final_bytes_and_scripts_are_gone(built: Built) -> None:
    for record in built.site.glob("*.dist-info/RECORD"):
        with open(record, newline="") as file:
            rows = list(csv.reader(file))
        listed = {row[0] for row in rows}
        on_disk = {
            str(p.relative_to(built.site))
            for p in built.site.rglob("*")
            if p.is_file()
            and str(p.relative_to(built.site)).startswith(
                tuple(name for name in listed if "/" not in name) + (record.parent.name,)
            )
        }
        assert on_disk <= listed | {str(record.relative_to(built.site))}
        for path, digest, size in rows:
            assert not path.startswith(".."), path
            if path.endswith("RECORD"):
                continue
            data = (built.site / path).read_bytes()
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}" and int(size) == len(data), path
    assert not (built.layer / "bin").exists()


def test_the_layer_hash_is_the_nar_hash_nix_computes(built: Built) -> None:
    nix = subprocess.run(
        ["nix-hash", "--type", "sha256", built.layer], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert built.digest == "sha256-" + base64.b64encode(bytes.fromhex(nix)).decode()
    assert built.layer.name.endswith("-app-deps")


def test_rebuilding_elsewhere_gives_the_same_hash(built: Built, tmp_path: Path) -> None:
    """Another store, a uv cache outside it ($LOCKBOX_UV_CACHE: bound into the sandbox,
    copied from rather than linked, and empty, so the C extension is compiled again),
    another temporary directory, umask, time zone and locale."""
    other_tmp = tmp_path / "a-much-longer-temporary-directory-name"
    other_tmp.mkdir()
    with serve(built.root / "index") as url:
        project = tmp_path / "copy"
        shutil.copytree(built.project, project)
        # The lock names the index by URL; serve the same files at the same address.
        (project / "uv.lock").write_text(
            (built.project / "uv.lock").read_text().replace(built.url, url)
        )
        (project / "pyproject.toml").write_text(
            (built.project / "pyproject.toml").read_text().replace(built.url, url)
        )
        result = subprocess.run(
            [
                "sh",
                "-c",
                'umask 077 && exec "$@"',
                "sh",
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
            env={
                **os.environ,
                "LOCKBOX_UV_CACHE": str(tmp_path / "cache"),
                "TZ": "Pacific/Chatham",
                "LC_ALL": "C",
                "LANG": "C",
                "TMPDIR": str(other_tmp),
            },
        )
    assert result.returncode == 0, result.stderr
    assert "Built lbt-cext" in result.stderr  # really compiled again, not reused
    assert result.stderr.split("deps hash: ")[1].split()[0] == built.digest


def test_a_declared_layer_in_the_store_is_a_lookup(built: Built, tmp_path: Path) -> None:
    project = tmp_path / "pinned"
    shutil.copytree(built.project, project)
    text = (
        (project / "pyproject.toml")
        .read_text()
        .replace('exclude = ["lbt-delta"]', f'exclude = ["lbt-delta"]\nhash = "{built.digest}"')
    )
    (project / "pyproject.toml").write_text(text)
    # Neither uv nor bubblewrap is reachable: a lookup must not need them.
    result = lockbox(
        "build", "--deps-only", project, store=built.store, env={"PATH": str(tmp_path / "empty")}
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == built.layer
    assert "is in the store" in result.stderr
    # Once the recipe has settled, a lookup leaves a record and the next one is answered
    # from it, without reading the project (docs/store.md, "Shortcuts").
    time.sleep(max(0.0, (project / "pyproject.toml").stat().st_ctime + 2.1 - time.time()))
    argv = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "lockbox",
        "--store",
        str(built.store),
        "build",
        "--deps-only",
        str(project),
    ]
    runs = [subprocess.run(argv, capture_output=True, text=True) for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0]
    assert runs[0].stdout == runs[1].stdout == result.stdout
    assert (
        "lockbox.inputs.project" in runs[0].stderr
        and "lockbox.inputs.project" not in runs[1].stderr
    )


def test_a_wrong_declared_hash_fails_registers_nothing_and_can_be_diffed(
    built: Built, tmp_path: Path
) -> None:
    project = tmp_path / "wrong"
    shutil.copytree(built.project, project)
    wrong = "sha256-" + base64.b64encode(bytes(32)).decode()
    text = (
        (project / "pyproject.toml")
        .read_text()
        .replace('exclude = ["lbt-delta"]', f'exclude = []\nhash = "{wrong}"')
    )
    (project / "pyproject.toml").write_text(text)
    before = json.loads(lockbox("store", "ls", "--json", store=built.store).stdout)
    with serve(built.root / "index") as url:
        for name in ("uv.lock", "pyproject.toml"):
            (project / name).write_text((project / name).read_text().replace(built.url, url))
        result = lockbox("build", "--deps-only", project, store=built.store)
    assert result.returncode == 1
    assert f"specified: {wrong}" in result.stderr
    got = result.stderr.split("got:")[1].split()[0]
    assert got.startswith("sha256-") and got != built.digest  # lbt-delta is in now
    assert "Traceback" not in result.stderr and "lockbox lock-hash" in result.stderr
    assert json.loads(lockbox("store", "ls", "--json", store=built.store).stdout) == before
    diff = lockbox("diff", project, store=built.store)
    assert diff.returncode == 1, diff.stderr
    assert "+ distribution lbt_delta 1.0" in diff.stdout
    assert "+ lib/python3.12/site-packages/lbt_delta.py" in diff.stdout


def test_lock_hash_writes_the_hash_into_the_recipe(built: Built, tmp_path: Path) -> None:
    project = tmp_path / "unpinned"
    shutil.copytree(built.project, project)
    before = (project / "pyproject.toml").read_text()
    result = lockbox("lock-hash", project, store=built.store, env={"PATH": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    after = (project / "pyproject.toml").read_text()
    assert f'hash = "{built.digest}"' in after
    assert after.replace(f'hash = "{built.digest}"\n', "") == before
    shown = json.loads(lockbox("recipe", "show", "--json", project, store=built.store).stdout)
    assert shown["deps"]["hash"] == built.digest


def copy_with(built: Built, tmp_path: Path, edit: str, replacement: str) -> Path:
    project = tmp_path / "broken"
    shutil.copytree(built.project, project)
    text = (project / "pyproject.toml").read_text()
    assert edit in text
    (project / "pyproject.toml").write_text(text.replace(edit, replacement))
    return project


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], store: Path, *needles: str
) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert (
        not store.exists() or json.loads(lockbox("store", "ls", "--json", store=store).stdout) == []
    )


def test_a_missing_lock_is_a_clear_error(built: Built, tmp_path: Path) -> None:
    project = copy_with(built, tmp_path, 'python = "3.12"', 'python = "3.12"')
    (project / "uv.lock").unlink()
    result = lockbox("build", project, store=tmp_path / "store")
    assert_clean_failure(result, tmp_path / "store", "has no uv.lock", "uv lock")


def test_a_stale_lock_is_a_clear_error(built: Built, tmp_path: Path) -> None:
    project = copy_with(built, tmp_path, '"lbt-member"]', '"lbt-member", "lbt-epsilon"]')
    result = lockbox("build", project, store=tmp_path / "store")
    assert_clean_failure(result, tmp_path / "store", "uv.lock is out of date", "uv lock")


def test_an_interpreter_outside_requires_python_is_a_clear_error(
    built: Built, tmp_path: Path
) -> None:
    project = copy_with(built, tmp_path, 'python = "3.12"', 'python = "3.11"')
    result = lockbox("build", project, store=tmp_path / "store")
    assert_clean_failure(
        result,
        tmp_path / "store",
        "no CPython on this machine matches",
        "python = '3.11'",
        "requires-python '>=3.12'",
    )


def test_a_failing_sdist_build_names_the_package_and_the_fix(built: Built, tmp_path: Path) -> None:
    with serve(built.root / "index") as url:
        project = copy_with(built, tmp_path, '"lbt-member"]', '"lbt-member", "lbt-broken"]')
        text = (project / "pyproject.toml").read_text().replace(built.url, url)
        (project / "pyproject.toml").write_text(text)
        subprocess.run(
            ["uv", "lock", "--python", str(PYTHON)],
            cwd=project,
            check=True,
            capture_output=True,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
        result = lockbox("build", project, store=tmp_path / "store")
    assert_clean_failure(
        result,
        tmp_path / "store",
        "building lbt-broken from source failed",
        "lockbox-missing-header.h",
        "install libxml2-dev",
    )


def test_an_unreachable_index_is_a_clear_error(built: Built, tmp_path: Path) -> None:
    with serve(built.root / "index") as url:
        pass  # the port is closed again: nothing listens there now
    project = tmp_path / "offline"
    shutil.copytree(built.project, project)
    for name in ("uv.lock", "pyproject.toml"):
        (project / name).write_text((project / name).read_text().replace(built.url, url))
    result = lockbox("build", project, store=tmp_path / "store")  # a new store: an empty cache
    assert_clean_failure(result, tmp_path / "store", "could not download", "nothing was added")
