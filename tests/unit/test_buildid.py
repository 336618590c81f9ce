"""Recomputing GNU build-ids after scrubbing, on objects linked by the real toolchain."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lockbox.native.buildid import _build_id_location, refresh_build_id
from lockbox.scrub import Scrubber


def link(tmp_path: Path, directory: str) -> bytes:
    source = tmp_path / "lib.c"
    source.write_text(f'const char *where(void) {{ return "{directory}/src"; }}\n')
    output = tmp_path / "lib.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,--build-id=sha1", "-o", output, source], check=True
    )
    return output.read_bytes()


def build_id(data: bytes) -> bytes:
    location = _build_id_location(data)
    assert location is not None
    offset, size = location
    return data[offset : offset + size]


def test_builds_that_scrub_to_the_same_bytes_get_the_same_build_id(tmp_path: Path) -> None:
    first = link(tmp_path, "/build/aaaaaaaa")
    second = link(tmp_path, "/build/bbbbbbbb")
    assert build_id(first) != build_id(second)
    scrubber = Scrubber(["/build/aaaaaaaa", "/build/bbbbbbbb"])
    first_scrubbed = refresh_build_id(scrubber.scrub(first)[0])
    second_scrubbed = refresh_build_id(scrubber.scrub(second)[0])
    assert first_scrubbed == second_scrubbed
    assert build_id(first_scrubbed) != build_id(scrubber.scrub(first)[0])
    assert len(build_id(first_scrubbed)) == 20


def test_readelf_reads_the_new_build_id(tmp_path: Path) -> None:
    refreshed = refresh_build_id(link(tmp_path, "/build/x"))
    (tmp_path / "new.so").write_bytes(refreshed)
    notes = subprocess.run(
        ["readelf", "-n", tmp_path / "new.so"], capture_output=True, text=True, check=True
    ).stdout
    assert f"Build ID: {build_id(refreshed).hex()}" in notes


@pytest.mark.parametrize("data", [b"", b"plain text", b"\x7fELF" + bytes(100)])
def test_other_files_are_left_alone(data: bytes) -> None:
    assert refresh_build_id(data) == data
