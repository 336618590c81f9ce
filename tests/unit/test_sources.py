"""Extra sources: what fetching them names on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockbox.deps.sources import _name, fetch
from lockbox.environment import Environment
from lockbox.errors import HashMismatch
from lockbox.hashes import Sha256
from lockbox.inputs.recipe import ExtraSource
from lockbox.tools.toolbox import Toolbox


@pytest.mark.parametrize(
    "url", ["https://host/x/..", "https://host/.", "https://host/", "https://host/a/%2e%2e"]
)
def test_an_extra_source_name_is_one_path_component(url: str) -> None:
    name = _name(ExtraSource(Sha256(bytes(32)), url=url))
    assert "/" not in name and name.strip(".")


def test_a_kept_source_that_changed_is_fetched_again(tmp_path: Path) -> None:
    import hashlib

    archive = tmp_path / "demo-1.0.tar.gz"
    archive.write_bytes(b"the real archive")
    source = ExtraSource(Sha256(hashlib.sha256(b"the real archive").digest()), url=archive.as_uri())
    kept = fetch(source, tmp_path / "sources", Toolbox(Environment()))
    assert kept.read_bytes() == b"the real archive"
    # A build's code, or anyone, changes the kept copy; the next use must not take it.
    kept.chmod(0o644)
    kept.write_bytes(b"planted")
    again = fetch(source, tmp_path / "sources", Toolbox(Environment()))
    assert again.read_bytes() == b"the real archive"
    # And a declared hash the origin no longer matches is an error, not the kept copy.
    archive.write_bytes(b"moved on")
    again.write_bytes(b"planted")
    with pytest.raises(HashMismatch):
        fetch(source, tmp_path / "sources", Toolbox(Environment()))
