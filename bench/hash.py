"""Time `lockbox hash` against `nix-hash --type sha256` on the tree of a real installed app.

Run from the checkout:

    uv run --frozen python bench/hash.py [--runs N]

The first run builds the tree: a virtual environment under .bench/hash-tree with a few
hundred MB of real PyPI packages (pinned below, so every machine hashes the same bytes).
Later runs reuse it. Both tools then hash it as separate processes, interleaved, after one
warm-up each, so both see the same (warm) page cache. Two more rows, for reference, split
lockbox's time: its command line hashing an empty file (start-up), and `nar_hash` called
from a process that imports nothing else. The hashes must agree; the script exits 1 if they
do not, and 0 otherwise, whether or not lockbox meets the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import stat
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lockbox.tools.run import run, which

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".bench" / "hash-tree"
INTERPRETER = Path("/root/.pyenv/versions/3.11.7/bin/python3")
PACKAGES = (
    "numpy==2.1.3",
    "scipy==1.14.1",
    "pandas==2.2.3",
    "matplotlib==3.9.2",
    "pillow==11.0.0",
    "sympy==1.13.3",
    "django==5.1.3",
    "sqlalchemy==2.0.36",
    "cryptography==43.0.3",
    "boto3==1.35.68",
    "botocore==1.35.68",
    "plotly==5.24.1",
)
TARGET = 1.0
"""The most lockbox may take, as a multiple of nix-hash's median time."""


def build_tree(tree: Path) -> None:
    """Install the pinned packages into a fresh venv at ``tree``, atomically."""
    uv = os.environ.get("UV") or str(which("uv", "run scripts/setup first"))
    staging = tree.with_name(tree.name + ".partial")
    run(["rm", "-rf", staging])
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    run([uv, "venv", "--quiet", "--python", INTERPRETER, staging], env=env)
    run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            staging / "bin" / "python",
            "--link-mode",
            "copy",
            *PACKAGES,
        ],
        env=env,
    )
    staging.rename(tree)


@dataclass(frozen=True)
class TreeSize:
    bytes: int
    """Total size of the regular files."""
    files: int
    directories: int
    symlinks: int


def tree_size(tree: Path) -> TreeSize:
    size = files = directories = symlinks = 0
    for directory, subdirectories, names in os.walk(tree):
        # os.walk lists a symlink to a directory among the directories, without entering it.
        for name in subdirectories:
            if os.path.islink(os.path.join(directory, name)):
                symlinks += 1
            else:
                directories += 1
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISLNK(info.st_mode):
                symlinks += 1
            else:
                files += 1
                size += info.st_size
    return TreeSize(size, files, directories, symlinks)


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = run(argv)
    return time.perf_counter() - start, result.stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each tool (default 7)")
    parser.add_argument("--tree", type=Path, default=TREE, help=f"tree to hash (default {TREE})")
    args = parser.parse_args()

    if not args.tree.exists():
        print(f"building {args.tree} (once) ...", flush=True)
        build_tree(args.tree)
    lockbox = ROOT / ".venv" / "bin" / "lockbox"
    nix_hash = str(which("nix-hash", "install nix-bin (scripts/setup does)"))
    with tempfile.NamedTemporaryFile() as empty:
        commands = {
            "lockbox": [str(lockbox), "hash", "--hex", str(args.tree)],
            "nix-hash": [nix_hash, "--type", "sha256", str(args.tree)],
            # For reference: how much of lockbox's time is the command line starting up,
            # and how long the library takes in a process that imports nothing else.
            "lockbox hash EMPTY-FILE": [str(lockbox), "hash", "--hex", empty.name],
            "nar_hash alone": [sys.executable, "-c", NAR_HASH_ALONE, str(args.tree)],
        }
        return compare(args.tree, args.runs, commands, nix_hash)


NAR_HASH_ALONE = (
    "import sys; from pathlib import Path; from lockbox.store.nar import nar_hash; "
    "print(nar_hash(Path(sys.argv[1])).sha256.hex)"
)


def compare(tree: Path, runs: int, commands: dict[str, list[str]], nix_hash: str) -> int:
    size = tree_size(tree)
    print(f"cpu       {cpu_model()}, {os.cpu_count()} cores")
    print(f"python    {sys.version.split()[0]} ({sys.executable})")
    print(f"nix-hash  {run([nix_hash, '--version']).stdout.strip()}")
    print(
        f"tree      {tree}: {size.bytes / 1e6:.0f} MB in {size.files} files, "
        f"{size.directories} directories, {size.symlinks} symlinks"
    )

    outputs = {name: timed(argv)[1] for name, argv in commands.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            elapsed, output = timed(argv)
            times[name].append(elapsed)
            if output != outputs[name]:
                print(f"FAIL: {name} printed {outputs[name]}, then {output}")
                return 1
    if not outputs["lockbox"] == outputs["nix-hash"] == outputs["nar_hash alone"]:
        print(f"FAIL: hashes differ: {outputs}")
        return 1

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"runs      {runs} of each, interleaved, after one warm-up")
    for name, values in times.items():
        spread = " ".join(f"{value:.3f}" for value in sorted(values))
        print(f"  {name:<24} median {medians[name]:.3f} s   ({spread})")
    ratio = medians["lockbox"] / medians["nix-hash"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"hash      {outputs['lockbox']} (all agree)")
    print(f"ratio     lockbox / nix-hash = {ratio:.3f}: {verdict} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
