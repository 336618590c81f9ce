"""lockbox: build uv-locked Python applications into pinned, hermetic, verified outputs."""

__version__ = "0.1.0"
"""The version, kept equal to pyproject.toml's (a test checks); written out rather than read
from the installed metadata, which would cost every command an importlib.metadata import."""
