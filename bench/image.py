"""Time `lockbox image` against writing and hashing the same closure once with tar.

Run from the checkout:

    uv run --frozen python bench/image.py [--runs N]

The closure is the bundled example's (examples/gatekeeper), built once into
.bench/assemble/store (the first run compiles four sdists and assembles the application).

- lockbox: `lockbox image examples/gatekeeper -o FILE` — a store lookup of the application,
  then five layers written in parallel (tar, sha256 of the tar, gzip, sha256 of the blob),
  config, manifest, index and the archive of the layout; and the same with
  `--no-compress`.
- floor: `tar -cf - <application> <interpreter entry> | sha256sum`, the closure's bytes
  written and hashed once.

Target: lockbox at most 1.5 times the floor. Runs are interleaved; medians are reported.
Outputs are removed and the file system synced between runs, untimed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from lockbox.run import run

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
    app = Path(run([lockbox, "--quiet", "--store", STORE, "build", EXAMPLE], env=env)
               .stdout.strip())
    python = (app / "python").resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    output = WORK / "gatekeeper.tar"
    size = sum(int(run(["du", "-sb", "--apparent-size", path]).stdout.split()[0])
               for path in (app, python))
    print(f"closure: {app.name} + {python.name}, {size / 1e6:.1f} MB")

    def settle() -> None:
        output.unlink(missing_ok=True)
        os.sync()

    def timed(argv: list[str | os.PathLike[str]]) -> float:
        settle()
        start = time.perf_counter()
        run(argv, env=env)
        return time.perf_counter() - start

    image = [lockbox, "--quiet", "--store", STORE, "image", EXAMPLE, "-o", output]
    floor = ["bash", "-c", f"tar -cf - -C / {str(app).lstrip('/')} {str(python).lstrip('/')} "
                           "| sha256sum >/dev/null"]
    timed(image)  # warm-up: the page cache holds the closure for every run after it
    results: dict[str, list[float]] = {"gzip": [], "none": [], "floor": []}
    for _ in range(args.runs):
        results["gzip"].append(timed(image))
        results["none"].append(timed([*image, "--no-compress"]))
        results["floor"].append(timed(floor))
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, label in (("gzip", "lockbox image (gzip)"), ("none", "lockbox image --no-compress"),
                        ("floor", "tar | sha256sum")):
        print(f"  {label:<28} median {medians[name]:6.3f} s  runs "
              f"{' '.join(f'{t:.3f}' for t in results[name])}")
    for name in ("gzip", "none"):
        ratio = medians[name] / medians["floor"]
        print(f"  ratio {name}/floor: {ratio:.3f} (target <= {TARGET}) "
              f"{'PASS' if ratio <= TARGET else 'FAIL'}")
    settle()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
