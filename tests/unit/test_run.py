"""The one subprocess module: both paths agree on stdin, timeouts and failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lockbox.errors import ToolFailed, ToolMissing
from lockbox.progress import Recorder
from lockbox.tools.run import run, shown


@pytest.mark.parametrize("streamed", [False, True])
def test_a_command_never_reads_the_terminal(streamed: bool) -> None:
    # `cat` with the caller's stdin would wait for it; with an empty stdin it ends at once.
    result = run(["cat"], on_stderr_line=(lambda line: None) if streamed else None, timeout=10)
    assert result.returncode == 0 and result.stdout == ""


@pytest.mark.parametrize("streamed", [False, True])
def test_input_reaches_the_command(streamed: bool) -> None:
    result = run(["cat"], input="hello\n", on_stderr_line=(lambda line: None) if streamed else None)
    assert result.stdout == "hello\n"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_timeout_kills_the_command_streamed_or_not(streamed: bool) -> None:
    lines: list[str] = []
    start = time.monotonic()
    result = run(
        ["sh", "-c", "echo started >&2; sleep 6"],
        check=False,
        timeout=0.5,
        on_stderr_line=lines.append if streamed else None,
    )
    assert time.monotonic() - start < 4  # the sleep, a grandchild, holds the pipes for 6 s
    assert result.returncode == -9 and "killed after 0.5 s" in result.stderr
    if streamed:
        assert lines == ["started"]


def test_a_missing_working_directory_is_not_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed, match="working directory .* does not exist"):
        run(["true"], cwd=tmp_path / "gone")
    with pytest.raises(ToolMissing, match="not installed"):
        run(["lockbox-no-such-program"])


def test_commands_are_logged_and_reported_quoted() -> None:
    progress = Recorder()
    run(["echo", "two words", "it's"], progress=progress)
    assert ("debug", "$ echo 'two words' 'it'\"'\"'s'") in progress.messages
    with pytest.raises(ToolFailed) as raised:
        run(["sh", "-c", "exit 3", "a b"])
    assert "exit code 3: sh -c 'exit 3' 'a b'" in str(raised.value)
    assert shown(["x", "line one\nline two"]) == "x 'line one' …"
