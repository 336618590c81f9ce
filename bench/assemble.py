"""Time the assembly phase against `cp -a` of the same application tree.

Run from the checkout:

    uv run --frozen python bench/assemble.py [--runs N]

The project is the bundled example (examples/gatekeeper), copied to .bench/assemble/project.
Its dependency layer is built once into .bench/assemble/store (the first run compiles lxml,
xmlsec, psycopg-c and gssapi: minutes) and made a store root, like the interpreter's entry and
the layer's bytecode the first build makes; between runs the application's own root (every build makes one) is
dropped and `lockbox gc` removes only the application.

1. Assembly: `lockbox build` with the layer in the store and no application — the whole
   phase: look the layer up, read and hash the sources, link the layer, copy, patch,
   substitute, write members' dist-info and bin/, hash, seal and register — for a copy of
   the example whose recipe has no [verify] table (the checks run the application; they
   are not writing it). The peer is `cp -a` of the built application to a new directory,
   the floor for writing those bytes. Target: ratio <= 2.0.
2. The same with the example's 13 checks (imports, `manage.py check`, `migrate`, …), each in
   the offline sandbox, for information: what a user waits for.

Runs are interleaved (lockbox, peer, lockbox, peer, …); medians are reported. Before each run
the previous output is removed and the file system synced, untimed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lockbox.tools.run import run

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "assemble"
EXAMPLE = ROOT / "examples" / "gatekeeper"
TARGET = 2.0


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def copy_example(name: str, verify: bool) -> Path:
    project = WORK / name
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    if not verify:
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text()
        pyproject.write_text(re.sub(r"\n\[tool\.lockbox\.verify\].*", "\n", text, flags=re.S))
    return project


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    args = parser.parse_args()

    lockbox = str(Path(sys.executable).with_name("lockbox"))
    store = WORK / "store"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOCKBOX_UV_CACHE", "PYTHONDONTWRITEBYTECODE")
    }
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    WORK.mkdir(parents=True, exist_ok=True)
    plain = copy_example("project", verify=False)
    checked = copy_example("project-verified", verify=True)

    def build(project: Path) -> Path:
        result = run([lockbox, "--quiet", "--store", store, "build", project], env=env)
        return Path(result.stdout.strip())

    print("building the dependency layer (compiles four sdists the first time) …", flush=True)
    deps = run([lockbox, "--quiet", "--store", store, "build", "--deps-only", plain], env=env)
    run(
        [lockbox, "--quiet", "--store", store, "store", "root", "bench-deps", deps.stdout.strip()],
        env=env,
    )
    target = WORK / "copy"
    # The interpreter's entry and the layer's bytecode are made by the first build; root them
    # too, so that gc between runs leaves them (in use, the application's root keeps them).
    build(plain)
    listing = json.loads(
        run([lockbox, "--quiet", "--store", store, "store", "ls", "--json"], env=env).stdout
    )
    for entry in listing:
        if entry["kind"] in ("python", "bytecode"):
            run(
                [
                    lockbox,
                    "--quiet",
                    "--store",
                    store,
                    "store",
                    "root",
                    f"bench-{entry['kind']}",
                    entry["path"],
                ],
                env=env,
            )

    def settle() -> None:
        # A build roots its application under its name; drop that root so gc removes it.
        run(
            [lockbox, "--quiet", "--store", store, "store", "unroot", "gatekeeper"],
            env=env,
            check=False,
        )
        run([lockbox, "--quiet", "--store", store, "gc"], env=env)
        shutil.rmtree(target, ignore_errors=True)
        os.sync()

    overall = True
    for label, project, gated in (
        ("assembly, no checks", plain, True),
        ("assembly with the example's 13 checks", checked, False),
    ):
        ours: list[float] = []
        peer: list[float] = []
        settle()
        app = build(project)
        for _ in range(args.runs):
            settle()
            ours.append(timed(functools.partial(build, project)))
            settle()
            build(project)  # the tree cp copies, not timed
            shutil.rmtree(target, ignore_errors=True)
            os.sync()
            peer.append(timed(functools.partial(run, ["cp", "-a", app, target])))
        ours_median, peer_median = statistics.median(ours), statistics.median(peer)
        ratio = ours_median / peer_median
        size = int(run(["du", "-sb", "--apparent-size", target]).stdout.split()[0])
        print(f"{label} ({size / 1e6:.1f} MB)")
        print(
            f"  lockbox build: median {ours_median:7.3f} s  runs "
            f"{' '.join(f'{t:.3f}' for t in ours)}"
        )
        print(
            f"  cp -a:         median {peer_median:7.3f} s  runs "
            f"{' '.join(f'{t:.3f}' for t in peer)}"
        )
        if gated:
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            overall = overall and ratio <= TARGET
            print(f"  ratio lockbox/cp: {ratio:.3f} (target <= {TARGET}) {verdict}")
        else:
            print(f"  ratio lockbox/cp: {ratio:.3f} (for information)")
    shutil.rmtree(target, ignore_errors=True)
    print(f"overall: {'PASS' if overall else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
