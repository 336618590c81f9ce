"""Time lockbox's relinking of the example's closure against a nixpkgs-style patchelf script.

Run from the checkout:

    uv run --frozen python bench/relink.py [--runs N]

The closure is the bundled example's (examples/gatekeeper): its dependency layer (built once
into .bench/assemble/store, like bench/assemble.py does; the first run compiles four sdists)
and the CPython 3.13 installation it runs on (pyenv's, test suite left out). Both trees are
copied, unrelinked, to .bench/relink/input.

- lockbox: `scan_tree` + `resolve` + `relink` (lockbox.native.elf, lockbox.native.resolve,
  lockbox.native.relink), in this process, on a fresh copy of each tree: read every ELF file,
  resolve every needed library through the trees and the host's ldconfig cache, bundle
  the host libraries (transitively), and set run paths with one patchelf call per group
  of files that get the same run path.
- reference: bench/reference_relink.sh, given what lockbox decided (the libraries to copy
  and each file's final run path) — so it does not even search for libraries — does what
  nixpkgs' autoPatchelf hook did per file, one patchelf process per query or change:
  `--print-interpreter`, `--print-needed`, `--print-rpath`, then `--set-rpath` where the
  run path changes; bundled libraries are copied with `cp`.

Target: lockbox at most 0.5 times the reference. Both produce the same run paths (checked
after every run). Runs are interleaved; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from lockbox.inputs.interpreters import find_interpreter
from lockbox.native.elf import scan_tree
from lockbox.native.relink import relink
from lockbox.native.resolve import resolve
from lockbox.tools.patchelf import Patchelf
from lockbox.tools.run import run

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "relink"
STORE = ROOT / ".bench" / "assemble" / "store"
EXAMPLE = ROOT / "examples" / "gatekeeper"
SCRIPT = Path(__file__).with_name("reference_relink.sh")
TARGET = 0.5


def prepare() -> list[Path]:
    env = {k: v for k, v in os.environ.items() if k != "LOCKBOX_UV_CACHE"}
    lockbox = str(Path(sys.executable).with_name("lockbox"))
    print("dependency layer of the example (compiles four sdists the first time) …", flush=True)
    layer = Path(
        run(
            [lockbox, "--quiet", "--store", STORE, "build", "--deps-only", EXAMPLE], env=env
        ).stdout.strip()
    )
    interpreter = find_interpreter("3.13", None)
    inputs = WORK / "input"
    if inputs.exists():
        shutil.rmtree(inputs)
    shutil.copytree(layer, inputs / "app", symlinks=True)
    prefix = inputs / "python"
    (prefix / "bin").mkdir(parents=True)
    shutil.copyfile(interpreter.executable, prefix / "bin" / interpreter.executable.name)
    libdir = Path(interpreter.sysconfig["LIBDIR"])
    shutil.copytree(
        libdir,
        prefix / "lib",
        symlinks=True,
        ignore=shutil.ignore_patterns(
            "test",
            "__pycache__",
            "site-packages",
            "config-*",
            "*.a",
            "idlelib",
            "tkinter",
            "turtledemo",
            "_tkinter*",
            "pkgconfig",
            "libpython3.so",
            "libpython3.13.so",
        ),
    )
    for path in inputs.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return [inputs / "app", prefix]


def fresh(trees: list[Path], name: str) -> list[Path]:
    out = WORK / name
    if out.exists():
        shutil.rmtree(out)
    copies = []
    for tree in trees:
        shutil.copytree(tree, out / tree.name, symlinks=True)
        copies.append(out / tree.name)
    os.sync()
    return copies


def ours(trees: list[Path], patchelf: Patchelf) -> None:
    for tree in trees:
        elfs, _ = scan_tree(tree)
        relink(tree, resolve(tree, elfs), patchelf)


def plan(done: list[Path], todo: list[Path]) -> Path:
    """What lockbox did to ``done``, as instructions for the reference on ``todo``."""
    lines = []
    for source, target in zip(done, todo, strict=True):
        lines += [
            f"copy\t{os.path.realpath(library)}\t{target / 'lib' / library.name}"
            for library in sorted((source / "lib").iterdir())
            if not (target / "lib" / library.name).exists()
        ]
        for info in scan_tree(source)[0]:
            relative = info.path.relative_to(source)
            if (target / relative).exists() or (source / "lib" / info.path.name).exists():
                lines.append(f"file\t{target / relative}\t{':'.join(info.runpath or info.rpath)}")
    path = WORK / "plan.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def runpaths(trees: list[Path]) -> dict[str, str]:
    found = {}
    for tree in trees:
        for info in scan_tree(tree)[0]:
            found[f"{tree.name}/{info.path.relative_to(tree)}"] = ":".join(
                info.runpath or info.rpath
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    patchelf = Patchelf.find()
    print(f"patchelf {patchelf.version}")
    inputs = prepare()
    # One untimed run of lockbox tells the reference what to do.
    done = fresh(inputs, "ours")
    ours(done, patchelf)
    expected = runpaths(done)
    elfs = sum(len(scan_tree(tree)[0]) for tree in inputs)
    print(f"closure: {elfs} ELF files before bundling")
    mine: list[float] = []
    reference: list[float] = []
    for _ in range(args.runs):
        trees = fresh(inputs, "ours")
        start = time.perf_counter()
        ours(trees, patchelf)
        mine.append(time.perf_counter() - start)
        assert runpaths(trees) == expected
        todo = fresh(inputs, "reference")
        instructions = plan(done, todo)
        start = time.perf_counter()
        run(["bash", SCRIPT, instructions])
        reference.append(time.perf_counter() - start)
        assert runpaths(todo) == expected, "the reference made other run paths"
    ratio = statistics.median(mine) / statistics.median(reference)
    print(
        f"  lockbox:   median {statistics.median(mine):.3f} s  runs "
        f"{' '.join(f'{t:.3f}' for t in mine)}"
    )
    print(
        f"  reference: median {statistics.median(reference):.3f} s  runs "
        f"{' '.join(f'{t:.3f}' for t in reference)}"
    )
    print(
        f"  ratio lockbox/reference: {ratio:.3f} (target <= {TARGET}) "
        f"{'PASS' if ratio <= TARGET else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
