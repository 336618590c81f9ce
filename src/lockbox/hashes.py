"""SHA-256 digests and their three spellings: SRI, Nix base-32 and hex.

lockbox prints SRI (``sha256-<base64>``), the form Nix prints today, and accepts all three
when reading a recipe or a command line, so a hash copied from ``nix-hash`` works as is.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from lockbox.errors import HashFormatError

SHA256_SIZE = 32

# Nix's base-32 alphabet omits e, o, t and u to avoid words by accident.
NIX_BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_NIX_BASE32_VALUES = {char: value for value, char in enumerate(NIX_BASE32_ALPHABET)}


def record_hash(data: bytes) -> str:
    """The hash of a file as a wheel's ``RECORD`` writes it: ``sha256=<urlsafe base64>``,
    without padding."""
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def nix_base32_encode(data: bytes) -> str:
    """Encode bytes the way Nix does: the bytes as one little-endian number, 5 bits per
    character, most significant character first."""
    length = (len(data) * 8 - 1) // 5 + 1
    number = int.from_bytes(data, "little")
    return "".join(
        NIX_BASE32_ALPHABET[(number >> (5 * position)) & 0x1F]
        for position in range(length - 1, -1, -1)
    )


def nix_base32_decode(text: str, size: int) -> bytes:
    """Decode Nix base-32 text that encodes exactly ``size`` bytes."""
    if len(text) != (size * 8 - 1) // 5 + 1:
        raise ValueError(f"expected {(size * 8 - 1) // 5 + 1} characters, got {len(text)}")
    number = 0
    for char in text:
        try:
            number = (number << 5) | _NIX_BASE32_VALUES[char]
        except KeyError:
            raise ValueError(f"{char!r} is not a Nix base-32 character") from None
    if number >> (size * 8):
        raise ValueError("the encoded number does not fit in a SHA-256 digest")
    return number.to_bytes(size, "little")


@dataclass(frozen=True, order=True)
class Sha256:
    """A SHA-256 digest."""

    digest: bytes
    """The 32 raw bytes."""

    def __post_init__(self) -> None:
        if len(self.digest) != SHA256_SIZE:
            raise ValueError(f"a SHA-256 digest has {SHA256_SIZE} bytes, not {len(self.digest)}")

    @property
    def sri(self) -> str:
        return "sha256-" + base64.b64encode(self.digest).decode("ascii")

    @property
    def base32(self) -> str:
        return nix_base32_encode(self.digest)

    @property
    def hex(self) -> str:
        return self.digest.hex()

    def __str__(self) -> str:
        return self.sri

    @classmethod
    def parse(cls, text: str) -> Sha256:
        """Read a SHA-256 hash in SRI (``sha256-…``), Nix base-32 (52 characters, optionally
        ``sha256:``-prefixed) or hex (64 characters) form."""
        value = text.strip()
        try:
            if value.startswith("sha256-"):
                encoded = value.removeprefix("sha256-")
                if len(encoded) != 44:
                    raise ValueError("an SRI SHA-256 has 44 base64 characters after 'sha256-'")
                return cls(base64.b64decode(encoded, validate=True))
            value = value.removeprefix("sha256:")
            if len(value) == 2 * SHA256_SIZE:
                return cls(bytes.fromhex(value))
            if len(value) == (SHA256_SIZE * 8 - 1) // 5 + 1:
                return cls(nix_base32_decode(value, SHA256_SIZE))
        except (ValueError, binascii.Error) as error:
            raise HashFormatError(f"{text!r} is not a valid SHA-256 hash: {error}") from None
        raise HashFormatError(
            f"{text!r} is not a SHA-256 hash: expected SRI (sha256-<44 base64 characters>), "
            "Nix base-32 (52 characters) or hex (64 characters)"
        )
