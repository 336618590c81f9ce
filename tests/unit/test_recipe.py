"""Recipes: defaults, every key, and located errors for bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lockbox.errors import ProjectError, RecipeError
from lockbox.hashes import Sha256
from lockbox.inputs.project import load_project
from lockbox.inputs.recipe import Copy, Substitution

FULL = """
[tool.lockbox]
name = "demo-app"
python = "3.13"

[tool.lockbox.deps]
hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
groups = ["prod"]
extras = ["c"]
exclude = ["OpenContainers"]

[tool.lockbox.deps.build.Psycopg_C]
path = ["/usr/lib/postgresql/15/bin"]

[tool.lockbox.deps.build.gssapi]
env = { CFLAGS = "-include gssapi/gssapi_ext.h" }

[tool.lockbox.libraries]
paths = ["/opt/lib"]
ignore-missing = ["libfoo.so.*"]
bundle = false

[tool.lockbox.app]
site-packages = ["demo", { from = "extra/pkg", to = "pkg" }]
root = ["manage.py"]
delete = ["**/tests"]
patches = ["patches/fix.diff"]
compile-bytecode = true

[[tool.lockbox.app.substitute]]
file = "demo/settings.py"
replace = "/usr/share/demo"
with = "@out@/share"
expect = 2

[tool.lockbox.verify]
imports = ["demo", "django.db"]
commands = [["python", "manage.py", "check"]]
"""

FILES = {
    "demo/__init__.py": "",
    "demo/settings.py": "",
    "extra/pkg/__init__.py": "",
    "manage.py": "",
    "patches/fix.diff": "",
}


def test_defaults_without_a_recipe(make_project: Callable[..., Path]) -> None:
    project = load_project(make_project())
    recipe = project.recipe
    assert recipe.source is None
    assert recipe.python is None and recipe.deps.hash is None
    assert recipe.deps.groups == () and recipe.libraries.bundle is True
    assert project.app_name == "demo"


def test_every_key_is_read(make_project: Callable[..., Path]) -> None:
    root = make_project(FULL, FILES)
    project = load_project(root)
    recipe = project.recipe
    assert recipe.source == root / "pyproject.toml"
    assert project.app_name == "demo-app"
    assert recipe.python == "3.13"
    assert recipe.deps.hash == Sha256.parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    assert recipe.deps.exclude == ("opencontainers",)
    assert recipe.deps.build["psycopg-c"].path == ("/usr/lib/postgresql/15/bin",)
    assert recipe.deps.build["gssapi"].env == {"CFLAGS": "-include gssapi/gssapi_ext.h"}
    assert recipe.libraries.bundle is False
    assert recipe.libraries.ignore_missing == ("libfoo.so.*",)
    assert recipe.app.site_packages == (Copy("demo", "demo"), Copy("extra/pkg", "pkg"))
    assert recipe.app.substitute == (
        Substitution("demo/settings.py", "/usr/share/demo", "@out@/share", 2),
    )
    assert recipe.app.compile_bytecode is True
    assert recipe.verify.commands == (("python", "manage.py", "check"),)


def test_hash_is_accepted_in_all_three_forms(make_project: Callable[..., Path]) -> None:
    digest = Sha256.parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    for form in (digest.sri, digest.base32, digest.hex, "sha256:" + digest.base32):
        root = make_project(f'[tool.lockbox.deps]\nhash = "{form}"\n', name=f"p{len(form)}")
        assert load_project(root).recipe.deps.hash == digest


def test_lockbox_toml_can_point_at_the_project(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_project(files=FILES)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "lockbox.toml").write_text(
        f'project = "{root}"\npython = "3.12"\n[app]\nsite-packages = ["demo"]\n'
    )
    for target in (recipes, recipes / "lockbox.toml"):
        project = load_project(target)
        assert project.root == root
        assert project.recipe.python == "3.12"
        assert project.recipe.source == recipes / "lockbox.toml"


def test_project_key_is_not_allowed_inside_pyproject(make_project: Callable[..., Path]) -> None:
    root = make_project('[tool.lockbox]\nproject = "."\n')
    with pytest.raises(RecipeError, match=r"pyproject.toml:\d+: tool.lockbox.project: unknown key"):
        load_project(root)


def test_all_problems_are_reported_together_with_lines(make_project: Callable[..., Path]) -> None:
    root = make_project(
        """
        [tool.lockbox]
        pyhton = "3.13"

        [tool.lockbox.deps]
        hash = "sha256-nothash"
        groups = "dev"

        [tool.lockbox.deps.build.lxml]
        env = { "BAD NAME" = "x", CFLAGS = 1 }

        [[tool.lockbox.app.substitute]]
        file = "missing.py"
        replace = "a"

        [tool.lockbox.app]
        patches = ["nope.diff"]
        root = ["../outside"]

        [tool.lockbox.verify]
        imports = ["not a module"]
        commands = ["python manage.py check"]
        """
    )
    with pytest.raises(RecipeError) as caught:
        load_project(root)
    problems = {(p.key, p.line) for p in caught.value.problems}
    text = str(caught.value)
    assert ("tool.lockbox.pyhton", 8) in problems
    assert "did you mean 'python'?" in text
    assert ("tool.lockbox.deps.hash", 11) in problems
    assert ("tool.lockbox.deps.groups", 12) in problems
    assert ("tool.lockbox.deps.build.lxml.env.BAD NAME", 15) in problems
    assert ("tool.lockbox.deps.build.lxml.env.CFLAGS", 15) in problems
    assert ("tool.lockbox.app.substitute[0].with", 17) in problems
    assert ("tool.lockbox.app.substitute[0].file", 18) in problems
    assert ("tool.lockbox.app.patches[0]", 22) in problems
    assert ("tool.lockbox.app.root[0]", 23) in problems
    assert ("tool.lockbox.verify.imports[0]", 26) in problems
    assert ("tool.lockbox.verify.commands[0]", 27) in problems
    assert text.startswith(f"invalid recipe: {len(caught.value.problems)} problems")
    assert str(root / "pyproject.toml") in text


def test_toml_syntax_errors_name_the_line(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_project()
    (root / "lockbox.toml").write_text('python = "3.13"\n[deps\nhash = 1\n')
    with pytest.raises(RecipeError, match=r"lockbox.toml:2: not valid TOML"):
        load_project(root)


def test_two_recipes_are_refused(make_project: Callable[..., Path]) -> None:
    root = make_project('[tool.lockbox]\npython = "3.13"\n')
    (root / "lockbox.toml").write_text('python = "3.12"\n')
    with pytest.raises(ProjectError, match="keep one of them"):
        load_project(root)


def test_project_errors(make_project: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "absent")
    root = make_project()
    (root / "uv.lock").unlink()
    with pytest.raises(ProjectError, match="uv lock"):
        load_project(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="no pyproject.toml"):
        load_project(tmp_path / "empty")


def test_uv_settings_are_read(make_project: Callable[..., Path]) -> None:
    root = make_project('[tool.uv]\nno-binary-package = ["LXML", "xmlsec"]\nno-build = true\n')
    project = load_project(root)
    assert project.uv.no_binary_packages == {"lxml", "xmlsec"}
    assert project.uv.no_build is True and project.uv.no_binary is False


def test_recipe_show_prints_defaults_and_errors_cleanly(
    cli, make_project: Callable[..., Path]
) -> None:  # type: ignore[no-untyped-def]
    root = make_project(FULL, FILES)
    shown = cli("recipe", "show", root, "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["deps"]["build"]["gssapi"]["env"]["CFLAGS"] == "-include gssapi/gssapi_ext.h"
    assert data["libraries"]["bundle"] is False
    toml = cli("recipe", "show", root)
    assert toml.code == 0 and 'python = "3.13"' in toml.out and "[deps.build.psycopg-c]" in toml.out

    (root / "lockbox.toml").write_text("[deps]\nhash = 3\n")
    failed = cli("recipe", "show", root)
    assert failed.code == 1
    assert "Traceback" not in failed.err
    assert "error:" in failed.err


def test_canonical_names_follow_packaging() -> None:
    from hypothesis import given
    from hypothesis import strategies as st
    from packaging.utils import canonicalize_name

    from lockbox.inputs.recipe import canonical_name

    @given(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", fullmatch=True))
    def same(name: str) -> None:
        assert canonical_name(name) == canonicalize_name(name)

    same()


def test_extra_sources_are_read_by_url_or_git(make_project: Callable[..., Path]) -> None:
    digest = "fde3b8099b56b5c956415df8933e2227e1914e805a277b844f2f9e52341738f2"
    root = make_project(f"""
        [[tool.lockbox.deps.extra-sources]]
        url = "https://files.example.org/opencontainers-0.0.14.tar.gz"
        hash = "sha256:{digest}"

        [[tool.lockbox.deps.extra-sources]]
        git = "https://git.example.org/oci-python"
        rev = "ceb4fcc090851717a3069d78e85ceb1e86c2740c"
        hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        """)
    by_url, by_git = load_project(root).recipe.deps.extra_sources
    assert (by_url.url, by_url.hash.hex, by_url.git) == (
        "https://files.example.org/opencontainers-0.0.14.tar.gz",
        digest,
        None,
    )
    assert (by_git.git, by_git.rev, by_git.url) == (
        "https://git.example.org/oci-python",
        "ceb4fcc090851717a3069d78e85ceb1e86c2740c",
        None,
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('url = "https://x.org/a.tar.gz"', r"extra-sources\[0\]: hash is required"),
        (
            'url = "https://x.org/a.tar.gz"\ngit = "https://x.org/r"\nhash = "sha256:'
            + "0" * 64
            + '"',
            r"extra-sources\[0\]: give either url .* or git",
        ),
        (
            'git = "https://x.org/r"\nrev = "main"\nhash = "sha256:' + "0" * 64 + '"',
            r"extra-sources\[0\]\.rev: a git source needs rev, the full commit",
        ),
        (
            'url = "ftp://x.org/a.tar.gz"\nhash = "sha256:' + "0" * 64 + '"',
            r"extra-sources\[0\]\.url: expected an http\(s\):// or file:// URL",
        ),
        ('url = "https://x.org/a.tar.gz"\nhash = "md5:abc"', r"extra-sources\[0\]\.hash: "),
    ],
)
def test_extra_source_mistakes_are_located(
    make_project: Callable[..., Path], source: str, message: str
) -> None:
    root = make_project("[[tool.lockbox.deps.extra-sources]]\n" + source + "\n")
    with pytest.raises(RecipeError, match=message):
        load_project(root)
