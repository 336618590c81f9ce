"""The dependency phase's lookup: a declared hash answered from the store without any tool,
the plan or the interpreter, and only for the inputs (and toolchain) that built the layer.

The layer is registered by hand, with the answer a build would have remembered. Whether a
lookup would have gone on to build shows in what it asks for next: the interpreter, which
these inputs refuse to give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from lockbox.deps.inputs import deps_inputs, inputs_key
from lockbox.deps.phase import build_deps
from lockbox.deps.toolchain import file_state
from lockbox.environment import Environment
from lockbox.inputs.build import BuildInputs
from lockbox.inputs.project import Project, load_project
from lockbox.progress import Recorder
from lockbox.store.nar import nar_hash
from lockbox.store.store import Entry, Store
from tests.fakes import FakeToolbox, Touched


class UnreadInputs(BuildInputs):
    """Inputs whose lock, plan and interpreter must not be read."""

    @property
    def interpreter(self) -> None:  # type: ignore[override]
        raise Touched("the phase asked for the interpreter")

    @property
    def lock(self) -> None:  # type: ignore[override]
        raise Touched("the phase read uv.lock")

    @property
    def plan(self) -> None:  # type: ignore[override]
        raise Touched("the phase made the plan")


NOT_TOML = "this uv.lock is [[ not TOML: reading it would fail\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as store:
        yield store


def _layer(store: Store) -> Entry:
    with store.staging() as stage:
        content = stage / "content"
        (content / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        (content / "lib" / "python3.11" / "site-packages" / "dep.py").write_text("VALUE = 1\n")
        return store.register(content, name="demo-deps", kind="deps", nar=nar_hash(content))


def _project(make_project: Callable[..., Path], declared: str | None) -> Project:
    recipe = f'[tool.lockbox.deps]\nhash = "{declared}"\n' if declared else ""
    root = make_project(recipe)
    (root / "uv.lock").write_text(NOT_TOML)
    return load_project(root)


def _remember(
    store: Store, entry: Entry, project: Project, env: Environment, used: Mapping[str, object]
) -> None:
    """What a build of ``entry`` from ``project`` in ``env`` leaves in the store."""
    store.remember_answer(entry, inputs_key(deps_inputs(project, env)), {"toolchain": used})


def _toolchain(*files: Path) -> dict[str, object]:
    states = {}
    for path in files:
        state = file_state(str(path))
        assert state is not None
        states[str(path)] = [state.sha256, state.size, state.mtime_ns]
    return {"compilers": {}, "packages": {}, "files": states}


def test_a_declared_layer_in_the_store_is_found_without_tools_lock_or_interpreter(
    store: Store, make_project: Callable[..., Path], tmp_path: Path
) -> None:
    entry = _layer(store)
    project = _project(make_project, entry.nar_hash.sri)
    compiler = tmp_path / "cc"
    compiler.write_text("the compiler the build read\n")
    used = _toolchain(compiler)
    _remember(store, entry, project, Environment(), used)
    progress = Recorder()

    result = build_deps(UnreadInputs(project, Environment()), store, FakeToolbox(), progress)

    assert result.reused
    assert result.entry == entry and result.hash == entry.nar_hash
    assert result.plan is None and result.layer is None
    assert result.record == {"toolchain": used}
    assert ("info", f"dependency layer {entry.nar_hash} is in the store: {entry.path}") in (
        progress.messages
    )


@pytest.mark.parametrize("moved", ["uv.lock", "CC"])
def test_a_layer_built_from_other_inputs_does_not_answer(
    store: Store, make_project: Callable[..., Path], moved: str
) -> None:
    entry = _layer(store)
    project = _project(make_project, entry.nar_hash.sri)
    _remember(store, entry, project, Environment(), _toolchain())
    environment = Environment()
    if moved == "uv.lock":
        project.lock_path.write_text(NOT_TOML + "# one byte more\n")
    else:
        environment = Environment({"CC": "clang"})  # a compiler the builds would use
    progress = Recorder()

    with pytest.raises(Touched, match="interpreter"):
        build_deps(UnreadInputs(project, environment), store, FakeToolbox(), progress)

    assert any("was built from other inputs" in message for _, message in progress.messages)


def test_a_layer_whose_toolchain_changed_since_does_not_answer(
    store: Store, make_project: Callable[..., Path], tmp_path: Path
) -> None:
    entry = _layer(store)
    project = _project(make_project, entry.nar_hash.sri)
    header = tmp_path / "zlib.h"
    header.write_text("#define ZLIB_VERSION 1\n")
    _remember(store, entry, project, Environment(), _toolchain(header))
    header.write_text("#define ZLIB_VERSION 2\n")  # an upgraded -dev package

    with pytest.raises(Touched, match="interpreter"):
        build_deps(UnreadInputs(project, Environment()), store, FakeToolbox())


def test_a_hash_not_in_the_store_is_built(store: Store, make_project: Callable[..., Path]) -> None:
    entry = _layer(store)
    project = _project(make_project, "sha256-" + "A" * 43 + "=")
    _remember(store, entry, project, Environment(), _toolchain())

    with pytest.raises(Touched, match="interpreter"):
        build_deps(UnreadInputs(project, Environment()), store, FakeToolbox())


def test_without_a_declared_hash_nothing_is_looked_up(
    store: Store, make_project: Callable[..., Path]
) -> None:
    entry = _layer(store)
    project = _project(make_project, None)
    _remember(store, entry, project, Environment(), _toolchain())

    with pytest.raises(Touched, match="interpreter"):
        build_deps(UnreadInputs(project, Environment()), store, FakeToolbox())
