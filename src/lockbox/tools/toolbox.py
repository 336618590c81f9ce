"""The external programs a command uses, found once and passed into the phases.

Each tool is a small class of its own module here (:mod:`lockbox.tools.uv`,
:mod:`lockbox.tools.sandbox`, :mod:`lockbox.tools.patchelf`, :mod:`lockbox.tools.git`,
:mod:`lockbox.tools.skopeo`) that checks the program's presence and version once and has one
method per operation. The :class:`Toolbox` finds each the first time a phase asks for it —
a store lookup needs no tool, and must not pay for finding one — on the ``PATH`` of the
environment lockbox was started with. Tests give it fakes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lockbox.environment import Environment
from lockbox.progress import Progress, silent

if TYPE_CHECKING:
    from lockbox.tools.dpkg import Dpkg
    from lockbox.tools.git import Git
    from lockbox.tools.patchelf import Patchelf
    from lockbox.tools.sandbox import Sandbox
    from lockbox.tools.skopeo import Skopeo
    from lockbox.tools.uv import Uv

T = TypeVar("T")


class Toolbox:
    """The tools of one command, each found when first asked for, once."""

    def __init__(self, environment: Environment, progress: Progress = silent, **given: Any) -> None:
        """``given``: tools already found (or fakes), by name: ``uv``, ``sandbox``,
        ``patchelf``, ``git``, ``dpkg``, ``skopeo``."""
        self.environment = environment
        self.progress = progress
        self._found: dict[str, Any] = dict(given)

    def _get(self, name: str, find: Callable[[], T]) -> T:
        if name not in self._found:
            self._found[name] = find()
        found: T = self._found[name]
        return found

    @property
    def uv(self) -> Uv:
        from lockbox.tools.uv import Uv

        return self._get("uv", lambda: Uv.find(self.progress, self.environment.path()))

    @property
    def sandbox(self) -> Sandbox:
        """bubblewrap, with the variables ``lockbox check`` gives every build command."""
        from lockbox.tools.sandbox import Sandbox

        return self._get(
            "sandbox",
            lambda: Sandbox.find(
                self.progress,
                self.environment.path(),
                varied=self.varied,
            ),
        )

    @property
    def patchelf(self) -> Patchelf:
        from lockbox.tools.patchelf import Patchelf

        return self._get("patchelf", lambda: Patchelf.find(self.progress, self.environment.path()))

    @property
    def git(self) -> Git:
        from lockbox.tools.git import Git

        return self._get("git", lambda: Git.find(self.environment.path()))

    @property
    def dpkg(self) -> Dpkg:
        from lockbox.tools.dpkg import Dpkg

        return self._get("dpkg", lambda: Dpkg.find(self.environment.path()))

    @property
    def skopeo(self) -> Skopeo:
        from lockbox.tools.skopeo import Skopeo

        return self._get("skopeo", lambda: Skopeo.find(self.environment.path()))

    @property
    def varied(self) -> dict[str, str]:
        """What ``lockbox check`` gives every build command on purpose (its clock); none
        in a normal build (:data:`lockbox.environment.CHECK_ENV`)."""
        return self.environment.check_variables()

    @property
    def uv_cache(self) -> Path | None:
        """A uv cache to use instead of the store's own (``$LOCKBOX_UV_CACHE``)."""
        return self.environment.uv_cache()
