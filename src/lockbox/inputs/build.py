"""What one build reads: the project, its lock and plan, the interpreter and the environment.

Each is read once, the first time a phase needs it, and shared by the phases after it: a
build reads ``uv.lock`` and makes its plan once, and probes interpreters once. A store
lookup that answers from the declared hash reads none of them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from lockbox.environment import Environment
from lockbox.inputs.project import Project
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.inputs.interpreters import Interpreter
    from lockbox.inputs.lock import Lock
    from lockbox.inputs.plan import Plan


class BuildInputs:
    """The inputs of one build of ``project``, read when first asked for."""

    def __init__(
        self,
        project: Project,
        environment: Environment,
        progress: Progress = silent,
        *,
        interpreter: Interpreter | None = None,
    ) -> None:
        """``interpreter``: the one to build with, instead of the one the recipe asks for
        (``lockbox check``'s rebuild uses the registered entries' own)."""
        self.project = project
        self.environment = environment
        self.progress = progress
        if interpreter is not None:
            self.__dict__["interpreter"] = interpreter

    @functools.cached_property
    def interpreter(self) -> Interpreter:
        """The interpreter the recipe asks for, checked against requires-python."""
        from lockbox.inputs.interpreters import find_interpreter

        return find_interpreter(
            self.project.recipe.python,
            self.project.requires_python,
            environ=self.environment,
            progress=self.progress,
        )

    @functools.cached_property
    def lock(self) -> Lock:
        from lockbox.inputs.lock import read_lock

        return read_lock(self.project.lock_path)

    @functools.cached_property
    def plan(self) -> Plan:
        """Which locked packages the build installs, and in which form."""
        from lockbox.inputs.plan import make_plan

        return make_plan(self.project, self.lock, self.interpreter)

    def with_project(self, project: Project) -> BuildInputs:
        """The same inputs for ``project``, another recipe of the same project (its
        declared hash left out, say): the interpreter and the lock already read are kept;
        the plan, which the recipe steers, is made again."""
        other = BuildInputs(project, self.environment, self.progress)
        for name in ("interpreter", "lock"):
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        return other
