"""lockbox: build uv-locked Python applications into pinned, hermetic, verified outputs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lockbox")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
