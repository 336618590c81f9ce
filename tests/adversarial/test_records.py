"""Records and entries are not trusted: an edited record is not acted upon, a changed entry
is not used.

The shortcut records under ``STORE/.lockbox/shortcuts/`` name the program ``lockbox run``
starts; the records under ``needed/`` and ``derived/`` say what an entry's inputs are and
which blob is an entry's image layer. Each is signed with the store's key. A store entry
changed after registration is noticed by the status of its files (its seal) and confirmed
by its NAR hash before a build or run uses it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockbox.inputs.interpreters import find_interpreter
from tests.packages import serve, write_wheel

PYTHON = find_interpreter("3.12", None).executable

PROBE = "import rec_dep, sys; print(rec_dep.VALUE, sys.prefix)"


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, shortcut included (``python -m lockbox``)."""
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


@dataclass(frozen=True)
class Built:
    root: Path
    project: Path
    store: Path
    app: Path

    @property
    def shortcuts(self) -> Path:
        return self.store / ".lockbox" / "shortcuts"

    @property
    def deps(self) -> Path:
        found = [
            path
            for path in self.store.iterdir()
            if path.name.endswith(f"-{self.project.name}-deps")
        ]
        assert len(found) == 1, found
        return found[0]


def settle(*trees: Path) -> None:
    """Wait until nothing in ``trees`` changed in the last two seconds: a run records its
    lookup only then."""
    newest = max(
        max(info.st_mtime, info.st_ctime)
        for tree in trees
        for path in [tree, *tree.rglob("*")]
        for info in (path.lstat(),)
    )
    time.sleep(max(0.0, newest + 2.1 - time.time()))


def write_project(root: Path, name: str, url: str) -> Path:
    project = root / name
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "{name}"
        version = "1.0.0"
        requires-python = ">=3.12"
        dependencies = ["rec-dep"]

        [tool.uv]
        find-links = ["{url}"]

        [tool.lockbox]
        python = "3.12"
        """)
    )
    subprocess.run(
        ["uv", "lock", "--python", str(PYTHON)],
        cwd=project,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    return project


def build(project: Path, store: Path) -> Path:
    """Pin the layer's hash, build, and build again once settled (a lookup, recorded)."""
    pinned = lockbox("lock-hash", project, store=store)
    assert pinned.returncode == 0, pinned.stderr
    first = lockbox("build", project, store=store)
    assert first.returncode == 0, first.stderr
    settle(project)
    again = lockbox("build", project, store=store)
    assert again.returncode == 0, again.stderr
    return Path(again.stdout.strip())


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("records")
    wheels = root / "index"
    wheels.mkdir()
    write_wheel(wheels, "rec_dep", "1.0", {"rec_dep/__init__.py": "VALUE = 'dep'\n"})
    with serve(wheels) as url:
        yield root, url


@pytest.fixture(scope="module")
def shared(index: tuple[Path, str]) -> Path:
    """A store for the tests that attack only records: each builds its own project in it."""
    root, _ = index
    return root / "shared-store"


def make_built(index: tuple[Path, str], root: Path, store: Path, name: str = "rec") -> Built:
    """A small project with one dependency, built in ``store``, its lookup recorded."""
    _, url = index
    root.mkdir(parents=True, exist_ok=True)
    project = write_project(root, name, url)
    return Built(root, project, store, build(project, store))


@pytest.fixture
def built(
    index: tuple[Path, str], shared: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Built:
    """The project of this test, in the shared store."""
    name = "rec" + "".join(c for c in request.node.name if c.isalnum())[-40:].lower()
    return make_built(index, tmp_path, shared, name)


@pytest.fixture
def own(index: tuple[Path, str], tmp_path: Path) -> Built:
    """The project in a store of its own: for the tests that damage entries (the layer's
    files may be hardlinked from the store's uv cache, shared with other layers)."""
    return make_built(index, tmp_path, tmp_path / "store")


def run_probe(built: Built) -> subprocess.CompletedProcess[str]:
    return lockbox("run", built.project, "--", "python", "-c", PROBE, store=built.store)


def recorded_run(built: Built) -> Path:
    """Run the probe until its lookup is recorded; the record's path."""
    before = set(built.shortcuts.iterdir())
    result = run_probe(built)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dep {built.app}\n"
    (record,) = set(built.shortcuts.iterdir()) - before
    answered = run_probe(built)
    assert (answered.returncode, answered.stdout) == (0, result.stdout)
    return record


def decoy(tmp_path: Path) -> tuple[Path, Path]:
    """A directory that looks like an application whose ``python`` writes a marker."""
    marker = tmp_path / "decoy-ran"
    fake = tmp_path / "fake-app"
    (fake / "bin").mkdir(parents=True, exist_ok=True)
    script = fake / "bin" / "python"
    script.write_text(f"#!/bin/sh\necho pwned > {marker}\necho pwned\n")
    script.chmod(0o755)
    return fake, marker


def store_verify(store: Path) -> subprocess.CompletedProcess[str]:
    return lockbox("store", "verify", store=store)


# (1) an edited record never makes `run` start another program -----------------------------
def test_an_edited_shortcut_record_does_not_run_another_program(
    built: Built, tmp_path: Path
) -> None:
    record = recorded_run(built)
    text = record.read_text()
    fake, marker = decoy(tmp_path)
    inside = built.store / f"{'0' * 32}-{built.project.name}"  # looks like an entry
    for target in (fake, inside):
        if target == inside:
            shutil.copytree(fake, inside, symlinks=True)
        forged = text.replace(f"result {built.app}\n", f"result {target}\n")
        assert forged != text
        for variant in (forged, forged.rsplit("hmac-sha256 ", 1)[0]):
            record.write_text(variant)
            result = run_probe(built)
            assert not marker.exists()
            assert (result.returncode, result.stdout) == (0, f"dep {built.app}\n"), result.stderr
    assert store_verify(built.store).returncode == 0


# (2) a damaged, extended or foreign record is no record ----------------------------------
@pytest.mark.parametrize(
    "damages", [("append", "flip", "truncate"), ("other project", "other store")]
)
def test_a_damaged_or_foreign_record_is_ignored(
    built: Built, index: tuple[Path, str], tmp_path: Path, damages: tuple[str, ...]
) -> None:
    record = recorded_run(built)
    for damage in damages:
        damaged(built, index, tmp_path, record, damage)


def damaged(
    built: Built, index: tuple[Path, str], tmp_path: Path, record: Path, damage: str
) -> None:
    data = record.read_bytes()
    fake, marker = decoy(tmp_path)
    if damage == "append":
        record.write_bytes(data + f"result {fake}\nend\n".encode())
    elif damage == "flip":
        at = data.index(b"\nresult ") + len(b"\nresult ") + 3
        record.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    elif damage == "truncate":
        record.write_bytes(data[: data.index(b"\nend\n")])
    else:
        # A valid record of a run elsewhere — another project in this store, or this
        # project in another store — made to name this command: copied over this one.
        if damage == "other project":
            other = make_built(index, tmp_path / "elsewhere", built.store, built.project.name + "x")
        else:
            other = make_built(
                index, tmp_path / "faraway", tmp_path / "other-store", built.project.name
            )
        record.write_text(adapt(recorded_run(other).read_text(), other, built, fake))
    result = run_probe(built)
    assert not marker.exists()
    assert (result.returncode, result.stdout) == (0, f"dep {built.app}\n"), result.stderr
    if damage != "truncate":
        assert "does not carry the store's signature" in result.stderr
    # The record was removed; the store's own replaces it and answers again.
    assert not record.exists() or record.read_bytes() != data
    run_probe(built)
    again = run_probe(built)
    assert (again.returncode, again.stdout) == (0, f"dep {built.app}\n")
    assert "does not carry" not in again.stderr
    assert record.exists()


def adapt(text: str, other: Built, built: Built, result: Path) -> str:
    """The record ``text`` of ``other`` made to name ``built``'s command and to answer it
    with ``result``: every path and signature in it rewritten, its signature line kept."""
    from lockbox.cli.shortcut import signature
    from lockbox.store.records import tree_seal

    def adapted(line: str) -> str:
        kind, _, rest = line.partition(" ")
        path = rest.partition(" ")[2]
        if kind in ("in", "out"):
            return f"{kind} {signature(path)} {path}"
        if kind == "seal" and os.path.exists(path):
            return f"seal {tree_seal(path)} {path}"
        if kind == "result":
            return f"result {result}"
        return line

    for old, new in (
        (other.project, built.project),
        (other.store, built.store),
        (other.app.name, built.app.name),
        (other.deps.name, built.deps.name),
    ):
        text = text.replace(str(old), str(new))
    return "\n".join(map(adapted, text.splitlines())) + "\n"


# (3) a changed entry is not used ---------------------------------------------------------
def corrupt(path: Path, data: bytes, *, keep_mtime: bool) -> None:
    """Write ``data`` into the sealed file ``path`` in place, as someone with the store's
    rights could, and put its mode (and, with ``keep_mtime``, its mtime) back."""
    mode = path.stat().st_mode
    parent_mode = path.parent.stat().st_mode
    path.chmod(mode | 0o200)
    with open(path, "r+b") as file:
        file.write(data)
    path.chmod(mode)
    path.parent.chmod(parent_mode)
    if keep_mtime:
        os.utime(path, (1, 1))


@pytest.mark.parametrize("what", ["app", "deps"])
def test_a_changed_file_of_an_entry_stops_build_and_run(
    own: Built, tmp_path: Path, what: str
) -> None:
    built = own
    recorded_run(built)
    marker = tmp_path / "corrupt-ran"
    evil = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x')\nVALUE = 'evil'\n"
    if what == "app":
        target = built.app / "pyvenv.cfg"
        corrupt(target, b"home = /nowhere\n", keep_mtime=False)
    else:
        # The layer's file: the application hardlinks it, so both change.
        target = next(built.deps.rglob("rec_dep/__init__.py"))
        corrupt(target, evil.encode(), keep_mtime=False)
    commands = [
        ("build", built.project),
        ("run", built.project, "--", "python", "-c", PROBE),
        ("-v", "run", built.project, "--", "python", "-c", PROBE),
    ]
    for args in commands:  # the shortcut's answer, then the full lookup's: neither uses it
        result = lockbox(*args, store=built.store)
        assert result.returncode == 1, result.stdout + result.stderr
        assert not marker.exists()
        assert "Traceback" not in result.stderr
        assert "is corrupted" in result.stderr
        assert target.name in result.stderr
        assert "lockbox store verify" in result.stderr
        assert result.stdout == ""
    assert store_verify(built.store).returncode == 1
    # The way out it names: remove the corrupted entries and what needs them, build again.
    repaired = lockbox("store", "verify", "--repair", store=built.store)
    assert repaired.returncode == 0, repaired.stderr
    assert store_verify(built.store).returncode == 0
    rebuilt = run_probe(built)
    assert (rebuilt.returncode, rebuilt.stdout) == (0, f"dep {built.app}\n"), rebuilt.stderr
    assert not marker.exists()
    assert store_verify(built.store).returncode == 0


def forgery_found_by_verify(built: Built) -> None:
    """Same size, mode and mtime, same inode: the status of the files is what it was, so
    only re-hashing notices. That is what ``lockbox store verify`` does; a build or run
    does not re-read every file of its entries."""
    target = next(built.app.rglob("rec_dep/__init__.py"))
    original = target.read_bytes()
    corrupt(target, original.replace(b"dep", b"bad"), keep_mtime=True)
    result = run_probe(built)
    assert result.stdout == f"bad {built.app}\n"  # undetected by the cheap check
    verify = store_verify(built.store)
    assert verify.returncode == 1
    assert f"{built.app} is corrupted" in verify.stderr


def test_a_file_added_to_an_entry_is_noticed(own: Built) -> None:
    built = own
    recorded_run(built)
    site = next(built.app.rglob("site-packages"))
    site.chmod(0o755)
    (site / "sitecustomize.py").write_text("print('injected')\n")
    site.chmod(0o555)
    result = run_probe(built)
    assert result.returncode == 1 and "is corrupted" in result.stderr
    assert "injected" not in result.stdout


def test_an_entry_copied_is_rehashed_and_used_a_forgery_is_for_verify(own: Built) -> None:
    """New inodes (a store restored from a copy) change every file's status but not its
    content: the entry is re-hashed, found intact and sealed anew. Then a forgery that
    keeps every file's status (:func:`forgery_found_by_verify`)."""
    built = own
    recorded_run(built)
    app = built.app
    copy = app.with_name(app.name + ".copy")
    shutil.copytree(app, copy, symlinks=True, copy_function=shutil.copy2)
    for directory, _, _ in os.walk(app):
        os.chmod(directory, 0o755)
    shutil.rmtree(app)
    os.rename(copy, app)
    for directory, _, _ in os.walk(app, topdown=False):
        os.utime(directory, (1, 1))
        os.chmod(directory, 0o555)
    result = run_probe(built)
    assert (result.returncode, result.stdout) == (0, f"dep {built.app}\n"), result.stderr
    assert store_verify(built.store).returncode == 0
    forgery_found_by_verify(built)


# (4) the other records: what an ELF file needs, an entry's image layer --------------------
def test_a_needed_record_is_signed_for_its_own_name(tmp_path: Path) -> None:
    from lockbox.native.hostlibs import cached_needs
    from lockbox.store.store import Store

    with Store.open(tmp_path / "store") as store:
        assert cached_needs(store, "sha256-aaaa", lambda: ["libtrue.so.1"]) == ("libtrue.so.1",)
        assert cached_needs(store, "sha256-bbbb", lambda: ["libother.so.1"]) == ("libother.so.1",)
        needed = store.work_dir / "needed"
        # Moved to another name, edited, or unsigned: read again from the files.
        shutil.copyfile(needed / "sha256-bbbb", needed / "sha256-aaaa")
        assert cached_needs(store, "sha256-aaaa", lambda: ["libtrue.so.1"]) == ("libtrue.so.1",)
        text = (needed / "sha256-aaaa").read_text()
        (needed / "sha256-aaaa").write_text(text.replace("libtrue", "libfake"))
        assert cached_needs(store, "sha256-aaaa", lambda: ["libtrue.so.1"]) == ("libtrue.so.1",)
        (needed / "sha256-aaaa").write_text("lockbox-needed 2\nend\n")
        assert cached_needs(store, "sha256-aaaa", lambda: ["libtrue.so.1"]) == ("libtrue.so.1",)
        # Still kept: the next lookup reads nothing.
        assert cached_needs(store, "sha256-aaaa", list) == ("libtrue.so.1",)


def test_an_image_layer_is_taken_only_from_its_own_entry(tmp_path: Path) -> None:
    from lockbox.image.cache import LayerCache
    from lockbox.image.layers import Layer
    from lockbox.store.store import Store

    (tmp_path / "one").write_text("1")
    (tmp_path / "two").write_text("2")
    with Store.open(tmp_path / "store") as store:
        deps = store.add_tree(tmp_path / "one", name="one", kind="deps")
        app = store.add_tree(tmp_path / "two", name="two", kind="app")
        blobs = tmp_path / "blobs"
        blobs.mkdir()
        import hashlib

        data = b"a layer"
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        layer = Layer("deps", f"sha256:{digest}", f"sha256:{digest}", len(data), "t", 1)
        theirs = LayerCache(store.derived_dir(app), False, store.work_dir)
        theirs.keep(layer, blobs)
        taken = tmp_path / "taken"
        taken.mkdir()
        assert theirs.take("app", taken) is not None  # its own entry's: taken
        (taken / digest).unlink()
        # The application's layer put beside the dependency layer, record and all.
        ours = LayerCache(store.derived_dir(deps), False, store.work_dir)
        ours.directory.mkdir(parents=True)
        shutil.copyfile(theirs.blob, ours.blob)
        shutil.copyfile(theirs.record, ours.record)
        assert ours.take("deps", taken) is None
        # A record written by hand, whose digests agree with its blob: not the store's.
        shutil.copyfile(theirs.blob, ours.blob)
        record = json.loads(theirs.record.read_text().rsplit("hmac-sha256", 1)[0])
        ours.record.write_text(json.dumps(record))
        assert ours.take("deps", taken) is None
        assert not (taken / digest).exists()


def test_the_key_is_the_owners_alone_and_made_once(tmp_path: Path) -> None:
    from lockbox.store import records
    from lockbox.store.store import Store

    Store.open(tmp_path / "store").close()
    key = tmp_path / "store" / ".lockbox" / records.KEY
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32
    before = key.read_bytes()
    Store.open(tmp_path / "store").close()
    assert key.read_bytes() == before
    assert not [path for path in key.parent.iterdir() if path.name.startswith("key.")]


@pytest.mark.parametrize(
    "change", ["key readable by others", "key of another user", "directory writable by others"]
)
def test_a_key_another_user_could_have_planted_signs_nothing(tmp_path: Path, change: str) -> None:
    from lockbox.store import records
    from lockbox.store.store import Store

    Store.open(tmp_path / "store").close()
    meta = tmp_path / "store" / ".lockbox"
    assert records.read_key(str(meta)) is not None
    if change == "key readable by others":
        (meta / records.KEY).chmod(0o644)
    elif change == "key of another user":
        os.chown(meta / records.KEY, 65534, 65534)
    else:
        meta.chmod(0o777)
    assert records.read_key(str(meta)) is None
