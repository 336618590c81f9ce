"""The store commands as a user runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.unit.test_store import make_tree


def test_add_ls_verify_gc(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    source = make_tree(tmp_path / "src")
    added = cli("--store", store, "store", "add", source, "--name", "demo", "--root", "keep")
    assert added.code == 0, added.err
    entry = Path(added.out.strip())
    assert entry.parent == store and entry.name.endswith("-demo")

    loose = cli("--store", store, "store", "add", make_tree(tmp_path / "other", "b"))
    listed = json.loads(cli("--store", store, "store", "ls", "--json").out)
    assert sorted(item["name"] for item in listed) == ["demo", "other"]
    assert all(item["narHash"].startswith("sha256-") for item in listed)

    assert cli("--store", store, "store", "roots").out.strip() == f"keep -> {entry}"
    assert cli("--store", store, "store", "verify").code == 0

    dry = cli("--store", store, "gc", "--dry-run")
    assert dry.out.strip() == f"would remove {loose.out.strip()}"
    assert Path(loose.out.strip()).exists()
    assert cli("--store", store, "gc").code == 0
    assert not Path(loose.out.strip()).exists() and entry.exists()

    os.chmod(entry, 0o755)
    os.chmod(entry / "file.txt", 0o644)
    (entry / "file.txt").write_text("changed")
    failed = cli("--store", store, "store", "verify")
    assert failed.code == 1
    assert f"{entry} is corrupted" in failed.err
    assert "1 of 1 entries failed verification" in failed.err


def test_repair_removes_corrupted_entries_what_needs_them_and_their_roots(
    cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from lockbox.errors import StoreCorrupted
    from lockbox.store.store import Store

    store = tmp_path / "store"
    with Store.open(store) as opened:
        base = opened.add_tree(make_tree(tmp_path / "base"), name="base", kind="deps")
        user = opened.add_tree(
            make_tree(tmp_path / "user", "u"),
            name="user",
            kind="app",
            references=[base.path_name],
            root="user",
        )
        other = opened.add_tree(
            make_tree(tmp_path / "other", "o"), name="other", kind="source", root="other"
        )
        opened.check_sealed(base, user, other)
        os.chmod(base.path / "file.txt", 0o644)
        (base.path / "file.txt").write_text("changed")
        os.chmod(base.path / "file.txt", 0o444)
        try:
            opened.check_sealed(base)
        except StoreCorrupted as error:
            assert "file.txt" in str(error) and "store verify --repair" in str(error)
        else:
            raise AssertionError("a changed entry passed its check")
    repaired = cli("--store", store, "store", "verify", "--repair")
    assert repaired.code == 0, repaired.err
    assert not base.path.exists() and not user.path.exists() and other.path.exists()
    assert cli("--store", store, "store", "roots").out.strip() == f"other -> {other.path}"
    assert cli("--store", store, "store", "verify").code == 0


def test_errors_are_messages_not_tracebacks(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = cli("store", "add", tmp_path / "absent")
    assert missing.code == 1
    assert "no such file or directory" in missing.err and "Traceback" not in missing.err
    assert cli("store", "unroot", "nothing").code == 1
    assert cli("store", "bogus").code == 2
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    result = cli("--store", blocked / "store", "store", "ls")
    assert result.code == 1 and "cannot create the store" in result.err


def test_the_cli_knows_the_store_kinds() -> None:
    from lockbox.cli import main_store
    from lockbox.store.store import KINDS

    assert main_store.KINDS == KINDS


def test_the_version_has_one_source(cli) -> None:  # type: ignore[no-untyped-def]
    import importlib.metadata
    import tomllib

    import lockbox

    root = Path(__file__).parents[2]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert root / pyproject["tool"]["hatch"]["version"]["path"] == Path(lockbox.__file__)
    assert importlib.metadata.version("lockbox") == lockbox.__version__
    assert cli("--version").out == f"lockbox {lockbox.__version__}\n"
