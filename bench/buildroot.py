"""Time pinning and making a build root: the example's (examples/gatekeeper).

Run from the checkout:

    uv run --frozen python bench/buildroot.py [--runs N]

A build root is paid once per store (its .deb files once per user), so this is a cost to
report, not a race against a peer. Printed: the pinning (`lockbox lock-toolchain`'s
resolution against the Debian archive: index download, essential set, two apt
resolutions), the first making of the root with an empty .deb cache (downloads, unpacking,
hashing, registering), and the making in a fresh store with the files already fetched;
medians of N runs each, the root's package count, .deb bytes and unpacked size.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lockbox.deps import buildroot
from lockbox.environment import Environment
from lockbox.inputs.project import load_project
from lockbox.store.store import Store
from lockbox.tools.toolbox import Toolbox

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gatekeeper"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args()
    project = load_project(EXAMPLE)
    pins = buildroot.pinned_root(project)
    assert pins is not None and project.recipe.deps.toolchain is not None
    (ROOT / ".bench").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-root-", dir=ROOT / ".bench"))
    tools = Toolbox(Environment({**os.environ, "XDG_CACHE_HOME": str(work / "cache")}))
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    resolving, first, again = [], [], []
    size = 0
    for run in range(args.runs):
        start = time.perf_counter()
        buildroot.resolve(project.recipe.deps.toolchain.packages, pins.distribution, None, tools)
        resolving.append(time.perf_counter() - start)
        shutil.rmtree(work / "cache", ignore_errors=True)
        for times in (first, again):
            with Store.open(work / f"store-{run}-{len(times)}") as store:
                start = time.perf_counter()
                entry = buildroot.ensure_root(store, pins, tools, project_dir=EXAMPLE)
                times.append(time.perf_counter() - start)
                size = entry.nar_size
            shutil.rmtree(work / f"store-{run}-{len(times) - 1}", ignore_errors=True)
        print(
            f"  run {run + 1}: pin {resolving[-1]:.1f} s, make (download) {first[-1]:.1f} s, "
            f"make (files kept) {again[-1]:.1f} s",
            flush=True,
        )
    debs = sum(p.size for p in pins.packages)
    print(
        f"build root of {len(pins.packages)} packages: {debs / 1e6:.1f} MB of .deb files, "
        f"{size / 1e6:.0f} MB unpacked (NAR)"
    )
    for label, times in (
        ("pinning (resolve against the archive)", resolving),
        ("making, .deb files downloaded", first),
        ("making, .deb files already fetched", again),
    ):
        print(
            f"{label}: median {statistics.median(times):.1f} s  runs "
            f"{' '.join(f'{t:.1f}' for t in times)}"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
