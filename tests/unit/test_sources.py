"""Extra sources: what fetching them names on disk."""

from __future__ import annotations

import pytest

from lockbox.hashes import Sha256
from lockbox.recipe import ExtraSource
from lockbox.sources import _name


@pytest.mark.parametrize("url", ["https://host/x/..", "https://host/.", "https://host/",
                                 "https://host/a/%2e%2e"])
def test_an_extra_source_name_is_one_path_component(url: str) -> None:
    name = _name(ExtraSource(Sha256(bytes(32)), url=url))
    assert "/" not in name and name.strip(".")
