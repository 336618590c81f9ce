"""SHA-256 digests in their three spellings, and Nix's base-32."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockbox.errors import HashFormatError
from lockbox.hashes import (
    NIX_BASE32_ALPHABET,
    Sha256,
    nix_base32_decode,
    nix_base32_encode,
)

EMPTY = hashlib.sha256(b"").digest()
# `nix-hash --type sha256 --to-base32 e3b0c442…b855` (the SHA-256 of no bytes).
EMPTY_BASE32 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
EMPTY_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SRI = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

digests = st.binary(min_size=32, max_size=32)


def test_nix_base32_of_the_empty_string_hash_matches_nix() -> None:
    assert nix_base32_encode(EMPTY) == EMPTY_BASE32
    assert nix_base32_decode(EMPTY_BASE32, 32) == EMPTY


def test_nix_base32_encodes_the_bytes_as_one_little_endian_number() -> None:
    assert nix_base32_encode(b"\x00") == "00"
    assert nix_base32_encode(b"\x01") == "01"
    assert nix_base32_encode(b"\x1f") == "0z"
    assert nix_base32_encode(b"\x20") == "10"
    assert nix_base32_encode(b"\x00\x01") == "0080"


def test_nix_base32_alphabet_leaves_out_e_o_t_u() -> None:
    assert len(NIX_BASE32_ALPHABET) == 32
    assert not set("eotu") & set(NIX_BASE32_ALPHABET)


def test_each_spelling_of_the_empty_string_hash() -> None:
    digest = Sha256(EMPTY)
    assert digest.hex == EMPTY_HEX
    assert digest.base32 == EMPTY_BASE32
    assert digest.sri == EMPTY_SRI
    assert str(digest) == EMPTY_SRI


@pytest.mark.parametrize(
    "text",
    [
        EMPTY_SRI,
        EMPTY_HEX,
        EMPTY_HEX.upper(),
        EMPTY_BASE32,
        f"sha256:{EMPTY_BASE32}",
        f"sha256:{EMPTY_HEX}",
        f"  {EMPTY_SRI}\n",
    ],
)
def test_parse_reads_every_spelling(text: str) -> None:
    assert Sha256.parse(text) == Sha256(EMPTY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256-",
        "sha256-" + "A" * 43,  # one character short
        "sha256-" + "!" * 44,  # not base64
        "sha256-" + base64.b64encode(bytes(31)).decode() + "AAAA",  # decodes to 33 bytes
        "sha512-" + base64.b64encode(bytes(64)).decode(),
        EMPTY_HEX[:-1],
        EMPTY_HEX[:-1] + "g",
        EMPTY_BASE32[:-1],
        EMPTY_BASE32[:-1] + "e",  # 'e' is not in Nix's alphabet
        "z" * 52,  # more than 256 bits
        "md5:" + EMPTY_HEX,
    ],
)
def test_parse_rejects_malformed_hashes(text: str) -> None:
    with pytest.raises(HashFormatError):
        Sha256.parse(text)


def test_parse_error_says_which_forms_are_accepted() -> None:
    with pytest.raises(HashFormatError, match="SRI.*base-32.*hex"):
        Sha256.parse("nonsense")


def test_a_digest_must_have_32_bytes() -> None:
    with pytest.raises(ValueError):
        Sha256(bytes(31))


@given(digests)
def test_every_spelling_round_trips(digest: bytes) -> None:
    value = Sha256(digest)
    for text in (value.sri, value.base32, value.hex, f"sha256:{value.base32}"):
        assert Sha256.parse(text) == value
    assert value.sri == "sha256-" + base64.b64encode(digest).decode()
    assert len(value.base32) == 52


@given(st.binary(min_size=1, max_size=64))
def test_nix_base32_round_trips_any_length(data: bytes) -> None:
    assert nix_base32_decode(nix_base32_encode(data), len(data)) == data
