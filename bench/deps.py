"""Time the dependency phase against plain `uv sync` on authentik's lock.

Run from the checkout:

    uv run --frozen python bench/deps.py [--cold-runs N] [--warm-runs N] [--repeat-runs N] [--example]

The project is authentik's uv workspace (tests/fixtures/authentik-2026.2.0rc1: 178 packages
to install on CPython 3.13, four of them compiled from sdists: lxml and xmlsec because of
`no-binary-package`, psycopg-c and gssapi because they publish no Linux wheel). It is copied
to .bench/deps/project with a recipe that excludes `opencontainers`, a git source on GitHub,
and its sdists' build dependencies are pinned with `lockbox lock-build` (untimed, a few
minutes: the four sdists are compiled once to find them), as a user would commit them; the
peer reads the same pins from pyproject.toml and uv.lock. The recipe has a build root
(`[deps.toolchain]`, docs/toolchain.md), pinned and made once with `lockbox
lock-toolchain` (untimed) and kept through the runs: lockbox compiles in it, the peer
against the host's headers (`bench/buildroot.py` times the root's creation).

With `--example` the project is the bundled example instead (examples/gatekeeper: 10
packages, the same four sdists), as committed: its build pins and build root are pinned
already; the root is made (untimed) and rooted before the runs. It is given the same package set:

    uv sync --frozen --no-install-project --no-install-workspace --no-dev \
        --no-install-package opencontainers --python <3.13>

Both use the store's uv cache (.bench/deps/store/.lockbox/uv-cache): lockbox its part keyed
by the toolchain and the build pins (docs/deps.md), the peer the top of it.

1. Cold layer build: `lockbox build --deps-only` with no layer in the store (`lockbox gc`
   removes the previous one, untimed) and an empty uv cache — the whole phase: downloads,
   four sdists compiled, install, normalise, scrub, hash, register — against the peer into a
   fresh venv with an empty cache too. Target: ratio <= 1.15.
2. Warm: the same with the uv cache filled (one untimed run of each first), so both only
   link what the cache holds; lockbox then reads and hashes every byte of the layer, which
   the peer does not. Recorded, not a target.
3. Repeat build: the recipe declares the layer's hash and the layer is in the store, so
   `lockbox build --deps-only` is a lookup; against a no-op `uv sync` in an up-to-date venv.
   Each is run once untimed first (the venv is made; the lookup leaves the record that
   answers the next ones, docs/store.md#shortcuts). Target: ratio <= 1.0.

Runs are interleaved (lockbox, peer, lockbox, peer, …); medians are reported. Before each
cold run the previous output is removed and the file system synced, untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lockbox.inputs.interpreters import find_interpreter
from lockbox.tools.run import run, which

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "deps"
FIXTURE = ROOT / "tests" / "fixtures" / "authentik-2026.2.0rc1"
EXAMPLE = ROOT / "examples" / "gatekeeper"
COLD_TARGET = 1.15
REPEAT_TARGET = 1.0
RECIPE = """

[tool.lockbox]
python = "3.13"

[tool.lockbox.deps]
# A git source on GitHub, which this machine cannot reach; it would come from elsewhere.
exclude = ["opencontainers"]

[tool.lockbox.deps.toolchain]
# The sdists compile in a build root of pinned Debian packages (docs/toolchain.md).
packages = ["libpq-dev", "libkrb5-dev", "libxml2-dev", "libxslt1-dev", "libxmlsec1-dev",
            "libssl-dev", "zlib1g-dev"]
"""


def prepare_example(lockbox: str, store: Path, env: dict[str, str]) -> Path:
    """The bundled example, as committed (its build pins and build root pinned already),
    with its build root made and rooted so that the cold runs find it."""
    from lockbox.deps import buildroot
    from lockbox.environment import Environment
    from lockbox.inputs.project import load_project
    from lockbox.store.store import Store
    from lockbox.tools.toolbox import Toolbox

    project = WORK / "example"
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    pins = buildroot.pinned_root(load_project(project))
    assert pins is not None
    print("making the build root (untimed) …", flush=True)
    with Store.open(store) as opened:
        entry = buildroot.ensure_root(
            opened, pins, Toolbox(Environment.from_process()), project_dir=project
        )
    run(
        [lockbox, "--quiet", "--store", store, "store", "root", "bench-build-root", entry.path],
        env=env,
    )
    return project


def prepare_project(lockbox: str, store: Path, env: dict[str, str]) -> Path:
    project = WORK / "project"
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(FIXTURE, project)
    with open(project / "pyproject.toml", "a") as file:
        file.write(RECIPE)
    print("pinning the build dependencies (lockbox lock-build, untimed) …", flush=True)
    run([lockbox, "--quiet", "--store", store, "lock-build", project], env=env)
    print("pinning and making the build root (lockbox lock-toolchain, untimed) …", flush=True)
    run([lockbox, "--quiet", "--store", store, "lock-toolchain", project], env=env)
    # The cold builds are timed with the root present: `gc` between them must keep it.
    listing = json.loads(run([lockbox, "--store", store, "store", "ls", "--json"], env=env).stdout)
    roots = [entry["path"] for entry in listing if entry["kind"] == "toolchain"]
    run(
        [lockbox, "--quiet", "--store", store, "store", "root", "bench-build-root", roots[-1]],
        env=env,
    )
    return project


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def report(label: str, ours: list[float], peer: list[float], target: float | None) -> bool:
    ours_median, peer_median = statistics.median(ours), statistics.median(peer)
    ratio = ours_median / peer_median
    print(f"{label}")
    print(f"  lockbox: median {ours_median:8.3f} s  runs {' '.join(f'{t:.3f}' for t in ours)}")
    print(f"  uv sync: median {peer_median:8.3f} s  runs {' '.join(f'{t:.3f}' for t in peer)}")
    if target is None:
        print(f"  ratio lockbox/uv: {ratio:.3f} (no target)")
        return True
    verdict = "PASS" if ratio <= target else "FAIL"
    print(f"  ratio lockbox/uv: {ratio:.3f} (target <= {target}) {verdict}")
    return ratio <= target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="timed runs of each with an empty uv cache, minutes each (default 3)",
    )
    parser.add_argument(
        "--warm-runs",
        type=int,
        default=5,
        help="timed runs of each with the uv cache filled (default 5)",
    )
    parser.add_argument(
        "--repeat-runs", type=int, default=10, help="timed repeat runs of each (default 10)"
    )
    parser.add_argument(
        "--example",
        action="store_true",
        help="the bundled example (10 packages, the same four sdists, build "
        "pins and build root committed) instead of authentik's lock",
    )
    args = parser.parse_args()

    uv = str(which("uv", "run scripts/setup first"))
    lockbox = str(Path(sys.executable).with_name("lockbox"))
    python = find_interpreter("3.13", None).executable
    WORK.mkdir(parents=True, exist_ok=True)
    store = WORK / "store"
    cache = store / ".lockbox" / "uv-cache"
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("LOCKBOX_UV_CACHE", None)
    # An installed lockbox has its bytecode; let Python write it rather than compile each run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    project = (prepare_example if args.example else prepare_project)(lockbox, store, env)
    peer_argv = [
        uv,
        "sync",
        "--quiet",
        "--frozen",
        "--no-install-project",
        "--no-install-workspace",
        "--no-dev",
        *([] if args.example else ["--no-install-package", "opencontainers"]),
        "--python",
        str(python),
    ]
    uv_version = run([uv, "--version"]).stdout.strip()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    label = "examples/gatekeeper" if args.example else f"{FIXTURE.name} (authentik's lock)"
    print(f"{uv_version}; {python}; project: {label}")

    scratch = Path(tempfile.mkdtemp(prefix="bench-deps-", dir=WORK))

    def ours_cold() -> None:
        run([lockbox, "--quiet", "--store", store, "build", "--deps-only", project], env=env)

    def empty_store() -> None:
        run([lockbox, "--quiet", "--store", store, "gc"], env=env)

    def peer_cold() -> None:
        venv = scratch / "venv-cold"
        run(peer_argv, cwd=project, env={**env, "UV_PROJECT_ENVIRONMENT": str(venv)})

    def fresh_venv() -> None:
        shutil.rmtree(scratch / "venv-cold", ignore_errors=True)

    def empty_cache() -> None:
        run(["rm", "-rf", cache])

    def settle(*actions: Callable[[], object]) -> None:
        """Run ``actions`` (untimed), then flush the page cache's dirty pages, so that the
        next timed run does not pay for the writeback of the one before."""
        for action in actions:
            action()
        os.sync()

    results = {}
    for label, runs, empty in (("cold", args.cold_runs, True), ("warm", args.warm_runs, False)):
        if not empty:
            print("filling the uv cache (downloads, sdist builds) …", flush=True)
            empty_store()
            ours_cold()
            fresh_venv()
            peer_cold()
        ours: list[float] = []
        peer: list[float] = []
        emptied = (empty_cache,) if empty else ()
        for _ in range(runs):
            settle(empty_store, *emptied)
            ours.append(timed(ours_cold))
            settle(fresh_venv, *emptied)
            peer.append(timed(peer_cold))
            print(f"  {label}: lockbox {ours[-1]:.2f} s, uv sync {peer[-1]:.2f} s", flush=True)
        results[label] = (ours, peer)
    cold_ok = report(
        "cold layer build (empty uv cache, no layer in the store / fresh venv)",
        *results["cold"],
        COLD_TARGET,
    )
    report(
        "warm: the same with the uv cache filled (recorded; the target is the cold build's)",
        *results["warm"],
        None,
    )

    run([lockbox, "--quiet", "--store", store, "lock-hash", project], env=env)
    venv = scratch / "venv-repeat"
    peer_env = {**env, "UV_PROJECT_ENVIRONMENT": str(venv)}
    run(peer_argv, cwd=project, env=peer_env)
    # lock-hash has just written the recipe: a lookup trusts files that have not changed
    # for two seconds, and the first one after that leaves the record later ones answer from.
    time.sleep(2.1)
    run([lockbox, "--quiet", "--store", store, "build", "--deps-only", project], env=env)
    ours, peer = [], []
    for _ in range(args.repeat_runs):
        ours.append(
            timed(
                lambda: run(
                    [lockbox, "--quiet", "--store", store, "build", "--deps-only", project], env=env
                )
            )
        )
        peer.append(timed(lambda: run(peer_argv, cwd=project, env=peer_env)))
    repeat_ok = report(
        "repeat build (declared hash in the store / up-to-date venv)", ours, peer, REPEAT_TARGET
    )
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"overall: {'PASS' if cold_ok and repeat_ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
