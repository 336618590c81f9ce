"""The bundled example (examples/gatekeeper), built from scratch as the README's main job does.

It is built once for the module, into a new store with an empty uv cache: lxml, xmlsec,
psycopg-c and gssapi are compiled from source (minutes on two cores), and the layer must
come out with the hash the example's recipe declares. The failure cases edit copies of the
example's recipe; their dependency layer is then found in the store by that hash.
"""

from __future__ import annotations

import os
import re
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
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LOCKBOX_UV_CACHE"},
    )


# The host's headers and compiler, hidden from the build (a private mount namespace): the
# example compiles in its build root of pinned Debian packages, so the declared hash holds
# whatever -dev packages and compiler this machine has, or none.
HIDDEN = ("/usr/include", "/usr/lib/gcc")


def hiding_host_toolchain(*argv: str | Path) -> list[str]:
    mounts = " && ".join(f"mount -t tmpfs lockbox-hidden {path}" for path in HIDDEN)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mounts} && exec "$@"',
        "sh",
        *map(str, argv),
    ]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    store = tmp_path_factory.mktemp("example") / "store"
    output = subprocess.run(
        hiding_host_toolchain(sys.executable, "-m", "lockbox", "--store", store, "build", EXAMPLE),
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LOCKBOX_UV_CACHE"},
    )
    assert output.returncode == 0, output.stderr[-5000:]
    yield Example(store, Path(output.stdout.strip()), output)


def test_the_host_toolchain_was_hidden_and_the_build_root_used(example: Example) -> None:
    check = subprocess.run(
        hiding_host_toolchain("sh", "-c", "find /usr/include /usr/lib/gcc -mindepth 1 | wc -l"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "0"  # what the build saw of the host's toolchain
    assert "making the build root" in example.output.stderr
    roots = [line for line in example.output.stderr.splitlines() if line.startswith("build root:")]
    assert roots and "packages" in roots[0]


def test_the_example_builds_with_its_declared_layer_and_passes_every_check(
    example: Example,
) -> None:
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
        "admin-roles.yaml",
        "default-groups.yaml",
    ]
    assert os.access(example.app / "lifecycle" / "ak", os.X_OK)
    for script in (
        "gatekeeper-admin",
        "gatekeeper-cache-info",
        "gatekeeper-guardian-check",
        "django-admin",
    ):
        assert os.access(example.app / "bin" / script, os.X_OK), script
    info = subprocess.run(
        [example.app / "bin" / "gatekeeper-guardian-check"],
        capture_output=True,
        text=True,
        check=True,
    )
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
    project = variant(
        tmp_path, """replace = 'Path("/blueprints")'""", """replace = 'Path("/srv/blueprints")'"""
    )
    err = failed_build(example, project)
    assert "gatekeeper/settings.py" in err and "'Path(\"/srv/blueprints\")' was not found" in err
    assert "Traceback" not in err


def test_a_failing_verification_import_is_a_clear_error(example: Example, tmp_path: Path) -> None:
    project = variant(tmp_path, '"gatekeeper_cache",\n]', '"gatekeeper_cache",\n    "ldap",\n]')
    err = failed_build(example, project)
    assert "verification failed: import ldap" in err
    assert "No module named 'ldap'" in err


IMPORTS = (
    "import psycopg, lxml.etree, xmlsec, gssapi, yaml, django, sys; "
    "print(psycopg.pq.__impl__, sys.prefix)"
)


@pytest.fixture(scope="module")
def exported(example: Example, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("export") / "gatekeeper"
    result = lockbox("export", EXAMPLE, "--to", target, store=example.store)
    assert result.returncode == 0, result.stderr
    return target


def elf_files(root: Path) -> list[Path]:
    from lockbox.native.elf import scan_tree

    return [info.path for info in scan_tree(root)[0]]


def test_the_export_works_from_two_other_places_and_ldd_finds_everything(
    exported: Path, tmp_path: Path
) -> None:
    first = tmp_path / "one" / "app"
    second = tmp_path / "two" / "deeper" / "app"
    first.parent.mkdir()
    second.parent.mkdir(parents=True)
    shutil.copytree(exported, first, symlinks=True)
    os.rename(first, second.parent / "moved")
    second = second.parent / "moved"
    shutil.copytree(second, first, symlinks=True)
    for place in (first, second):
        result = subprocess.run(
            [place / "bin" / "python", "-c", IMPORTS],
            capture_output=True,
            text=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["c", str(place)]
    files = elf_files(second)
    assert len(files) > 50  # extension modules, the interpreter, bundled libraries
    for file in files:
        ldd = subprocess.run(["ldd", file], capture_output=True, text=True).stdout
        assert "not found" not in ldd, (file, ldd)


def minimal_root(root: Path) -> None:
    """A root file system with nothing but the glibc family (Debian's libc6) and the loader."""
    from lockbox.native.elf import read_elf

    listing = subprocess.run(
        ["dpkg", "-L", "libc6"], capture_output=True, text=True, check=True
    ).stdout.split()
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


def test_the_export_runs_in_a_root_with_only_glibc_and_the_loader(
    exported: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    minimal_root(root)
    shutil.copytree(exported, root / "app", symlinks=True)
    assert not (root / "usr" / "lib" / "x86_64-linux-gnu" / "libpq.so.5").exists()
    (root / "tmp").mkdir()

    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "bwrap",
                "--bind",
                root,
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "--chdir",
                "/app",
                "--clearenv",
                "--setenv",
                "PATH",
                "/app/bin",
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
        )

    imports = inside("/app/bin/python", "-c", IMPORTS)
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.split() == ["c", "/app"]
    check = inside("/app/bin/python", "manage.py", "check")
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout + check.stderr


@pytest.fixture(scope="module")
def image(example: Example, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    where = tmp_path_factory.mktemp("image")
    result = lockbox(
        "image",
        EXAMPLE,
        "-o",
        where / "gatekeeper.tar",
        "--layout",
        where / "layout",
        store=example.store,
    )
    assert result.returncode == 0, result.stderr
    digest = result.stderr.split("manifest ")[1].split()[0]
    return where / "gatekeeper.tar", where / "layout", digest


def skopeo_inspect(reference: str) -> dict[str, object]:
    import json

    result = subprocess.run(["skopeo", "inspect", reference], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_skopeo_reads_the_archive_and_the_layout_as_the_same_image(
    example: Example, image: tuple[Path, Path, str]
) -> None:
    archive, layout, digest = image
    from_archive = skopeo_inspect(f"oci-archive:{archive}:latest")
    from_layout = skopeo_inspect(f"oci:{layout}:latest")
    assert from_archive["Digest"] == from_layout["Digest"] == digest
    assert len(from_archive["Layers"]) == 6  # type: ignore[arg-type]
    labels = from_archive["Labels"]
    assert labels["org.opencontainers.image.title"] == "gatekeeper"  # type: ignore[index]
    assert labels["org.opencontainers.image.created"] == "1980-01-01T00:00:00Z"  # type: ignore[index]
    assert labels["org.lockbox.base.packages"].startswith("libc6=")  # type: ignore[index]
    assert f"PATH={example.app}/bin:/usr/local/bin:/usr/bin:/bin" in from_archive["Env"]  # type: ignore[operator]


def test_the_unpacked_image_runs_the_application(
    example: Example, image: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, layout, _ = image
    bundle = tmp_path / "bundle"
    unpack = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", bundle],
        capture_output=True,
        text=True,
    )
    assert unpack.returncode == 0, unpack.stderr
    rootfs = bundle / "rootfs"
    assert not (rootfs / "usr" / "lib" / "x86_64-linux-gnu" / "libpq.so.5").exists()

    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        # No tmpfs on /tmp: the test's store, and so the application, is under /tmp.
        return subprocess.run(
            [
                "bwrap",
                "--bind",
                rootfs,
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--chdir",
                str(example.app),
                "--clearenv",
                "--setenv",
                "PATH",
                f"{example.app}/bin",
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
        )

    imports = inside(f"{example.app}/bin/python", "-c", IMPORTS)
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.split() == ["c", str(example.app)]
    check = inside(f"{example.app}/bin/python", "manage.py", "check")
    assert check.returncode == 0, check.stderr


def test_the_same_closure_gives_the_same_image_digest(
    example: Example, image: tuple[Path, Path, str], tmp_path: Path
) -> None:
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockbox",
            "--store",
            str(example.store),
            "image",
            EXAMPLE,
            "-o",
            tmp_path / "elsewhere" / "other-name.tar",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TZ": "Pacific/Chatham", "LC_ALL": "C"},
    )
    assert again.returncode == 0, again.stderr
    assert f"manifest {image[2]}" in again.stderr
    assert (tmp_path / "elsewhere" / "other-name.tar").read_bytes() == image[0].read_bytes()


def test_a_changed_application_shares_every_layer_but_its_own(
    example: Example, image: tuple[Path, Path, str], tmp_path: Path
) -> None:
    project = tmp_path / "gatekeeper"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    with open(project / "gatekeeper" / "cli.py", "a") as source:
        source.write("# changed\n")
    result = lockbox("image", project, "--layout", tmp_path / "layout", store=example.store)
    assert result.returncode == 0, result.stderr[-3000:]
    before = skopeo_inspect(f"oci:{image[1]}:latest")["Layers"]
    after = skopeo_inspect(f"oci:{tmp_path / 'layout'}:latest")["Layers"]
    # base, python, deps, bytecode, libraries: the same blobs; only the application's
    # layer is new (it lives at a new path).
    assert after[:5] == before[:5]  # type: ignore[index]
    assert after[5] != before[5]  # type: ignore[index]
    for name in ("python", "deps", "bytecode", "libraries"):
        assert re.search(f"layer {name}: .*kept from an earlier image", result.stderr)


def test_a_repeated_image_finds_the_closure_from_the_record_of_its_lookup(
    example: Example, image: tuple[Path, Path, str], tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "lockbox",
        "--store",
        str(example.store),
        "image",
        EXAMPLE,
        "-o",
        tmp_path / "again.tar",
    ]
    runs = [subprocess.run(command, capture_output=True, text=True) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert f"manifest {image[2]}" in run.stderr
        assert "the application is in the store" in run.stderr
    # The fixture's image recorded its lookup (unless the store was too fresh to trust); the
    # second run here answers from a record at the latest: no interpreter search, no
    # reading of sources.
    assert (
        "lockbox.assemble.app" not in runs[1].stderr
        and "lockbox.inputs.interpreters" not in runs[1].stderr
    )
    assert (tmp_path / "again.tar").read_bytes() == image[0].read_bytes()
    # The store entries' layers were kept from the first image; a damaged one is made again.
    for name in ("python", "deps", "bytecode", "libraries"):
        assert f"layer {name}: " in runs[1].stderr
        assert re.search(f"layer {name}: .*kept from an earlier image", runs[1].stderr)
    kept = sorted(example.store.glob(".lockbox/derived/*-gatekeeper-deps/*.blob"))
    assert len(kept) == 1
    damaged = kept[0].read_bytes()
    kept[0].unlink()  # the image's own blob may be a link of it
    kept[0].write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 1]))
    repaired = subprocess.run(command, capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr
    assert not re.search("layer deps: .*kept", repaired.stderr)
    assert (tmp_path / "again.tar").read_bytes() == image[0].read_bytes()
    assert kept[0].read_bytes() == damaged


def test_push_to_a_registry_and_pull_back_identical(
    example: Example, image: tuple[Path, Path, str], registry: tuple[str, Path], tmp_path: Path
) -> None:
    host, auth = registry
    pushed = lockbox(
        "image",
        EXAMPLE,
        "--push",
        f"{host}/team/gatekeeper:1.0",
        "--authfile",
        auth,
        "--no-tls-verify",
        store=example.store,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{host}/team/gatekeeper:1.0@{image[2]}"
    pulled = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-authfile",
            auth,
            f"docker://{host}/team/gatekeeper:1.0",
            f"oci:{tmp_path / 'pulled'}:latest",
        ],
        capture_output=True,
        text=True,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert skopeo_inspect(f"oci:{tmp_path / 'pulled'}:latest")["Digest"] == image[2]

    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        auth.read_text().replace(
            auth.read_text().split('"auth": "')[1].split('"')[0], "bG9ja2JveDp3cm9uZw=="
        )
    )  # lockbox:wrong
    refused = lockbox(
        "image",
        EXAMPLE,
        "--push",
        f"{host}/team/gatekeeper:2.0",
        "--authfile",
        wrong,
        "--no-tls-verify",
        store=example.store,
    )
    assert refused.returncode == 1
    assert "the registry refused the credentials" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_local_base_image_goes_under_the_closure(
    example: Example, image: tuple[Path, Path, str], tmp_path: Path
) -> None:
    def umoci(*argv: str | Path) -> None:
        result = subprocess.run(["umoci", *map(str, argv)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    base = tmp_path / "base"
    umoci("init", "--layout", base)
    umoci("new", "--image", f"{base}:v1")
    umoci("unpack", "--rootless", "--image", f"{base}:v1", tmp_path / "bundle")
    (tmp_path / "bundle" / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "bundle" / "rootfs" / "etc" / "base-marker").write_text("from the base\n")
    umoci("repack", "--image", f"{base}:v1", tmp_path / "bundle")
    umoci("config", "--image", f"{base}:v1", "--config.env", "FROM_BASE=yes")
    base_info = skopeo_inspect(f"oci:{base}:v1")

    result = lockbox(
        "image", EXAMPLE, "--base", f"{base}:v1", "--layout", tmp_path / "out", store=example.store
    )
    assert result.returncode == 0, result.stderr
    built = skopeo_inspect(f"oci:{tmp_path / 'out'}:latest")
    layers = built["Layers"]
    own = skopeo_inspect(f"oci:{image[1]}:latest")["Layers"]
    assert layers == base_info["Layers"] + own[1:]  # type: ignore[operator,index]
    assert "FROM_BASE=yes" in built["Env"]  # type: ignore[operator]
    assert built["Labels"]["org.opencontainers.image.base.digest"] == base_info["Digest"]  # type: ignore[index]
    umoci("unpack", "--rootless", "--image", f"{tmp_path / 'out'}:latest", tmp_path / "unpacked")
    rootfs = tmp_path / "unpacked" / "rootfs"
    assert (rootfs / "etc" / "base-marker").read_text() == "from the base\n"
    assert (rootfs / str(example.app).lstrip("/") / "manage.py").is_file()
    assert not (rootfs / "etc" / "passwd").exists()  # lockbox's own base layer is left out

    missing = lockbox(
        "image",
        EXAMPLE,
        "--base",
        tmp_path / "nowhere",
        "-o",
        tmp_path / "x.tar",
        store=example.store,
    )
    assert missing.returncode == 1 and "no such OCI image layout or archive" in missing.stderr
