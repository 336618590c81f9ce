"""Reading what the ELF files of a built tree need from the dynamic loader.

This is the reading half of lockbox's native-library step (the "autoPatchelf" of the
design): after a build, that step reads every ELF file of the output with
:func:`scan_tree` to learn, per file, its loader (``PT_INTERP``), the libraries it names
(``DT_NEEDED``), where it already looks for them (``DT_RUNPATH``/``DT_RPATH``) and the name
it is known by (``DT_SONAME``). Finding those libraries is :mod:`lockbox.native.resolve`;
rewriting the files to point at them is :mod:`lockbox.native.relink`. This module only reads: it
never runs a binary and never writes a byte.

Only dynamically linked objects matter to that step, so everything else — non-ELF files,
static executables, relocatable objects, core dumps, corrupt or truncated files — reads as
``None`` rather than as an error: a wheel can ship any of these, and none of them is
something the loader will ever resolve libraries for.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment, DynamicTag
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from lockbox import fs

_MAGIC = b"\x7fELF"

# ``e_type`` as pyelftools names it -> ``ElfInfo.kind``. ET_REL (objects) and ET_CORE
# (core dumps) are absent on purpose: the loader never maps them.
_KINDS = {"ET_EXEC": "executable", "ET_DYN": "shared"}

# DF_1_PIE in DT_FLAGS_1 marks a position-independent executable; without PT_INTERP it
# is a static-pie one, which has a PT_DYNAMIC only for its self-relocation.
_DF_1_PIE = 0x08000000

# What pyelftools raises on malformed input besides its own ELFError: struct and
# construct errors surface as ``struct.error``; reads past the end of the file, offsets
# that point nowhere, and strings that are not UTF-8 surface as these built-in errors
# (``UnicodeDecodeError`` is a ``ValueError``); a missing string table trips an
# ``assert`` or an attribute lookup on ``None``. All of them mean "not a usable dynamic
# object", never a bug of ours worth crashing a build over.
_MALFORMED = (
    ELFError,
    struct.error,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    AssertionError,
    OverflowError,
)


@dataclass(frozen=True)
class ElfInfo:
    """What one dynamically linked ELF file asks of the dynamic loader."""

    path: Path
    """The file read, as it was given."""
    elf_class: int
    """32 or 64."""
    machine: str
    """``e_machine`` as pyelftools names it, e.g. ``"EM_X86_64"`` (its number, as text, if
    pyelftools has no name for it)."""
    kind: str
    """``"executable"`` for ET_EXEC, ``"shared"`` for ET_DYN — shared libraries and
    position-independent executables alike, since both are loaded the same way."""
    interpreter: str | None
    """The loader named by ``PT_INTERP``, e.g. ``"/lib64/ld-linux-x86-64.so.2"``; ``None``
    for shared libraries, which are loaded by someone else's loader."""
    needed: tuple[str, ...]
    """``DT_NEEDED`` entries, in file order (the order the loader searches them in)."""
    runpath: tuple[str, ...]
    """``DT_RUNPATH`` split on ``":"``, empty entries dropped."""
    rpath: tuple[str, ...]
    """``DT_RPATH`` split on ``":"``, empty entries dropped."""
    soname: str | None
    """``DT_SONAME``, if the file names itself."""


def read_elf(path: Path) -> ElfInfo | None:
    """What the dynamically linked ELF object at ``path`` needs; ``None`` for anything else.

    ``None`` covers non-ELF files, static executables (no ``PT_DYNAMIC``, or static-pie),
    relocatable objects, core files, separate debug-info files and truncated or corrupt
    ELF files. Errors opening or
    reading the file itself (permissions, a directory) are raised: they are not a fact
    about the file's content.
    """
    with open(path, "rb") as stream:
        # Most files of a built tree are not ELF; four bytes decide that without paying
        # for pyelftools' header parsing.
        if stream.read(4) != _MAGIC:
            return None
        stream.seek(0)
        try:
            return _read_dynamic(path, stream)
        except _MALFORMED:
            return None


def _read_dynamic(path: Path, stream: BinaryIO) -> ElfInfo | None:
    """The body of :func:`read_elf`, on an open stream known to start with the ELF magic.

    pyelftools reads lazily, so everything is extracted here while ``stream`` is open.
    """
    elffile = ELFFile(stream)
    kind = _KINDS.get(elffile["e_type"])
    if kind is None:
        return None
    interp_segment: InterpSegment | None = None
    dynamic: DynamicSegment | None = None
    # Program headers rather than sections: they are what the loader reads, and stripped
    # or size-optimised files may carry no section headers at all.
    for segment in elffile.iter_segments():
        if segment["p_type"] == "PT_INTERP" and isinstance(segment, InterpSegment):
            interp_segment = segment
        elif segment["p_type"] == "PT_DYNAMIC" and isinstance(segment, DynamicSegment):
            dynamic = segment
    # A PT_DYNAMIC with no bytes in the file is what separate debug-info files
    # (``objcopy --only-keep-debug``) keep of their program's headers; a loadable object
    # always has at least the DT_NULL entry there.
    if dynamic is None or dynamic["p_filesz"] == 0:
        return None
    interpreter = interp_segment.get_interp_name() if interp_segment is not None else None
    needed: list[str] = []
    runpath: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    soname: str | None = None
    flags_1 = 0
    for tag in dynamic.iter_tags():
        name = tag.entry.d_tag
        if name == "DT_NEEDED":
            needed.append(_tag_string(tag))
        elif name == "DT_RUNPATH":
            runpath = _split_path(_tag_string(tag))
        elif name == "DT_RPATH":
            rpath = _split_path(_tag_string(tag))
        elif name == "DT_SONAME":
            soname = _tag_string(tag)
        elif name == "DT_FLAGS_1":
            flags_1 = tag.entry.d_val
    if interpreter is None and flags_1 & _DF_1_PIE:
        # A static-pie executable: it relocates itself and loads no library, so it has
        # nothing to resolve — the same answer as for a classic static executable.
        return None
    return ElfInfo(
        path=path,
        elf_class=elffile.elfclass,
        machine=str(elffile["e_machine"]),
        kind=kind,
        interpreter=interpreter,
        needed=tuple(needed),
        runpath=runpath,
        rpath=rpath,
        soname=soname,
    )


def _tag_string(tag: DynamicTag) -> str:
    """The string a ``DT_NEEDED``, ``DT_RUNPATH``, ``DT_RPATH`` or ``DT_SONAME`` entry points
    to: pyelftools sets it as an attribute named after the tag (``needed``, ``soname``, …)."""
    return str(getattr(tag, tag.entry.d_tag.removeprefix("DT_").lower()))


def _split_path(value: str) -> tuple[str, ...]:
    """A colon-separated search path as its entries; empty entries mean nothing to us."""
    return tuple(entry for entry in value.split(":") if entry)


@functools.cache
def host_machine() -> tuple[int, str]:
    """``(elf_class, machine)`` of the running interpreter's own ELF file.

    The interpreter is what will load the extension modules of the output, so its
    architecture, not ``platform.machine()``, decides which ELF files are foreign (a
    32-bit Python on a 64-bit kernel loads only 32-bit modules). Only the header is read,
    so this works for a statically linked interpreter too.
    """
    executable = Path(sys.executable).resolve() if sys.executable else Path("/proc/self/exe")
    with open(executable, "rb") as stream:
        elffile = ELFFile(stream)
        return elffile.elfclass, str(elffile["e_machine"])


def scan_tree(root: Path) -> tuple[list[ElfInfo], list[Path]]:
    """Every dynamically linked ELF file under ``root``, and those skipped as foreign.

    Only regular files are read and symlinks are never followed: a symlink to a library
    (``libfoo.so -> libfoo.so.1``) is the same file as its target, which is reported on
    its own if it lies in the tree. The first list holds host-architecture files, the
    second the paths of dynamically linked ELF files whose class or machine differs from
    :func:`host_machine` (a wheel may ship binaries for other platforms; the loader would
    never load them here, so there is nothing to resolve). Both are sorted by path.
    """
    host = host_machine()
    infos: list[ElfInfo] = []
    foreign: list[Path] = []
    for path in _regular_files(root):
        info = read_elf(path)
        if info is None:
            continue
        if (info.elf_class, info.machine) == host:
            infos.append(info)
        else:
            foreign.append(path)
    infos.sort(key=lambda info: str(info.path))
    foreign.sort(key=str)
    return infos, foreign


def _regular_files(root: Path) -> list[Path]:
    """The regular files under ``root``, found without following any symlink."""
    return [
        Path(path)
        for directory, _, names in fs.walk(root)
        for path in (os.path.join(directory, name) for name in names)
        if stat.S_ISREG(os.lstat(path).st_mode)
    ]
