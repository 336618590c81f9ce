"""The install step's settings: the uv.toml it writes and the compiler wrappers."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

from packaging.version import Version

from lockbox.deps.install import RECIPE_CFLAGS, _compiler_wrappers, uv_config
from lockbox.environment import Environment
from lockbox.inputs.interpreters import Interpreter
from lockbox.inputs.project import load_project
from lockbox.inputs.recipe import BuildEnv


def test_uv_config_keeps_the_project_settings_and_adds_build_variables(
    make_project: Callable[..., Path],
) -> None:
    root = make_project(
        """
        [tool.uv]
        no-binary-package = ["lxml"]
        find-links = ["https://example.invalid/wheels"]
        extra-build-variables = { lxml = { STATIC_DEPS = "false" } }

        [tool.uv.sources]
        member = { workspace = true }
        """
    )
    build = {
        "lxml": BuildEnv(env={"CFLAGS": "-DX=1", "LDFLAGS": "-L/opt/lib"}),
        "psycopg-c": BuildEnv(path=("/usr/lib/postgresql/15/bin",)),
    }
    config = tomllib.loads(uv_config(load_project(root), build, {"PATH": "/usr/bin"}))
    assert config["no-binary-package"] == ["lxml"]
    assert config["find-links"] == ["https://example.invalid/wheels"]
    assert "sources" not in config  # describes the project, not how uv installs
    assert config["extra-build-variables"] == {
        "lxml": {"STATIC_DEPS": "false", RECIPE_CFLAGS: "-DX=1", "LDFLAGS": "-L/opt/lib"},
        "psycopg-c": {"PATH": "/usr/lib/postgresql/15/bin:/usr/bin"},
    }


def test_the_c_wrapper_adds_recipe_flags_and_path_maps_to_the_real_compiler(tmp_path: Path) -> None:
    interpreter = Interpreter(
        executable=Path("/opt/py/bin/python3.13"),
        version=Version("3.13.0"),
        markers={},
        sysconfig={"CC": "gcc -pthread", "CXX": "g++ -pthread"},
        prefix=Path("/opt/py"),
    )
    variables, _ = _compiler_wrappers(
        tmp_path,
        Path("/tmp/lockbox-build/tmp/x/work"),
        interpreter,
        Path("/tmp/lockbox-build/uv-cache/k0"),
        Environment(),
    )
    assert variables == {
        "CC": "/tmp/lockbox-build/tmp/x/work/bin/cc -pthread",
        "CXX": "/tmp/lockbox-build/tmp/x/work/bin/c++ -pthread",
    }
    source = tmp_path / "where.c"
    source.write_text("const char *where = __FILE__; int value = EXTRA;\n")
    subprocess.run(
        [tmp_path / "bin" / "cc", "-c", "-g", source.name, "-o", "where.o"],
        cwd=tmp_path,
        check=True,
        env={"PATH": "/usr/bin:/bin", RECIPE_CFLAGS: "-DEXTRA=7"},
    )
    strings = subprocess.run(
        ["strings", "-a", tmp_path / "where.o"], capture_output=True, text=True, check=True
    ).stdout
    assert "/lockbox/src" in strings
    assert str(tmp_path) not in strings


def test_the_offline_config_names_no_index(make_project: Callable[..., Path]) -> None:
    root = make_project(
        '\n[tool.uv]\nfind-links = ["http://127.0.0.1:9/"]\n'
        'index-url = "http://127.0.0.1:9/simple"\nno-binary-package = ["lxml"]\n'
    )
    project = load_project(root)
    online = tomllib.loads(uv_config(project, {}, {}))
    offline = tomllib.loads(uv_config(project, {}, {}, offline=True))
    assert online["find-links"] == ["http://127.0.0.1:9/"] and "index-url" in online
    assert "find-links" not in offline and "index-url" not in offline
    assert offline["no-binary-package"] == ["lxml"]
