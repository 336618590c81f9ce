"""Recomputing the GNU build-id of an ELF file after its bytes were changed.

The linker stores in ``.note.gnu.build-id`` a hash of the file it wrote. When scrubbing
overwrites build paths in that file, the build-id still hashes the old bytes — which held
those paths — so two builds that scrub to the same bytes would differ in their build-id
alone. The new build-id is the SHA-1 (the linker's default) of the scrubbed file with the
build-id zeroed: derived from the final content only, like the original.
"""

from __future__ import annotations

import hashlib
import struct

_NOTE_SECTION = 7  # SHT_NOTE
_NT_GNU_BUILD_ID = 3


def refresh_build_id(data: bytes) -> bytes:
    """``data`` with its GNU build-id recomputed; unchanged if it is not an ELF file with one."""
    location = _build_id_location(data)
    if location is None:
        return data
    offset, size = location
    zeroed = data[:offset] + bytes(size) + data[offset + size :]
    digest = hashlib.sha1(zeroed).digest()
    while len(digest) < size:
        digest += hashlib.sha1(digest).digest()
    return data[:offset] + digest[:size] + data[offset + size :]


def _build_id_location(data: bytes) -> tuple[int, int] | None:
    """Offset and size of the build-id bytes in an ELF file's note sections, if any."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    try:
        if wide:
            (shoff,) = struct.unpack_from(order + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x3A)
        else:
            (shoff,) = struct.unpack_from(order + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x2E)
        for index in range(shnum):
            header = shoff + index * shentsize
            if wide:
                (sh_type,) = struct.unpack_from(order + "I", data, header + 4)
                sh_offset, sh_size = struct.unpack_from(order + "QQ", data, header + 0x18)
            else:
                (sh_type,) = struct.unpack_from(order + "I", data, header + 4)
                sh_offset, sh_size = struct.unpack_from(order + "II", data, header + 0x10)
            if sh_type != _NOTE_SECTION:
                continue
            found = _find_in_notes(data, order, sh_offset, sh_offset + sh_size)
            if found is not None:
                return found
    except struct.error:
        return None
    return None


def _find_in_notes(data: bytes, order: str, start: int, end: int) -> tuple[int, int] | None:
    position = start
    while position + 12 <= end:
        namesz, descsz, note_type = struct.unpack_from(order + "III", data, position)
        name_start = position + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        if desc_start + descsz > end:
            return None
        if note_type == _NT_GNU_BUILD_ID and data[name_start : name_start + namesz] == b"GNU\0":
            return desc_start, descsz
        position = desc_start + ((descsz + 3) & ~3)
    return None
