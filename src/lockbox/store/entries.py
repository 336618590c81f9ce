"""What a store entry is, and how it is named: its record, its kinds, its digests.

An entry's directory in the store's root is ``<digest>-<name>``. A content-addressed entry's
digest comes from its kind, name and NAR hash; an input-addressed entry's from its kind,
name and inputs, so that it is known before the entry is built and an unchanged build is a
lookup. Either is the first 160 bits of a SHA-256, in Nix base-32, as Nix store paths are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lockbox.errors import StoreError
from lockbox.hashes import Sha256, nix_base32_encode

KINDS = ("source", "toolchain", "python", "deps", "bytecode", "libraries", "app")
"""What an entry can be: an imported tree, a build root of Debian packages, an interpreter,
a dependency layer, the compiled bytecode of a dependency layer, the host libraries an
application bundles, an app."""

_DIGEST_BYTES = 20  # 32 base-32 characters, as Nix store path digests
_PATH_NAME = re.compile(r"[0123456789abcdfghijklmnpqrsvwxyz]{32}-(?!\.)[A-Za-z0-9+\-._?=]{1,200}")
"""The name of an entry in the store's root: ``<digest>-<name>``, never a path."""


@dataclass(frozen=True)
class Entry:
    """A registered store entry."""

    path: Path
    """Absolute path of the entry directory (or file)."""
    kind: str
    """One of :data:`KINDS`."""
    name: str
    """Human-readable name; the directory is ``<digest>-<name>``."""
    nar_hash: Sha256
    """SHA-256 of the entry's NAR serialisation."""
    nar_size: int
    """Size of the entry's NAR serialisation in bytes."""
    addressing: str
    """``content`` (digest from the NAR hash) or ``inputs`` (digest from the inputs)."""
    inputs: Mapping[str, object] = field(default_factory=dict)
    """What the entry was made from (lock hash, interpreter, recipe, …)."""
    references: tuple[str, ...] = ()
    """Path names of the other entries this one needs at run time."""
    created: str = ""
    """When the entry was registered (ISO 8601, UTC)."""

    @property
    def path_name(self) -> str:
        return self.path.name


def is_path_name(text: str) -> bool:
    """Whether ``text`` is a store entry's directory name (``<digest>-<name>``)."""
    return _PATH_NAME.fullmatch(text) is not None


def check_name(name: str) -> str:
    """Refuse names that would not make a single, portable directory name."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=")
    if not name or name.startswith(".") or not set(name) <= allowed or len(name) > 200:
        raise StoreError(
            f"invalid entry name {name!r}: use letters, digits and + - . _ ? =, "
            "not starting with a dot, at most 200 characters"
        )
    return name


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no insignificant white space: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(fingerprint: str) -> str:
    return nix_base32_encode(hashlib.sha256(fingerprint.encode()).digest()[:_DIGEST_BYTES])


def content_digest(kind: str, name: str, nar: Sha256) -> str:
    """Digest of a content-addressed entry: it depends only on kind, name and NAR hash."""
    return _digest(f"lockbox-store:1:content:{kind}:{name}:{nar.hex}")


def inputs_digest(kind: str, name: str, inputs: Mapping[str, object]) -> str:
    """Digest of an input-addressed entry: known before it is built, so a build with
    unchanged inputs is a lookup."""
    return _digest(f"lockbox-store:1:inputs:{kind}:{name}:{canonical_json(inputs)}")
