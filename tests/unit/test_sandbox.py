"""The sandbox wrapper: the exact bubblewrap command lines, and a clear error without namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockbox.errors import SandboxUnavailable
from lockbox.sandbox import Sandbox


def test_the_offline_command_line_hides_then_mounts_in_order() -> None:
    argv = Sandbox(Path("/usr/bin/bwrap")).offline(
        ["python", "-c", "pass"], cwd=Path("/s/app"), env={"PATH": "/s/app/bin", "A": "1"},
        writable=[(Path("/s/.lockbox/tmp/t/content"), Path("/s/app"))], hidden=[Path("/s")],
    )
    text = " ".join(argv)
    assert argv[:3] == ["/usr/bin/bwrap", "--ro-bind", "/"]
    assert "--unshare-net" in argv and "--clearenv" in argv
    # The store is hidden before the application is mounted inside it, and /tmp before both.
    assert text.index("--tmpfs /tmp") < text.index("--tmpfs /s") < text.index(
        "--bind /s/.lockbox/tmp/t/content /s/app")
    assert "--setenv A 1 --setenv PATH /s/app/bin" in text
    assert argv[-5:] == ["/s/app", "--", "python", "-c", "pass"]


def test_no_network_namespace_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="cannot make a network namespace") as caught:
        Sandbox(fake).check_offline()
    assert "No permissions" in str(caught.value)
    assert "unprivileged user namespaces" in str(caught.value)
