"""Attacks through the packages of a build root: a .deb can only write into the root.

The packages are pinned by SHA-256 from the archive's signed index, but the archive (or a
mirror, or whoever re-pinned) is not trusted to keep its files inside the root: a package
that ships a link out of the root, and another that writes through it, must not reach the
host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lockbox.deps.buildroot import RootPins, ensure_root
from lockbox.environment import Environment
from lockbox.errors import BuildRootError
from lockbox.store.store import Store
from lockbox.tools.toolbox import Toolbox
from tests.integration import test_buildroot
from tests.integration.test_buildroot import make_deb, pin

archive = test_buildroot.archive
own_deb_cache = test_buildroot.own_deb_cache

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", ["absolute", "dotdot"])
def test_a_package_cannot_write_through_a_link_another_one_shipped(
    tmp_path: Path, archive: tuple[str, Path], target: str
) -> None:
    base, served = archive
    outside = tmp_path / "outside"
    outside.mkdir()
    link = str(outside) if target == "absolute" else "../../../../../../../../../../" + str(outside)
    first = make_deb(served, "linker", "1", {}, {"usr/share/escape": link})
    second = make_deb(served, "writer", "1", {"usr/share/escape/planted": "owned\n"})
    pins = RootPins(
        "bookworm",
        ("linker", "writer"),
        (),
        (pin(first, base, "linker", "1"), pin(second, base, "writer", "1")),
    )
    with Store.open(tmp_path / "store") as store:
        try:
            entry = ensure_root(
                store, pins, Toolbox(Environment.from_process()), project_dir=tmp_path
            )
        except BuildRootError as error:
            assert "unpacking" in str(error)
        else:
            # tar may replace the link by a directory: then the file is inside the root.
            assert (entry.path / "usr/share/escape/planted").is_file()
    assert list(outside.iterdir()) == []
