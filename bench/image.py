"""Time `lockbox image` against writing and hashing the same closure once with tar.

Run from the checkout:

    uv run --frozen python bench/image.py [--runs N]

The closure is the bundled example's (examples/gatekeeper), built once into
.bench/assemble/store (the first run compiles four sdists and assembles the application).

- lockbox: `lockbox image examples/gatekeeper -o FILE` — the application looked up (from
  the record of the previous image's lookup), then six layers written in parallel (tar,
  sha256 of the tar, gzip, sha256 of the blob), config, manifest, index and the archive of
  the layout. Timed three ways: with no layer kept in the store (each run starts by
  removing STORE/.lockbox/derived, untimed), the same with `--no-compress`, and right
  after an image of the same closure, which left the layers of the entries the
  application references (interpreter, dependency layer, its bytecode, bundled libraries)
  in the store.
- floor: `tar -cf - <application> <the entries it references> | sha256sum`, the closure's
  bytes written and hashed once (tar stores a hardlinked file's bytes once).

Target: lockbox at most 1.5 times the floor, with no layer kept. Runs are interleaved;
medians are reported. Outputs are removed and the file system synced between runs, untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from lockbox.tools.run import run

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "image"
STORE = ROOT / ".bench" / "assemble" / "store"
EXAMPLE = ROOT / "examples" / "gatekeeper"
TARGET = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("LOCKBOX_UV_CACHE",)}
    lockbox = str(Path(sys.executable).with_name("lockbox"))
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    print("building the example (compiles four sdists the first time) …", flush=True)
    app = Path(
        run([lockbox, "--quiet", "--store", STORE, "build", EXAMPLE], env=env).stdout.strip()
    )
    entries = json.loads(run([lockbox, "--store", STORE, "store", "ls", "--json"]).stdout)
    references = next(entry["references"] for entry in entries if entry["path"] == str(app))
    closure = [
        app,
        *(Path(entry["path"]) for entry in entries if Path(entry["path"]).name in references),
    ]
    WORK.mkdir(parents=True, exist_ok=True)
    output = WORK / "gatekeeper.tar"
    size = int(run(["du", "-scb", "--apparent-size", *closure]).stdout.split()[-2])
    print(
        f"closure: {', '.join(path.name for path in closure)}; {size / 1e6:.1f} MB "
        "(du, hardlinks counted once)"
    )

    def settle() -> None:
        output.unlink(missing_ok=True)
        os.sync()

    def forget_layers() -> None:
        run(["rm", "-rf", STORE / ".lockbox" / "derived"])

    def timed(argv: list[str | os.PathLike[str]]) -> float:
        settle()
        start = time.perf_counter()
        run(argv, env=env)
        return time.perf_counter() - start

    image = [lockbox, "--quiet", "--store", STORE, "image", EXAMPLE, "-o", output]
    floor = [
        "bash",
        "-c",
        "tar -cf - -C / "
        + " ".join(str(path).lstrip("/") for path in closure)
        + " | sha256sum >/dev/null",
    ]
    timed(image)  # warm-up: the page cache holds the closure for every run after it
    results: dict[str, list[float]] = {"cold": [], "none": [], "kept": [], "floor": []}
    for _ in range(args.runs):
        forget_layers()
        results["cold"].append(timed(image))
        results["kept"].append(timed(image))
        forget_layers()
        results["none"].append(timed([*image, "--no-compress"]))
        results["floor"].append(timed(floor))
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, label in (
        ("cold", "lockbox image (gzip)"),
        ("none", "lockbox image --no-compress"),
        ("kept", "lockbox image, layers kept"),
        ("floor", "tar | sha256sum"),
    ):
        print(
            f"  {label:<28} median {medians[name]:6.3f} s  runs "
            f"{' '.join(f'{t:.3f}' for t in results[name])}"
        )
    for name in ("cold", "none", "kept"):
        ratio = medians[name] / medians["floor"]
        print(
            f"  ratio {name}/floor: {ratio:.3f} (target <= {TARGET}) "
            f"{'PASS' if ratio <= TARGET else 'FAIL'}"
        )
    settle()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
