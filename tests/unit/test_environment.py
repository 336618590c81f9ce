"""The environment, read once: a frozen copy, and the variables a lookup depends on."""

from __future__ import annotations

import json
from pathlib import Path

from lockbox.cli.shortcut import ENVIRONMENT
from lockbox.environment import CHECK_ENV, INTERPRETER_SEARCH, LOOKUP, STORE, Environment
from lockbox.inputs.interpreters import candidate_paths, discovery_paths


def test_it_is_a_copy_that_later_changes_do_not_reach() -> None:
    variables = {"PATH": "/bin", "HOME": "/home/u"}
    environment = Environment(variables)
    variables["PATH"] = "/elsewhere"
    assert environment["PATH"] == "/bin" and dict(environment) == {
        "PATH": "/bin",
        "HOME": "/home/u",
    }
    changed = environment.with_changes(PATH="/usr/bin")
    assert changed["PATH"] == "/usr/bin" and environment["PATH"] == "/bin"
    assert {**environment} == dict(environment.items()) and "HOME" in environment
    assert environment.subset(["HOME", "CC"]) == {"HOME": "/home/u"}


def test_paths_fall_back_to_the_usual_places() -> None:
    environment = Environment({"HOME": "/home/u"})
    assert environment.cache_home() == Path("/home/u/.cache")
    assert Environment({"XDG_CACHE_HOME": "/c"}).cache_home() == Path("/c")
    assert environment.uv_cache() is None
    assert Environment({"LOCKBOX_UV_CACHE": "/u"}).uv_cache() == Path("/u")


def test_check_variables_come_from_the_check_setting_only() -> None:
    assert Environment({"FAKETIME": "+1y"}).check_variables() == {}
    clock = {"LD_PRELOAD": "/lib/faketime.so", "FAKETIME": "+1y"}
    assert Environment({CHECK_ENV: json.dumps(clock)}).check_variables() == clock


class _Watched(dict[str, str]):
    """A mapping that notes every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def test_the_shortcut_keys_on_every_variable_the_interpreter_search_reads() -> None:
    watched = _Watched()
    list(candidate_paths(watched))
    discovery_paths(None, watched)
    assert watched.asked <= set(INTERPRETER_SEARCH)
    assert set(ENVIRONMENT) == set(LOOKUP) == {*INTERPRETER_SEARCH, STORE}
