"""Progress reporting: the one seam through which the core tells the user what it does.

The core never prints. It calls a :class:`Progress` it was given; the CLI passes one that
renders with rich, tests pass :data:`silent` or a recorder.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives what lockbox is doing, in increasing order of importance."""

    def debug(self, message: str) -> None:
        """Detail shown with ``--verbose`` only (commands run, per-item decisions)."""

    def info(self, message: str) -> None:
        """A step starts or ends."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the work."""


class _Silent:
    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass


silent: Progress = _Silent()
"""A sink that drops everything."""


class Recorder:
    """A sink that keeps every message, for tests and for callers that render later."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def debug(self, message: str) -> None:
        self.messages.append(("debug", message))

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def warning(self, message: str) -> None:
        self.messages.append(("warning", message))
