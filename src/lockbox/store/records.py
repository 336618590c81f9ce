"""Records lockbox keeps beside the database, signed with the store's own key.

Some answers are kept in files under ``STORE/.lockbox`` rather than in the database, to be
read back without it: the shortcut records of repeated commands (:mod:`lockbox.cli.shortcut`),
the names an ELF file needs (:mod:`lockbox.native.hostlibs`), the record of an entry's image layer
(:mod:`lockbox.image.cache`). lockbox acts on what they say — runs the program a record names,
leaves a library out of an entry's inputs, puts a blob into an image — so a record must be
one lockbox wrote, for that place, in that store.

Each store has a secret key, ``STORE/.lockbox/key``: 32 random bytes, readable by its owner
only, made once (atomically: written aside, then linked into place, so a reader sees all
of it or none). Every record ends with a line ``hmac-sha256 <hex>``: the HMAC-SHA256 with
that key of the record's place (its path under ``.lockbox``) and its exact bytes. A record
whose line is missing or wrong — edited, cut short, appended to, moved to another name or
copied from another store — is not used: lockbox works the answer out again and writes a
new record over it.

This guards against whoever can write under ``.lockbox`` but cannot read the key: what
runs with the store owner's rights can read it, and is trusted as the owner is.

This module is imported by the shortcut before anything else of lockbox, so it uses only
``os``, ``hmac``, ``hashlib`` and the names of :mod:`lockbox.store.layout`: its atomic write (:func:`write`) and its walk
(:func:`tree_seal`) are its own, not :mod:`lockbox.fs`'s, which imports much more.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from lockbox.store.layout import KEY

_KEY_BYTES = 32
_TAG = b"hmac-sha256 "


def read_key(meta: str) -> bytes | None:
    """The key of the store whose working directory is ``meta``, or None when it has none
    (or only something that is not one: a link, a file of another size), or when another
    user could have put it there: the key and ``meta`` must be the caller's, and no one
    else may write ``meta`` or read the key (a record signed with a planted key would be
    trusted by the commands that answer without opening the store)."""
    try:
        directory = os.lstat(meta)
        fd = os.open(os.path.join(meta, KEY), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    uid = os.geteuid()
    try:
        info = os.fstat(fd)
        if info.st_size != _KEY_BYTES or info.st_mode & 61440 != 32768:
            return None
        if (
            info.st_uid != uid
            or info.st_mode & 0o077
            or directory.st_uid != uid
            or directory.st_mode & 0o022
        ):
            return None
        key = os.read(fd, _KEY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return key if len(key) == _KEY_BYTES else None


def store_key(meta: str) -> bytes | None:
    """The key of the store whose working directory is ``meta``, made now if it has none
    yet; None only when it can be neither read nor made (records are then not written)."""
    key = read_key(meta)
    if key is not None:
        return key
    path = os.path.join(meta, KEY)
    aside = f"{path}.{os.getpid()}.{os.urandom(6).hex()}"
    try:
        fd = os.open(
            aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return None
    try:
        try:
            os.write(fd, os.urandom(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.lexists(path):  # damaged (a link, a short file): replaced, records lost
            os.replace(aside, path)
        else:
            # Not contextlib.suppress, here and below: the shortcut imports this module, and
            # contextlib costs it a millisecond.
            try:  # noqa: SIM105
                os.link(aside, path)  # fails if another process made it meanwhile
            except FileExistsError:
                pass
    except OSError:
        return None
    finally:
        try:  # noqa: SIM105
            os.unlink(aside)
        except OSError:
            pass
    return read_key(meta)


def _mac(key: bytes, place: str, body: bytes) -> bytes:
    message = place.encode("utf-8", "surrogateescape") + b"\0" + body
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode()


def sign(key: bytes, place: str, body: bytes) -> bytes:
    """``body`` (which ends with a new line) followed by its signature line for ``place``,
    the record's path under the store's working directory."""
    if not body.endswith(b"\n"):
        body += b"\n"
    return body + _TAG + _mac(key, place, body) + b"\n"


def verified(key: bytes | None, place: str, data: bytes) -> bytes | None:
    """The body of the record ``data`` kept at ``place``, if it carries its signature with
    ``key``; otherwise None."""
    if key is None or not data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    body, line = data[:cut], data[cut:-1]
    if not line.startswith(_TAG):
        return None
    if not hmac.compare_digest(line[len(_TAG) :], _mac(key, place, body)):
        return None
    return body


def signed(data: bytes) -> bool:
    """Whether ``data`` holds a signature line at all (a record that has one but does not
    verify was changed or made elsewhere; one without may predate signing)."""
    return data.startswith(_TAG) or b"\n" + _TAG in data


def read(meta: str, place: str) -> tuple[bytes | None, bool]:
    """The verified body of the record at ``place`` under ``meta``, or None; and whether a
    record was there that is not to be trusted (removed then: it is rewritten anyway)."""
    path = os.path.join(meta, place)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None, os.path.islink(path) and _unlink(path)
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read(1 << 24)
    except OSError:
        return None, False
    body = verified(read_key(meta), place, data)
    if body is not None:
        return body, False
    _unlink(path)
    return None, signed(data)


def write(meta: str, place: str, body: bytes) -> bool:
    """Write the record ``body`` at ``place`` under ``meta``, signed, atomically (aside,
    then renamed over what was there). False when it could not be written: a record is
    only ever a cache."""
    path = os.path.join(meta, place)
    temporary = f"{path}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        key = store_key(meta)
        if key is None:
            return False
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        with os.fdopen(fd, "wb") as file:
            file.write(sign(key, place, body))
        os.replace(temporary, path)
    except OSError:
        _unlink(temporary)
        return False
    return True


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def tree_seal(top: str) -> str:
    """What stands for the sealed tree ``top`` (a store entry) without reading its bytes:
    the SHA-256 of every path's name under it, inode, size, mtime and mode (the top's own
    included), in name order. A file written in place changes its mtime (and perhaps its
    size), one replaced its inode, one added or removed the list, one made writable its
    mode. It costs one ``lstat`` per path: about 0.3 s for 30 000 files, a quarter of
    re-hashing them.

    ctime is left out: linking an entry's files into another (an application hardlinks
    its dependency layer) changes it. So a file rewritten with its size kept and its mtime
    and mode put back (1 s and read-only, as every sealed file has) keeps its seal; only
    re-hashing the entry, as ``lockbox store verify`` does, notices that."""
    info = os.lstat(top)
    lines = [f"\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_mode:o}\n"]
    if info.st_mode & 0o170000 == 0o040000:
        _seal_lines(top, "", lines)
    lines.sort()
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _seal_lines(directory: str, prefix: str, lines: list[str]) -> None:
    lstat = os.lstat
    for name in os.listdir(directory):
        path = f"{directory}/{name}"
        info = lstat(path)
        lines.append(
            f"{prefix}{name}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_mode:o}\n"
        )
        if info.st_mode & 0o170000 == 0o040000:
            _seal_lines(path, f"{prefix}{name}/", lines)
