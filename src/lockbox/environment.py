"""The process environment, read once at the command line's boundary and passed down.

No other module of lockbox reads ``os.environ``: the command line (and ``lockbox check``'s
rebuild, a command line of its own) makes one :class:`Environment` when it starts, and the
phases get what they need from it. A variable that changes an output's bytes (a compiler,
``RUSTFLAGS``) is an input: the dependency phase records it (:mod:`lockbox.deps.inputs`).

The crash tests' kill points (:mod:`lockbox.fs`) are the one exception: they are read here,
on every step, because a test changes them between steps of one process.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported: a repeated build must start fast
if TYPE_CHECKING:
    from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
    from pathlib import Path

    _Base = Mapping[str, str]
else:
    # Not an ABC at run time: making one costs a repeated build a millisecond. It has every
    # method of a Mapping; type checkers see it as one.
    _Base = object

STORE = "LOCKBOX_STORE"
"""Where the store is, unless ``--store`` says otherwise (:func:`lockbox.default_store`)."""
INTERPRETER_SEARCH = ("PATH", "HOME", "PYENV_ROOT", "UV_PYTHON_INSTALL_DIR", "XDG_DATA_HOME")
"""The variables that steer where interpreters are looked for
(:func:`lockbox.inputs.interpreters.candidate_paths`)."""
LOOKUP = (*INTERPRETER_SEARCH, STORE)
"""The variables a store lookup depends on: where the store is and where interpreters are
found. The record that answers a repeated command holds their values
(:mod:`lockbox.cli.shortcut`)."""
UV_CACHE = "LOCKBOX_UV_CACHE"
"""A uv cache to use instead of the store's own."""
CHECK_ENV = "LOCKBOX_CHECK_ENV"
"""Set by ``lockbox check`` for its rebuild (:mod:`lockbox.check.variations`): a JSON object of
variables that every build command gets on purpose, over lockbox's fixed environment (the
varied clock, which no environment of lockbox's can fix): lockbox's own offline commands,
the interpreter entry's compilation and every build backend of the dependency phase."""


class Environment(_Base):
    """A frozen copy of the variables lockbox was started with."""

    __slots__ = ("_variables",)

    def __init__(self, variables: Mapping[str, str] | None = None) -> None:
        self._variables = dict(variables or {})

    @classmethod
    def from_process(cls) -> Environment:
        """The environment of this process, as it is now."""
        return cls(os.environ)

    def __getitem__(self, name: str) -> str:
        return self._variables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)

    def __contains__(self, name: object) -> bool:
        return name in self._variables

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._variables.get(name, default)

    def keys(self) -> KeysView[str]:
        return self._variables.keys()

    def items(self) -> ItemsView[str, str]:
        return self._variables.items()

    def values(self) -> ValuesView[str]:
        return self._variables.values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Environment):
            return self._variables == other._variables
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Environment({len(self._variables)} variables)"

    def with_changes(self, **changes: str) -> Environment:
        """This environment with ``changes`` set."""
        return Environment({**self._variables, **changes})

    def path(self) -> str:
        """``$PATH``, or the system's default search path."""
        return self._variables.get("PATH") or os.defpath

    def home(self) -> Path:
        """``$HOME``, else the home directory of the user lockbox runs as."""
        from pathlib import Path

        return Path(self._variables.get("HOME") or os.path.expanduser("~"))

    def cache_home(self) -> Path:
        """``$XDG_CACHE_HOME``, else ``~/.cache``."""
        from pathlib import Path

        configured = self._variables.get("XDG_CACHE_HOME")
        return Path(configured) if configured else self.home() / ".cache"

    def uv_cache(self) -> Path | None:
        """``$LOCKBOX_UV_CACHE`` if set; else None, for the store's own uv cache.

        lockbox keeps its own uv cache, in the store: uv caches what it builds from sdists,
        and a wheel built elsewhere, without lockbox's reproducibility flags, must not end
        up in a layer; and being on the store's mount, uv can hardlink from it."""
        from pathlib import Path

        configured = self._variables.get(UV_CACHE)
        return Path(configured).absolute() if configured else None

    def check_variables(self) -> dict[str, str]:
        """The variables ``lockbox check`` passes into build commands; none in a normal
        build (:data:`CHECK_ENV`)."""
        text = self._variables.get(CHECK_ENV)
        if not text:
            return {}
        import json

        return {str(key): str(value) for key, value in json.loads(text).items()}

    def subset(self, names: Iterable[str]) -> dict[str, str]:
        """The variables of ``names`` that are set, in that order."""
        return {name: self._variables[name] for name in names if name in self._variables}


def kill_point_settings() -> tuple[str | None, str | None, str | None]:
    """The crash tests' settings (:mod:`lockbox.fs`), as they are at this moment: the step
    to be killed after, the file steps are logged to, the step to stop at."""
    from lockbox.fs import KILL_AFTER_STEP, STEPS_LOG, STOP_AT_STEP

    return (
        os.environ.get(KILL_AFTER_STEP),
        os.environ.get(STEPS_LOG),
        os.environ.get(STOP_AT_STEP),
    )


def forget_stop_point() -> None:
    """Forget the step to stop at, once it is reached: a process stops there once."""
    from lockbox.fs import STOP_AT_STEP

    os.environ.pop(STOP_AT_STEP, None)
