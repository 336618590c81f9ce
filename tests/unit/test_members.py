"""Workspace members: which files they install and the metadata lockbox writes for them."""

from __future__ import annotations

import email.parser
from pathlib import Path

import pytest

from lockbox.deps.members import files_under, read_member, write_dist_info
from lockbox.errors import AssemblyError


def project(name: str = "my-pkg", **fields: object) -> dict[str, object]:
    return {"project": {"name": name, "version": "1.0", **fields}}


def touch(root: Path, *paths: str) -> None:
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("src/my_pkg/__init__.py", "src/my_pkg"),
        ("my_pkg/__init__.py", "my_pkg"),
        ("my_pkg.py", "my_pkg.py"),
    ],
)
def test_by_default_the_package_named_after_the_distribution_is_installed(
    tmp_path: Path, layout: str, expected: str
) -> None:
    touch(tmp_path, layout, "tests/test_x.py")
    member = read_member(tmp_path, project())
    assert member.modules == ((tmp_path / expected, Path(expected).name),)


def test_backend_configuration_names_the_packages(tmp_path: Path) -> None:
    touch(tmp_path, "guardian/__init__.py", "guardian/conf/__init__.py", "lib/extra/__init__.py")
    hatch = {
        **project(),
        "tool": {
            "hatch": {
                "build": {
                    "targets": {"wheel": {"packages": ["guardian", "guardian.conf", "lib/extra"]}}
                }
            }
        },
    }
    assert read_member(tmp_path, hatch).modules == (
        (tmp_path / "guardian", "guardian"),
        (tmp_path / "lib" / "extra", "extra"),
    )
    setuptools = {
        **project(),
        "tool": {"setuptools": {"packages": ["extra", "extra.sub"], "package-dir": {"": "lib"}}},
    }
    assert read_member(tmp_path, setuptools).modules == ((tmp_path / "lib" / "extra", "extra"),)
    flit = {**project(), "tool": {"flit": {"module": {"name": "guardian"}}}}
    assert read_member(tmp_path, flit).modules == ((tmp_path / "guardian", "guardian"),)
    uv_build = {
        **project(),
        "tool": {"uv": {"build-backend": {"module-name": "extra", "module-root": "lib"}}},
    }
    assert read_member(tmp_path, uv_build).modules == ((tmp_path / "lib" / "extra", "extra"),)


def test_missing_packages_and_dynamic_metadata_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AssemblyError, match="cannot tell which files my-pkg installs"):
        read_member(tmp_path, project())
    with pytest.raises(AssemblyError, match="my-pkg declares version as dynamic"):
        read_member(tmp_path, {"project": {"name": "my-pkg", "dynamic": ["version"]}})
    with pytest.raises(AssemblyError, match="names 'nowhere', which does not exist"):
        read_member(
            tmp_path,
            {
                **project(),
                "tool": {"hatch": {"build": {"targets": {"wheel": {"packages": ["nowhere"]}}}}},
            },
        )


def test_dist_info_has_metadata_entry_points_and_a_record(tmp_path: Path) -> None:
    touch(tmp_path / "src", "my_pkg/__init__.py")
    member = read_member(
        tmp_path / "src",
        project(
            description="Demo",
            dependencies=["django>=5", "attrs; python_version < '3.12'"],
            **{
                "optional-dependencies": {"Fast_IO": ["uvloop; sys_platform == 'linux'"]},
                "requires-python": ">=3.11",
                "scripts": {"my-tool": "my_pkg.cli:main"},
                "entry-points": {"lockbox.test": {"x": "my_pkg:x"}},
            },
        ),
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_pkg").mkdir()
    (site / "my_pkg" / "__init__.py").write_text("")
    name = write_dist_info(site, member, files_under(site, "my_pkg"))
    assert name == "my_pkg-1.0.dist-info"
    metadata = email.parser.HeaderParser().parsestr((site / name / "METADATA").read_text())
    assert metadata["Name"] == "my-pkg" and metadata["Version"] == "1.0"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata.get_all("Requires-Dist") == [
        "django>=5",
        "attrs; python_version < '3.12'",
        "uvloop; (sys_platform == 'linux') and extra == \"fast-io\"",
    ]
    assert metadata["Provides-Extra"] == "fast-io"
    entry_points = (site / name / "entry_points.txt").read_text()
    assert "[console_scripts]\nmy-tool = my_pkg.cli:main\n" in entry_points
    assert "[lockbox.test]\nx = my_pkg:x\n" in entry_points
    record = (site / name / "RECORD").read_text().splitlines()
    assert record[0] == "my_pkg/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0"
    assert record[-1] == f"{name}/RECORD,,"
