"""A full disk: a command that runs out of space fails with a precise error and leaves a
store that verifies, with nothing of the failed write left in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """\
set -u
disk=$1
mount -t tmpfs -o size=4m lockbox-test "$disk"
lockbox() {{ {python} -m lockbox --store "$disk/store" "$@"; }}
lockbox store add "$2" --name small >/dev/null || exit 10
lockbox store add "$3" --name big 2>"$disk/add.err"
echo "add=$?"
lockbox store verify >/dev/null 2>&1
echo "verify=$?"
cat "$disk/add.err"
ls -A "$disk/store/.lockbox/tmp" "$disk/store/.lockbox/pending" | grep -v ':$' | grep . && echo debris
ls "$disk/store"
"""


def test_running_out_of_space_fails_cleanly_and_the_store_verifies(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "file").write_text("fits")
    big = tmp_path / "big"
    big.mkdir()
    for index in range(3):
        (big / f"part{index}").write_bytes(os.urandom(2 << 20))
    mount = tmp_path / "disk"
    mount.mkdir()
    script = _SCRIPT.format(python=sys.executable)
    # A private mount namespace: the small file system disappears with the process.
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            mount,
            small,
            big,
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    out = done.stdout
    assert "add=1" in out, out + done.stderr
    assert "verify=0" in out, out
    assert "No space left on device" in out and "Traceback" not in out, out
    assert "debris" not in out, out
    names = out.split("verify=0", 1)[1]
    assert "-small" in names and "-big" not in names, out
