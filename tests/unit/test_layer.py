"""Normalising an installed environment into a layer, on hand-made environments."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from lockbox.deps.layer import SEALED_MTIME_NS, normalise
from lockbox.deps.treediff import diff_trees
from lockbox.errors import LayerError
from lockbox.scrub import Scrubber, mangle


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    root = tmp_path / "venv"
    site = root / "lib" / "python3.12" / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("BUILT_IN = '/build/root/src'\n")
    (site / "pkg" / "__pycache__" / "__init__.cpython-312.pyc").write_bytes(b"\x00pyc")
    (site / "pkg" / "tool").write_text("#!/bin/sh\n")
    (site / "pkg" / "tool").chmod(0o700)
    (site / "pkg" / "link.py").symlink_to("__init__.py")
    (site / "_virtualenv.pth").write_text("import _virtualenv\n")
    (site / "_virtualenv.py").write_text("")
    dist = site / "pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    (dist / "INSTALLER").write_text("uv\n")
    (dist / "direct_url.json").write_text(json.dumps({"url": "file:///home/me/pkg"}))
    (dist / "uv_build.json").write_text('{"extra_build_variables": {"PATH": "/usr/bin"}}')
    (dist / "uv_cache.json").write_text('{"timestamp":{"secs_since_epoch":1795676256}}')
    (dist / "RECORD").write_text(
        "pkg/__init__.py,sha256=stale,1\n"
        "pkg/__pycache__/__init__.cpython-312.pyc,,\n"
        "pkg/tool,,\npkg/link.py,,\n"
        "../../../bin/pkg,sha256=x,3\n"
        "pkg-1.0.dist-info/RECORD,,\n"
    )
    (root / "bin").mkdir()
    (root / "bin" / "pkg").write_text("#!/tmp/venv/bin/python\n")
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return root


def test_only_site_packages_is_kept_and_build_leftovers_are_dropped(
    venv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "layer"
    report = normalise(venv, out, Scrubber(["/build/root"]))
    site = out / "lib" / "python3.12" / "site-packages"
    assert sorted(p.name for p in out.iterdir()) == ["lib"]
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*")) == [
        "pkg",
        "pkg-1.0.dist-info",
        "pkg-1.0.dist-info/INSTALLER",
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/RECORD",
        "pkg/__init__.py",
        "pkg/link.py",
        "pkg/tool",
    ]
    assert os.readlink(site / "pkg" / "link.py") == "__init__.py"
    assert os.stat(site / "pkg" / "tool").st_mode & 0o111
    assert not os.stat(site / "pkg" / "__init__.py").st_mode & 0o111
    assert report.dropped["__pycache__ directories"] == 1
    assert report.dropped["direct_url.json of local paths"] == 1
    assert report.dropped["uv_cache.json (when a local source was read)"] == 1
    assert [(d.name, d.version) for d in report.distributions] == [("pkg", "1.0")]


def test_files_are_scrubbed_and_record_lists_the_final_bytes(venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "layer"
    report = normalise(venv, out, Scrubber(["/build/root"]))
    site = out / "lib" / "python3.12" / "site-packages"
    init = (site / "pkg" / "__init__.py").read_bytes()
    assert init == b"BUILT_IN = '" + mangle(len("/build/root/src")) + b"'\n"
    assert report.scrub.found == {"pkg/__init__.py": {"/build/root/src": 1}}
    record = (site / "pkg-1.0.dist-info" / "RECORD").read_text().splitlines()
    metadata = (site / "pkg-1.0.dist-info" / "METADATA").read_bytes()
    assert record == [
        f"pkg-1.0.dist-info/INSTALLER,{record_hash(b'uv' + bytes([10]))},3",
        f"pkg-1.0.dist-info/METADATA,{record_hash(metadata)},{len(metadata)}",
        f"pkg/__init__.py,{record_hash(init)},{len(init)}",
        "pkg/link.py,,",
        f"pkg/tool,{record_hash(b'#!/bin/sh' + bytes([10]))},10",
        "pkg-1.0.dist-info/RECORD,,",
    ]


def test_normalising_twice_gives_identical_trees(venv: Path, tmp_path: Path) -> None:
    shutil.copytree(venv, tmp_path / "venv2", symlinks=True)
    normalise(venv, tmp_path / "a", Scrubber(["/build/root"]))
    normalise(tmp_path / "venv2", tmp_path / "b", Scrubber(["/build/root"]))
    assert diff_trees(tmp_path / "a", tmp_path / "b").same


def test_a_hardlinked_file_is_replaced_not_changed(venv: Path, tmp_path: Path) -> None:
    """uv hardlinks installed files from its cache: scrubbing must not reach the cache."""
    cached = tmp_path / "cache-copy.py"
    os.link(venv / "lib" / "python3.12" / "site-packages" / "pkg" / "__init__.py", cached)
    normalise(venv, tmp_path / "layer", Scrubber(["/build/root"]))
    assert cached.read_text() == "BUILT_IN = '/build/root/src'\n"
    assert os.stat(cached).st_nlink == 1


def test_an_environment_without_site_packages_is_refused(tmp_path: Path) -> None:
    (tmp_path / "venv" / "lib").mkdir(parents=True)
    with pytest.raises(LayerError, match="expected one lib/python3.\\*/site-packages"):
        normalise(tmp_path / "venv", tmp_path / "out", Scrubber(["/x"]))


def test_tree_diff_names_distributions_and_files(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for root, version, text in ((old, "1.0", "a"), (new, "1.1", "b")):
        (root / f"pkg-{version}.dist-info").mkdir(parents=True)
        (root / "pkg.py").write_text(text)
    (new / "extra.py").write_text("")
    difference = diff_trees(old, new)
    assert difference.added_dists == ("pkg 1.1",)
    assert difference.removed_dists == ("pkg 1.0",)
    assert [(c.path, c.change) for c in difference.files] == [
        ("extra.py", "added"),
        ("pkg-1.0.dist-info", "removed"),
        ("pkg-1.1.dist-info", "added"),
        ("pkg.py", "changed"),
    ]


def test_files_known_clean_are_not_read_again(venv: Path, tmp_path: Path) -> None:
    """A sealed file hardlinked from the cache and listed as known keeps its RECORD hash
    without being read (here it would have been scrubbed, had it been read)."""
    init = venv / "lib" / "python3.12" / "site-packages" / "pkg" / "__init__.py"
    os.link(init, tmp_path / "cache-link")
    os.utime(init, ns=(SEALED_MTIME_NS, SEALED_MTIME_NS))
    info = os.stat(init)
    known = {(info.st_dev, info.st_ino, info.st_size): "sha256=known"}
    report = normalise(venv, tmp_path / "layer", Scrubber(["/build/root"]), known=known)
    assert report.known == 1
    record = (tmp_path / "layer/lib/python3.12/site-packages/pkg-1.0.dist-info/RECORD").read_text()
    assert f"pkg/__init__.py,sha256=known,{info.st_size}" in record
    assert report.scrub.found == {}


def test_files_read_and_found_clean_are_offered_for_remembering(venv: Path, tmp_path: Path) -> None:
    tool = venv / "lib" / "python3.12" / "site-packages" / "pkg" / "tool"
    os.link(tool, tmp_path / "cache-link")
    report = normalise(venv, tmp_path / "layer", Scrubber(["/build/root"]))
    info = os.stat(tmp_path / "cache-link")
    assert report.clean_links == [
        (info.st_dev, info.st_ino, info.st_size, record_hash(b"#!/bin/sh" + bytes([10])))
    ]
