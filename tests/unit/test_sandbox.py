"""The sandbox wrapper: the exact bubblewrap command lines, and a clear error without namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockbox.errors import SandboxUnavailable
from lockbox.tools.sandbox import Sandbox


def test_the_offline_command_line_hides_then_mounts_in_order() -> None:
    argv = Sandbox(Path("/usr/bin/bwrap")).offline(
        ["python", "-c", "pass"],
        cwd=Path("/s/app"),
        env={"PATH": "/s/app/bin", "A": "1"},
        writable=[(Path("/s/.lockbox/tmp/t/content"), Path("/s/app"))],
        hidden=[Path("/s")],
    )
    text = " ".join(argv)
    assert argv[0] == "/usr/bin/bwrap"
    for option in (
        "--unshare-net",
        "--unshare-pid",
        "--new-session",
        "--clearenv",
        "--die-with-parent",
    ):
        assert option in argv
    assert "--cap-drop ALL" in text and "--cap-add" not in text
    # Not the host's root: its system paths only, read-only.
    assert "--ro-bind / /" not in text and "--dev-bind" not in text
    assert "--ro-bind /usr /usr" in text
    # The store is hidden before the application is mounted inside it, and /tmp before both.
    assert (
        text.index("--tmpfs /tmp")
        < text.index("--tmpfs /s")
        < text.index("--bind /s/.lockbox/tmp/t/content /s/app")
    )
    assert "--setenv A 1 --setenv PATH /s/app/bin" in text
    assert argv[-5:] == ["/s/app", "--", "python", "-c", "pass"]


def test_the_verification_command_line_writes_nothing_and_drops_to_nobody() -> None:
    argv = Sandbox(Path("/usr/bin/bwrap")).unprivileged(
        ["python", "-c", "pass"],
        cwd=Path("/s/app"),
        env={"PATH": "/s/app/bin"},
        read_only=[(Path("/s/.lockbox/tmp/t/content"), Path("/s/app")), Path("/s/py")],
        hidden=[Path("/s")],
        scratch=[Path("/tmp/home")],
    )
    text = " ".join(argv)
    assert " --bind " not in text
    assert (
        text.index("--tmpfs /s")
        < text.index("--ro-bind /s/.lockbox/tmp/t/content /s/app")
        < text.index("--ro-bind /s/py /s/py")
    )
    assert "--perms 1777 --tmpfs /tmp/home" in text
    assert "--unshare-pid" in argv and "--new-session" in argv
    command = argv[argv.index("--") + 1 :]
    if os.getuid() == 0:
        assert Path(command[0]).name == "setpriv"
        assert command[1:8] == [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        assert command[8:] == ["python", "-c", "pass"]
    else:
        assert "--unshare-user --uid 65534 --gid 65534 --cap-drop ALL" in text
        assert command == ["python", "-c", "pass"]


def test_no_network_namespace_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="cannot make the offline sandbox") as caught:
        Sandbox(fake).check_offline()
    assert "No permissions" in str(caught.value)
    assert "unprivileged user namespaces" in str(caught.value)


def test_a_build_sees_only_its_own_part_of_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store" / ".lockbox"
    for directory in ("tmp/mine/work", "tmp/theirs", "uv-cache", "shortcuts", "roots"):
        (root / directory).mkdir(parents=True)
    for file in ("db.sqlite", "key", "tmp/mine.lock", "tmp/theirs.lock"):
        (root / file).write_text("")
    argv = Sandbox(Path("/usr/bin/bwrap")).wrap(
        ["uv", "sync"], root=root, cwd=tmp_path, keep=[root / "tmp" / "mine", root / "uv-cache"]
    )
    text = " ".join(argv)
    inside = "/tmp/lockbox-build"
    for hidden in ("shortcuts", "roots", "tmp/theirs"):
        assert f"--tmpfs {inside}/{hidden} " in text
    for hidden in ("db.sqlite", "key", "tmp/mine.lock", "tmp/theirs.lock"):
        assert f"--ro-bind /dev/null {inside}/{hidden} " in text
    assert f"{inside}/tmp/mine " not in text and f"{inside}/uv-cache " not in text
    # The records are hidden at their own path too, after the store is shown read-only.
    assert text.index(f"--ro-bind {root.parent} {root.parent}") < text.index(f"--tmpfs {root} ")
    assert "--cap-drop ALL" in text and "--unshare-pid" in text
    assert argv[:3] == ["/usr/bin/bwrap", "--ro-bind", "/"]
