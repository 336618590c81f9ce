"""Reading uv.lock: every source kind, artifacts, edges, and located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lockbox.errors import LockFileError
from lockbox.inputs.lock import parse_lock, read_lock
from tests.conftest import AUTHENTIK

HASH = "sha256:" + "ab" * 32
PYPI = 'source = { registry = "https://pypi.org/simple" }'

LOCK = textwrap.dedent(
    f"""\
    version = 1
    revision = 3
    requires-python = ">=3.11"
    resolution-markers = [
        "python_full_version >= '3.12'",
        "python_full_version < '3.12'",
    ]

    [manifest]
    members = ["app", "helper"]

    [[package]]
    name = "app"
    version = "1.0"
    source = {{ editable = "." }}
    dependencies = [
        {{ name = "helper" }},
        {{ name = "Numpy", version = "2.0.0", source = {{ registry = "https://pypi.org/simple" }}, marker = "python_full_version >= '3.12'" }},
        {{ name = "numpy", version = "1.26.4", source = {{ registry = "https://pypi.org/simple" }}, marker = "python_full_version < '3.12'" }},
        {{ name = "oci", extra = ["cli"] }},
    ]

    [package.optional-dependencies]
    web = [{{ name = "localdir" }}]

    [package.dev-dependencies]
    dev = [{{ name = "tool" }}]

    [[package]]
    name = "helper"
    source = {{ virtual = "packages/helper" }}

    [[package]]
    name = "numpy"
    version = "2.0.0"
    {PYPI}
    sdist = {{ url = "https://files.example/numpy-2.0.0.tar.gz", hash = "{HASH}", size = 10 }}
    wheels = [
        {{ url = "https://files.example/numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hash = "{HASH}", size = 5 }},
    ]

    [[package]]
    name = "numpy"
    version = "1.26.4"
    {PYPI}
    wheels = [{{ url = "https://files.example/numpy-1.26.4-cp311-cp311-win_amd64.whl", hash = "{HASH}" }}]

    [[package]]
    name = "oci"
    version = "0.0.14"
    source = {{ git = "https://github.com/example/oci?rev=v1&subdirectory=py#{"c" * 40}" }}

    [package.optional-dependencies]
    cli = [{{ name = "tool" }}]

    [[package]]
    name = "localdir"
    version = "0.1"
    source = {{ directory = "../localdir" }}

    [[package]]
    name = "tool"
    version = "3.0"
    source = {{ url = "https://files.example/tool-3.0-py3-none-any.whl" }}
    wheels = [{{ url = "https://files.example/tool-3.0-py3-none-any.whl", hash = "{HASH}" }}]
    """
)


def parse(text: str) -> object:
    return parse_lock(text, Path("/p/uv.lock"))


def test_reads_every_source_kind_and_artifact() -> None:
    lock = parse_lock(LOCK, Path("/p/uv.lock"))
    assert lock.revision == 3
    assert lock.requires_python == ">=3.11"
    assert lock.members == ("app", "helper")
    kinds = {(p.name, p.version): p.source.kind for p in lock.packages}
    assert kinds == {
        ("app", "1.0"): "editable",
        ("helper", None): "virtual",
        ("numpy", "2.0.0"): "registry",
        ("numpy", "1.26.4"): "registry",
        ("oci", "0.0.14"): "git",
        ("localdir", "0.1"): "directory",
        ("tool", "3.0"): "url",
    }
    numpy = lock.named("NumPy")
    assert [p.version for p in numpy] == ["2.0.0", "1.26.4"]
    assert numpy[0].sdist is not None and numpy[0].sdist.filename == "numpy-2.0.0.tar.gz"
    assert numpy[0].sdist.size == 10
    assert numpy[0].wheels[0].sha256 is not None and numpy[0].wheels[0].sha256.hex == "ab" * 32
    assert {str(tag) for tag in numpy[0].wheels[0].wheel_tags} == {
        "cp312-cp312-manylinux_2_17_x86_64",
        "cp312-cp312-manylinux2014_x86_64",
    }


def test_git_sources_keep_repository_reference_subdirectory_and_commit() -> None:
    (oci,) = parse_lock(LOCK, Path("/p/uv.lock")).named("oci")
    assert oci.source.location == "https://github.com/example/oci"
    assert oci.source.git_reference == "v1"
    assert oci.source.subdirectory == "py"
    assert oci.source.git_commit == "c" * 40


def test_edges_keep_extras_markers_and_fork_disambiguation() -> None:
    (app,) = parse_lock(LOCK, Path("/p/uv.lock")).named("app")
    helper, numpy_new, numpy_old, oci = app.dependencies
    assert helper.name == "helper" and helper.marker is None
    assert numpy_new.name == "numpy" and numpy_new.version == "2.0.0"
    assert numpy_new.marker is not None
    assert numpy_new.marker.evaluate({"python_full_version": "3.12.1"})
    assert not numpy_old.marker.evaluate({"python_full_version": "3.12.1"})  # type: ignore[union-attr]
    assert oci.extras == ("cli",)
    assert [d.name for d in app.optional_dependencies["web"]] == ["localdir"]
    assert [d.name for d in app.dependency_groups["dev"]] == ["tool"]


def errors_of(text: str) -> list[str]:
    with pytest.raises(LockFileError) as caught:
        parse_lock(text, Path("/p/uv.lock"))
    return [str(problem) for problem in caught.value.problems]


def test_unsupported_version_and_missing_source_are_located() -> None:
    text = 'version = 2\n\n[[package]]\nname = "a"\nversion = "1"\n'
    problems = errors_of(text)
    assert problems[0].startswith("/p/uv.lock:1: version: lock version 2 is not supported")
    assert problems[1].startswith("/p/uv.lock:3: package[0].source: expected a source table")


def test_every_problem_is_collected_with_its_line() -> None:
    text = LOCK.replace(
        "python_full_version >= '3.12'\" }", "python_full_version >>= '3.12'\" }"
    ).replace(f'hash = "{HASH}", size = 10', 'hash = "md5:00", size = 10')
    text += (
        '\n[[package]]\nname = "broken"\nversion = "1"\nsource = { registry = "x", git = "y" }\n'
    )
    problems = errors_of(text)
    assert len(problems) == 3, problems
    marker, md5, broken = problems
    assert "package[0].dependencies[1].marker: not a valid environment marker" in marker
    assert "package[2].sdist.hash: expected sha256:<hex>" in md5
    assert md5.startswith("/p/uv.lock:37:")  # the sdist line of numpy 2.0.0
    assert "package[7].source: expected exactly one of" in broken
    assert "found git, registry" in broken


def test_edges_must_name_exactly_one_locked_package() -> None:
    text = LOCK.replace('{ name = "helper" }', '{ name = "ghost" }').replace(
        ', version = "1.26.4", source = { registry = "https://pypi.org/simple" }', ""
    )
    problems = errors_of(text)
    assert any("app 1.0 depends on ghost, which the lock does not contain" in p for p in problems)
    assert any("depends on numpy, which is locked 2 times" in p for p in problems)


def test_members_need_a_local_entry() -> None:
    problems = errors_of(LOCK.replace('members = ["app", "helper"]', 'members = ["app", "nope"]'))
    assert problems == [
        "/p/uv.lock:10: manifest.members[1]: workspace member 'nope' has no editable or "
        "virtual package entry"
    ]


def test_invalid_toml_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "uv.lock"
    path.write_text('version = 1\n[[package]]\nname = "a\n')
    with pytest.raises(LockFileError) as caught:
        read_lock(path)
    (problem,) = caught.value.problems
    assert problem.line == 3
    assert "not valid TOML" in problem.message
    assert "uv lock" in str(caught.value)


def test_missing_lock_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match="create it with `uv lock`"):
        read_lock(tmp_path / "uv.lock")


def test_reads_the_authentik_lock() -> None:
    path = AUTHENTIK / "uv.lock"
    lock = read_lock(path)
    assert len(lock.packages) == 254
    assert set(lock.members) == {
        "authentik",
        "ak-guardian",
        "django-channels-postgres",
        "django-dramatiq-postgres",
        "django-postgres-cache",
    }
    (psycopg,) = lock.named("psycopg")
    assert set(psycopg.optional_dependencies) >= {"c", "pool"}
    artifacts = [a for p in lock.packages for a in (*p.wheels, *([p.sdist] if p.sdist else []))]
    # Every artifact hash in the text is read, none is lost or invented.
    assert len(artifacts) == path.read_text().count('hash = "sha256:')
    assert all(a.sha256 is not None and a.url for a in artifacts)
