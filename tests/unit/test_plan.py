"""Planning on a synthetic lock, for interpreters described by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from lockbox.errors import PlanError
from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.lock import parse_lock
from lockbox.inputs.plan import Plan, make_plan
from lockbox.inputs.project import load_project
from tests.unit.test_lock import LOCK


def linux_cpython(version: str) -> Interpreter:
    major_minor = ".".join(version.split(".")[:2])
    return Interpreter(
        executable=Path(f"/opt/python{major_minor}/bin/python{major_minor}"),
        version=Version(version),
        markers={
            "implementation_name": "cpython",
            "implementation_version": version,
            "os_name": "posix",
            "platform_machine": "x86_64",
            "platform_release": "6.1.0",
            "platform_system": "Linux",
            "platform_version": "#1 SMP",
            "python_full_version": version,
            "platform_python_implementation": "CPython",
            "python_version": major_minor,
            "sys_platform": "linux",
        },
        sysconfig={},
    )


@pytest.fixture
def plan_for(make_project: Callable[..., Path]) -> Callable[..., Plan]:
    def plan(pyproject_extra: str = "", python: str = "3.12.1") -> Plan:
        root = make_project(pyproject_extra, name="app")
        (root / "uv.lock").write_text(LOCK)
        project = load_project(root)
        return make_plan(project, parse_lock(LOCK, root / "uv.lock"), linux_cpython(python))

    return plan


def forms(plan: Plan) -> dict[str, str]:
    return {f"{p.package.name} {p.package.version}": p.form for p in plan.installed}


def reasons(plan: Plan) -> dict[str, str]:
    return {f"{s.package.name} {s.package.version}": s.reason for s in plan.skipped}


def test_follows_edges_markers_and_edge_extras(plan_for: Callable[..., Plan]) -> None:
    plan = plan_for()
    assert forms(plan) == {
        "app 1.0": "member",
        "helper None": "member",
        "numpy 2.0.0": "wheel",
        "oci 0.0.14": "git",
        "tool 3.0": "wheel",  # a URL source that is a wheel, reached through oci[cli]
    }
    (oci,) = plan.by_form("git")
    assert oci.extras == ("cli",)
    assert reasons(plan) == {
        "localdir 0.1": "only in extra 'web'",
        "numpy 1.26.4": 'not for this platform (python_full_version < "3.12")',
    }


def test_the_recipe_adds_extras_and_excludes_packages(plan_for: Callable[..., Plan]) -> None:
    plan = plan_for(
        """
        [tool.lockbox.deps]
        extras = ["web"]
        exclude = ["oci"]
        """
    )
    assert forms(plan)["localdir 0.1"] == "directory"
    assert "oci 0.0.14" not in forms(plan)
    assert reasons(plan)["oci 0.0.14"] == "excluded by the recipe (deps.exclude)"
    assert reasons(plan)["tool 3.0"] == "only in dependency group 'dev'"


def test_no_binary_package_builds_from_the_sdist(plan_for: Callable[..., Plan]) -> None:
    plan = plan_for('[tool.uv]\nno-binary-package = ["NumPy"]\n')
    (numpy,) = plan.by_form("sdist")
    assert numpy.package.version == "2.0.0"
    assert numpy.artifact is not None and numpy.artifact.filename == "numpy-2.0.0.tar.gz"
    assert numpy.reason == "[tool.uv] no-binary-package"


def test_a_fork_without_a_fitting_wheel_or_sdist_cannot_be_planned(
    plan_for: Callable[..., Plan],
) -> None:
    with pytest.raises(PlanError) as caught:
        plan_for(python="3.11.9")
    assert str(caught.value) == (
        "cannot plan the build: numpy 1.26.4: none of its 1 wheels fits cp311 on this "
        "platform, and uv.lock has no sdist to build; lock for an interpreter it supports "
        "or exclude it"
    )


def test_no_build_forbids_building_from_source(plan_for: Callable[..., Plan]) -> None:
    with pytest.raises(PlanError, match="no-build forbids building it from source"):
        plan_for('[tool.uv]\nno-binary-package = ["numpy"]\nno-build-package = ["numpy"]\n')


def test_unknown_recipe_names_are_all_reported(plan_for: Callable[..., Plan]) -> None:
    with pytest.raises(PlanError) as caught:
        plan_for(
            """
            [tool.lockbox.deps]
            extras = ["gui"]
            groups = ["docs"]
            exclude = ["left-pad"]
            """
        )
    message = str(caught.value)
    assert message.startswith("cannot plan the build: 3 problems")
    assert "deps.extras names 'gui', but app has no such extra in uv.lock (extras: web)" in message
    assert "deps.groups names 'docs'" in message and "(groups: dev)" in message
    assert "deps.exclude names 'left-pad', which uv.lock does not contain" in message


def test_a_lock_for_another_project_is_refused(make_project: Callable[..., Path]) -> None:
    root = make_project(name="other")
    (root / "uv.lock").write_text(LOCK)
    with pytest.raises(PlanError, match="no entry for the project 'other'.*Run `uv lock`"):
        make_plan(load_project(root), parse_lock(LOCK, root / "uv.lock"), linux_cpython("3.12.1"))
