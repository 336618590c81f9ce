"""lockbox's identity among the inputs of what it builds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lockbox


def test_the_identity_is_the_version_and_a_digest_of_the_source() -> None:
    identity = lockbox.build_identity()
    version, digest = identity.split("+")
    assert version == lockbox.__version__
    package = Path(lockbox.__file__).parent
    expected = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        expected.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    assert digest == expected.hexdigest()[:16]
    assert lockbox.build_identity() is identity  # computed once per process
