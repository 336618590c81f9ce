"""lockbox: build uv-locked Python applications into pinned, hermetic, verified outputs."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported: see lockbox.cli.shortcut
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__version__ = "0.1.0"
"""The version's one source: the build reads it from here (pyproject.toml's
``[tool.hatch.version]``). Written out rather than read from the installed metadata, which would
cost every command an importlib.metadata import."""


def build_identity() -> str:
    """What stands for lockbox among the inputs of the entries it builds: its version and a
    digest of its own source, so that a changed lockbox makes new entries even when its
    version was not raised (as a changed builder makes new derivations in Nix)."""
    # A module global, not functools.cache: importing functools would cost the shortcut's
    # start 5 ms (lockbox.cli.shortcut).
    global _identity  # noqa: PLW0603
    if _identity is None:
        import hashlib
        from pathlib import Path

        digest = hashlib.sha256()
        package = Path(__file__).parent
        for path in identity_paths():
            if path.suffix == ".py":
                digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
        _identity = f"{__version__}+{digest.hexdigest()[:16]}"
    return _identity


def identity_paths() -> list[Path]:
    """lockbox's source files, sorted, and the directories holding them: what
    :func:`build_identity` reads, and where a new source file would appear."""
    from pathlib import Path

    from lockbox import fs

    package = Path(__file__).parent
    files = sorted(
        Path(directory, name)
        for directory, _, names in fs.walk(package)
        for name in names
        if name.endswith(".py")
    )
    return [*files, *sorted({path.parent for path in files})]


_identity: str | None = None


def default_store(environ: Mapping[str, str]) -> str:
    """Where the store lives unless ``--store`` says otherwise: ``$LOCKBOX_STORE``, else
    ``$XDG_DATA_HOME/lockbox/store`` (``~/.local/share/lockbox/store``)."""
    import os

    if environ.get("LOCKBOX_STORE"):
        return environ["LOCKBOX_STORE"]
    home = environ.get("HOME") or os.path.expanduser("~")
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return os.path.join(data_home, "lockbox", "store")
