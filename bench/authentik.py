"""Flagship acceptance: authentik's real dependency set, end to end, against plain uv.

Run from the checkout, after `./scripts/test` or `scripts/setup` set things up:

    uv run --frozen python bench/authentik.py [--cold-runs N] [--warm-runs N] [--noop-runs N]

The project is authentik's uv workspace as locked (tests/fixtures/authentik-2026.2.0rc1: 178
packages on CPython 3.13; lxml and xmlsec built from sdists because of the lock's
`no-binary-package`, psycopg-c against libpq and gssapi against krb5 because they publish no
Linux wheel) with the recipe in bench/authentik.toml: `opencontainers`, which the lock takes
from GitHub, is excluded and installed from its PyPI sdist as an extra source pinned by
hash; the four workspace members and the project get stand-in packages under their import
names (the fixture carries no application code), so assembly, relinking and verification
run over the real dependency set. Copies go to .bench/authentik/.

1. Build A: `lockbox build` from scratch (new store, empty uv cache): the layer and the
   application, verified (django and its version, lxml.etree, xmlsec, psycopg's C
   implementation, gssapi, cryptography, pydantic, kubernetes, opencontainers, the members).
   Prints the layer's size, files, ELF files, scrubbed references, the bundled libraries,
   and the unsatisfied libraries (a build with one would have failed: the recipe ignores none).
2. Build B: the layer again from a copy of the project at another path, in another store,
   with another empty uv cache: the hash must be the same.
3. Cold (empty uv cache, nothing in the store / a fresh venv) and warm (the cache filled,
   no layer / a fresh venv): `lockbox build --deps-only` against
   `uv sync --frozen --no-install-project --no-install-workspace --no-dev
   --no-install-package opencontainers` into a fresh venv. Wall time and peak memory
   (maximum resident set of the largest process, GNU time's %M) of each run, interleaved,
   medians. Target: cold at most 1.15 times uv.
4. No-op rebuild: `lockbox build` (layer and application in the store) against a no-op
   `uv sync` in an up-to-date venv, each run once untimed first (the lookup leaves the
   record that answers the next ones, docs/store.md#shortcuts). Target: no slower.
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
from collections.abc import Sequence
from pathlib import Path

from lockbox.inputs.interpreters import find_interpreter
from lockbox.tools.run import run, which

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "authentik"
FIXTURE = ROOT / "tests" / "fixtures" / "authentik-2026.2.0rc1"
RECIPE = Path(__file__).with_name("authentik.toml")
COLD_TARGET = 1.15
NOOP_TARGET = 1.0

# Import names of the workspace members and the project, for the stand-in packages.
STAND_INS = {
    "packages/ak-guardian": [
        "guardian",
        "guardian/conf",
        "guardian/management",
        "guardian/management/commands",
        "guardian/migrations",
    ],
    "packages/django-channels-postgres": ["django_channels_postgres"],
    "packages/django-dramatiq-postgres": ["django_dramatiq_postgres"],
    "packages/django-postgres-cache": ["django_postgres_cache"],
    ".": ["authentik", "lifecycle"],
}


def prepare_project(where: Path) -> Path:
    project = where / "project"
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(FIXTURE, project)
    with open(project / "pyproject.toml", "a") as file:
        file.write("\n" + RECIPE.read_text())
    for member, packages in STAND_INS.items():
        for package in packages:
            directory = project / member / package
            directory.mkdir(parents=True)
            (directory / "__init__.py").write_text(
                f'"""Stand-in for {package.replace("/", ".")}: the fixture has no code."""\n'
            )
    (project / "lifecycle" / "ak.py").write_text("def main():\n    print('ak stand-in')\n")
    return project


def measured(
    argv: Sequence[str | os.PathLike[str]], env: dict[str, str], cwd: Path | None = None
) -> tuple[float, int]:
    """Wall seconds and peak resident memory (KiB, from GNU time) of one run."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        start = time.perf_counter()
        run(["/usr/bin/time", "-o", out.name, "-f", "%M", *map(str, argv)], env=env, cwd=cwd)
        wall = time.perf_counter() - start
        peak = out.read().split()[-1]
    return wall, int(peak)


def median_line(label: str, runs: list[tuple[float, int]]) -> tuple[float, float]:
    wall = statistics.median(r[0] for r in runs)
    peak = statistics.median(r[1] for r in runs) / 1024
    print(
        f"  {label:8} median {wall:8.3f} s  peak {peak:7.1f} MiB  runs "
        + " ".join(f"{w:.3f}s/{m / 1024:.0f}MiB" for w, m in runs),
        flush=True,
    )
    return wall, peak


def verdict(label: str, ours: float, peer: float, target: float) -> bool:
    ratio = ours / peer
    ok = ratio <= target
    print(f"  ratio {label}: {ratio:.3f} (target <= {target}) {'PASS' if ok else 'FAIL'}")
    return ok


def layer_stats(layer: Path, entry: dict, app: dict) -> None:
    files = elfs = size = 0
    for directory, _, names in os.walk(layer):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            files += 1
            size += os.path.getsize(path)
            with open(path, "rb") as file:
                elfs += file.read(4) == b"\x7fELF"
    scrubbed = entry["inputs"]["scrubbed"]
    bundled = app["inputs"]["metadata"]["bundled"]
    print(f"layer: {entry['narHash']}")
    print(
        f"  {len(entry['inputs']['packages'])} distributions (+ extra sources "
        f"{entry['inputs'].get('extra-sources', [])}), {files} files, "
        f"{size / 1e6:.1f} MB, {elfs} ELF files"
    )
    print(f"  scrubbed {scrubbed['occurrences']} references in {scrubbed['files']} files")
    print(f"  bundled libraries in the application: {len(bundled)}: {', '.join(sorted(bundled))}")
    print("  unsatisfied libraries: 0 (the recipe ignores none; the build resolved every one)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cold-runs", type=int, default=1, help="timed cold runs of each, minutes each (default 1)"
    )
    parser.add_argument("--warm-runs", type=int, default=3, help="timed warm runs (default 3)")
    parser.add_argument("--noop-runs", type=int, default=11, help="timed no-op runs (default 11)")
    args = parser.parse_args()

    uv = str(which("uv", "run scripts/setup first"))
    lockbox = str(Path(sys.executable).with_name("lockbox"))
    python = find_interpreter("3.13", None).executable
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"{run([uv, '--version']).stdout.strip()}; {python}; project: {FIXTURE.name}")
    if WORK.exists():
        run(["rm", "-rf", WORK])
    base_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    base_env.pop("LOCKBOX_UV_CACHE", None)
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)

    # 1. Build A, from scratch.
    project = prepare_project(WORK / "a")
    store = WORK / "a" / "store"
    print("build A: lockbox build from scratch (downloads, four sdists compiled) …", flush=True)
    wall, peak = measured([lockbox, "--quiet", "--store", store, "build", project], base_env)
    print(f"  {wall:.1f} s, peak {peak / 1024:.0f} MiB")
    entries = json.loads(run([lockbox, "--store", store, "store", "ls", "--json"]).stdout)
    deps = next(e for e in entries if e["kind"] == "deps")
    app = next(e for e in entries if e["kind"] == "app")
    layer_stats(Path(deps["path"]), deps, app)

    # 2. Build B: another path, store and cache.
    other = prepare_project(WORK / "b")
    print("build B: the layer again, another path, store and uv cache …", flush=True)
    run(
        [lockbox, "--quiet", "--store", WORK / "b" / "store", "build", "--deps-only", other],
        env=base_env,
    )
    again = json.loads(
        run([lockbox, "--store", WORK / "b" / "store", "store", "ls", "--json"]).stdout
    )
    hash_b = next(e for e in again if e["kind"] == "deps")["narHash"]
    same = hash_b == deps["narHash"]
    print(f"  {hash_b}: {'identical' if same else 'DIFFERENT'} ({'PASS' if same else 'FAIL'})")
    shutil.rmtree(WORK / "b")

    # 3. Cold and warm, interleaved, against uv sync into a fresh venv.
    cache = store / ".lockbox" / "uv-cache"
    env = {**base_env, "UV_CACHE_DIR": str(cache)}
    peer = [
        uv,
        "sync",
        "--quiet",
        "--frozen",
        "--no-install-project",
        "--no-install-workspace",
        "--no-dev",
        "--no-install-package",
        "opencontainers",
        "--python",
        str(python),
    ]
    venv = WORK / "venv"
    ours_argv = [lockbox, "--quiet", "--store", store, "build", "--deps-only", project]

    def reset(empty_cache: bool) -> None:
        run([lockbox, "--quiet", "--store", store, "gc"], env=env)
        run(["rm", "-rf", venv, *([cache] if empty_cache else [])])
        os.sync()

    results = {}
    for label, empty, runs in (("cold", True, args.cold_runs), ("warm", False, args.warm_runs)):
        print(
            f"{label}: {'empty' if empty else 'warm'} uv cache, no layer / a fresh venv", flush=True
        )
        ours, theirs = [], []
        for _ in range(runs):
            reset(empty)
            ours.append(measured(ours_argv, env))
            reset(empty)
            theirs.append(measured(peer, {**env, "UV_PROJECT_ENVIRONMENT": str(venv)}, project))
        results[label] = (median_line("lockbox", ours), median_line("uv sync", theirs))
    cold_ok = verdict("cold lockbox/uv", results["cold"][0][0], results["cold"][1][0], COLD_TARGET)
    print(
        f"  ratio warm lockbox/uv: {results['warm'][0][0] / results['warm'][1][0]:.3f} "
        "(recorded; the target is the cold build's)"
    )

    # 4. No-op rebuild.
    run([lockbox, "--quiet", "--store", store, "lock-hash", project], env=env)
    run([lockbox, "--quiet", "--store", store, "build", project], env=env)
    run(peer, env={**env, "UV_PROJECT_ENVIRONMENT": str(venv)}, cwd=project)
    # lock-hash has just written the recipe: a lookup trusts files that have not changed
    # for two seconds, and the first one after that leaves the record later ones answer from.
    time.sleep(2.1)
    run([lockbox, "--quiet", "--store", store, "build", project], env=env)
    print("no-op: lockbox build (all in the store) / uv sync in an up-to-date venv")
    ours, theirs = [], []
    for _ in range(args.noop_runs):
        ours.append(measured([lockbox, "--quiet", "--store", store, "build", project], env))
        theirs.append(measured(peer, {**env, "UV_PROJECT_ENVIRONMENT": str(venv)}, project))
    noop_ok = verdict(
        "no-op lockbox/uv",
        median_line("lockbox", ours)[0],
        median_line("uv sync", theirs)[0],
        NOOP_TARGET,
    )
    print(f"overall: {'PASS' if same and cold_ok and noop_ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
