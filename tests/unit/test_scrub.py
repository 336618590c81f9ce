"""Finding and mangling build paths in bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lockbox.scrub import Scrubber, mangle


def test_paths_under_a_root_are_found_with_their_rest_and_mangled_in_place() -> None:
    scrubber = Scrubber(["/tmp/lockbox-build", "/root/.pyenv/versions/3.13.0/"])
    data = (
        b"\x00/tmp/lockbox-build/uv-cache/sdists/a/src\x00"
        b"-I/root/.pyenv/versions/3.13.0/include/python3.13 /tmp/lockbox-build\n"
    )
    scrubbed, found = scrubber.scrub(data)
    assert len(scrubbed) == len(data)
    assert found == {
        b"/tmp/lockbox-build/uv-cache/sdists/a/src": 1,
        b"/root/.pyenv/versions/3.13.0/include/python3.13": 1,
        b"/tmp/lockbox-build": 1,
    }
    lengths = [len(path) for path in found]
    assert scrubbed == (
        b"\x00"
        + mangle(lengths[0])
        + b"\x00-I"
        + mangle(lengths[1])
        + b" "
        + mangle(lengths[2])
        + b"\n"
    )


def test_a_root_is_a_whole_path_component() -> None:
    scrubber = Scrubber(["/opt/py"])
    data = b"/opt/python/lib /opt/py-extra /opt/py:/opt/py/lib"
    scrubbed, found = scrubber.scrub(data)
    assert found == {b"/opt/py": 1, b"/opt/py/lib": 1}
    assert scrubbed.startswith(b"/opt/python/lib /opt/py-extra ")


def test_flags_keep_their_structure() -> None:
    scrubbed, found = Scrubber(["/tmp/b"]).scrub(b"-ffile-prefix-map=/tmp/b=/lockbox/build")
    assert found == {b"/tmp/b": 1}
    assert scrubbed == b"-ffile-prefix-map=" + mangle(6) + b"=/lockbox/build"


def test_mangled_text_depends_only_on_length() -> None:
    assert mangle(5) == b"/lock"
    assert mangle(20) == b"/lockbox-scrubbed---"
    first = Scrubber(["/tmp/aaaa"]).scrub(b"x /tmp/aaaa/src/x.c y")[0]
    second = Scrubber(["/tmp/bbbb"]).scrub(b"x /tmp/bbbb/src/z.c y")[0]
    assert first == second


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_scrubbing_keeps_length_and_removes_every_root(prefix: bytes, suffix: bytes) -> None:
    root = b"/srv/build-root"
    data = prefix + root + b"/x/y.c" + suffix + root
    scrubbed, found = Scrubber([root]).scrub(data)
    assert len(scrubbed) == len(data)
    assert found
    assert root not in scrubbed or root in (prefix + suffix).replace(root, b"")
