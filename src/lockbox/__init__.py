"""lockbox: build uv-locked Python applications into pinned, hermetic, verified outputs."""

import functools

__version__ = "0.1.0"
"""The version, kept equal to pyproject.toml's (a test checks); written out rather than read
from the installed metadata, which would cost every command an importlib.metadata import."""


@functools.cache
def build_identity() -> str:
    """What stands for lockbox among the inputs of the entries it builds: its version and a
    digest of its own source, so that a changed lockbox makes new entries even when its
    version was not raised (as a changed builder makes new derivations in Nix)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"
