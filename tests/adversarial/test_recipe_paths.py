"""Hostile recipe paths: every path a recipe names stays inside its tree.

Each attack builds a tiny project (no dependencies) whose recipe or sources try to read a
"host" file into the store, or to write or delete outside the output: with ``..``, an
absolute path, or a symbolic link in the project or planted in the output. The host is a
decoy directory under the test's temporary directory, beside the project. Every attack
must end with a precise error naming the recipe key and the path (or, where the recipe is
harmless, a correct build), the decoy unchanged, no store file holding its content, and
``lockbox store verify`` passing.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the interpreter is imported into it once."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def token() -> str:
    """What the decoy file holds: found anywhere in the store, it was copied there."""
    return f"decoy-{uuid.uuid4().hex}"


@pytest.fixture
def decoy(tmp_path: Path, token: str) -> Path:
    """A host directory outside the project, with a file the attacks aim at."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "shadow").write_text(f"root:{token}\n")
    return host


@pytest.fixture
def build(
    cli: Callable[..., CliResult], make_project: Callable[..., Path], store: Path, decoy: Path
) -> Callable[..., CliResult]:
    """Build a project with ``app`` recipe lines and ``files``; ``links`` are made in it."""

    made: list[Path] = []

    def run(
        app: str,
        files: dict[str, str] | None = None,
        links: dict[str, str | Path] | None = None,
        pyproject: str = "",
    ) -> CliResult:
        recipe = (
            f'{pyproject}[tool.lockbox]\npython = "3.12"\n\n[tool.lockbox.app]\n'
            f"{textwrap.dedent(app)}"
        )
        root = make_project(
            recipe, {"run.py": "print('hi')\n", **(files or {})}, name=f"demo{len(made)}"
        )
        made.append(root)
        if "[build-system]" in pyproject:  # a package: uv locks it as editable
            lock = root / "uv.lock"
            lock.write_text(lock.read_text().replace('{ virtual = "." }', '{ editable = "." }'))
        for name, target in (links or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(target)
        return cli("--store", store, "build", root)

    return run


def refused(result: CliResult, *needles: str) -> str:
    text = result.out + result.err
    assert result.code != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def assert_host_untouched(decoy: Path, store: Path, cli: Callable[..., CliResult]) -> None:
    token = (decoy / "shadow").read_text().removeprefix("root:").strip()
    assert token.startswith("decoy-"), token
    assert sorted(p.name for p in decoy.iterdir()) == ["shadow"]
    holding = subprocess.run(
        ["grep", "-rlF", "--no-messages", token, str(store)], capture_output=True, text=True
    ).stdout
    assert holding == "", f"the store holds the decoy's content: {holding}"
    verified = cli("--store", store, "store", "verify")
    assert verified.code == 0, verified.out + verified.err


def test_delete_climbing_out_of_the_output_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    pattern = "../" * 40 + str(decoy / "shadow").lstrip("/")
    text = refused(
        build(f'root = ["run.py"]\ndelete = ["{pattern}"]\n'),
        "app.delete[0]",
        "leads out of the output",
    )
    assert "pyproject.toml:" in text  # located in the recipe, before any build work
    assert_host_untouched(decoy, store, cli)


def test_an_absolute_delete_pattern_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    refused(
        build(f'root = ["run.py"]\ndelete = ["{decoy}/*"]\n'),
        "app.delete[0]",
        f"'{decoy}/*'",
        "is absolute",
    )
    assert_host_untouched(decoy, store, cli)


def test_delete_does_not_descend_through_a_link_in_the_output(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    # The project's link is copied into the output as a link; deleting below it would
    # delete the host's files.
    refused(
        build('root = ["run.py", "hostdir"]\ndelete = ["hostdir/*"]\n', links={"hostdir": decoy}),
        "app.delete[0]",
        "'hostdir/*'",
        "goes through hostdir, a symbolic link",
    )
    assert_host_untouched(decoy, store, cli)
    refused(
        build('root = ["run.py", "hostdir"]\ndelete = ["*/shadow"]\n', links={"hostdir": decoy}),
        "app.delete",
        "matches nothing",
    )
    assert_host_untouched(decoy, store, cli)


def test_deleting_a_link_removes_the_link_not_its_target(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    result = build('root = ["run.py", "hostdir"]\ndelete = ["host*"]\n', links={"hostdir": decoy})
    assert result.code == 0, result.out + result.err
    assert_host_untouched(decoy, store, cli)


def test_a_source_through_a_linked_folder_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    text = refused(
        build('root = ["run.py", "hostetc/shadow"]\n', links={"hostetc": decoy}),
        "app.root[1]",
        "'hostetc/shadow'",
        "goes through hostetc, a symbolic link",
        "leads out of the project",
    )
    assert "pyproject.toml:" in text
    assert_host_untouched(decoy, store, cli)
    refused(
        build(
            'site-packages = [{ from = "hostetc/shadow", to = "x" }]\n', links={"hostetc": decoy}
        ),
        "app.site-packages[0]",
        "goes through hostetc",
    )
    assert_host_untouched(decoy, store, cli)


def test_a_patch_through_a_linked_folder_is_refused(build, decoy, store, cli, token) -> None:  # type: ignore[no-untyped-def]
    (decoy / "evil.diff").write_text(
        f"--- a/run.py\n+++ b/run.py\n@@ -1 +1 @@\n-print('hi')\n+print('{token}')\n"
    )
    refused(
        build('root = ["run.py"]\npatches = ["hostetc/evil.diff"]\n', links={"hostetc": decoy}),
        "app.patches[0]",
        "goes through hostetc",
    )
    (decoy / "evil.diff").unlink()
    assert_host_untouched(decoy, store, cli)


def test_a_patch_writing_through_a_linked_folder_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    files = {"evil.diff": "--- /dev/null\n+++ b/hostdir/planted\n@@ -0,0 +1 @@\n+planted\n"}
    refused(
        build(
            'root = ["run.py", "hostdir"]\npatches = ["evil.diff"]\n',
            files,
            links={"hostdir": decoy},
        ),
        "evil.diff",
        "hostdir/planted",
        "symbolic link",
    )
    assert_host_untouched(decoy, store, cli)


def test_a_substitution_in_a_linked_file_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    app = (
        'root = ["run.py", "app"]\n[[tool.lockbox.app.substitute]]\n'
        'file = "app/settings.py"\nreplace = "root"\nwith = "pwned"\n'
    )
    refused(
        build(app, {"app/__init__.py": ""}, links={"app/settings.py": decoy / "shadow"}),
        "app.substitute[0].file",
        "'app/settings.py'",
        "a symbolic link",
    )
    assert_host_untouched(decoy, store, cli)


def test_a_copy_into_a_linked_folder_of_the_output_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    # The first copy puts the link into the output; the second would write through it.
    files = {"payload.txt": "payload\n"}
    refused(
        build(
            'root = ["run.py", "hostdir", { from = "payload.txt", to = "hostdir/x" }]\n',
            files,
            links={"hostdir": decoy},
        ),
        "app.root[2]",
        "'hostdir/x'",
        "goes through hostdir, a symbolic link",
    )
    assert_host_untouched(decoy, store, cli)
    refused(
        build(
            'site-packages = ["hostdir", { from = "payload.txt", to = "hostdir/x" }]\n',
            files,
            links={"hostdir": decoy},
        ),
        "app.site-packages[1]",
        "site-packages/hostdir, a symbolic link",
    )
    assert_host_untouched(decoy, store, cli)


def test_recipe_paths_leaving_the_project_are_all_reported(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    app = (
        f'root = ["{decoy}/shadow", {{ from = "run.py", to = "../../run.py" }}]\n'
        f'site-packages = ["../host"]\npatches = ["{decoy}/x.diff"]\n'
    )
    text = refused(
        build(app),
        "4 problems",
        "app.root[0]",
        "app.root[1]",
        "app.site-packages[0]",
        "app.patches[0]",
    )
    assert text.count("is absolute") == 2 and text.count("leads out of") == 2
    assert_host_untouched(decoy, store, cli)


def test_a_member_package_through_a_linked_folder_is_refused(build, decoy, store, cli) -> None:  # type: ignore[no-untyped-def]
    (decoy / "pkg").mkdir()
    (decoy / "pkg/__init__.py").write_text((decoy / "shadow").read_text())
    pyproject = (
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["lib/pkg"]\n\n'
    )
    refused(
        build('root = ["run.py"]\n', links={"lib": decoy}, pyproject=pyproject),
        "the module of demo0",
        "'lib/pkg'",
        "goes through lib, a symbolic link",
    )
    shutil.rmtree(decoy / "pkg")
    assert_host_untouched(decoy, store, cli)
