"""``lockbox store …`` and ``lockbox gc``: look into, check and clean the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lockbox.cli.context import Context

if TYPE_CHECKING:
    from lockbox.store.store import Entry

KINDS = (
    "source",
    "toolchain",
    "python",
    "deps",
    "bytecode",
    "libraries",
    "app",
)  # lockbox.store.store.KINDS; a test keeps them equal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = subparsers.add_parser(
        "store",
        help="list, add, verify and root store entries",
        description="Inspect and maintain the store of immutable, hashed entries.",
    )
    commands = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    ls = commands.add_parser("ls", help="list registered entries")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=run_ls)

    add = commands.add_parser(
        "add",
        help="copy a file or directory into the store as a content-addressed entry",
        description="Copy PATH into the store (atomically) and print the entry's path.",
    )
    add.add_argument("path", metavar="PATH", type=Path)
    add.add_argument("--name", help="entry name (default: the file name of PATH)")
    add.add_argument("--kind", choices=KINDS, default="source", help="entry kind (default: source)")
    add.add_argument("--root", metavar="NAME", help="also protect the entry from gc under NAME")
    add.set_defaults(handler=run_add)

    verify = commands.add_parser(
        "verify",
        help="re-hash every entry; exit 1 if any is corrupted or missing",
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="remove the corrupted or missing entries, the entries that "
        "need them and their roots, so that a build makes them again",
    )
    verify.set_defaults(handler=run_verify)

    roots = commands.add_parser("roots", help="list garbage-collection roots")
    roots.set_defaults(handler=run_roots)

    root = commands.add_parser("root", help="protect an entry from gc under a root name")
    root.add_argument("name", metavar="NAME")
    root.add_argument("entry", metavar="ENTRY", help="entry path, directory name or unique prefix")
    root.set_defaults(handler=run_root)

    unroot = commands.add_parser("unroot", help="remove a garbage-collection root")
    unroot.add_argument("name", metavar="NAME")
    unroot.set_defaults(handler=run_unroot)

    gc = subparsers.add_parser(
        "gc",
        help="remove store entries that no root reaches",
        description="Remove every entry not reachable from a root through references.",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up if other lockbox commands still have the store open after "
        "SECONDS (default: wait until they finish)",
    )
    gc.set_defaults(handler=run_gc)


def _entry_json(entry: Entry) -> dict[str, object]:
    return {
        "path": str(entry.path),
        "kind": entry.kind,
        "name": entry.name,
        "narHash": entry.nar_hash.sri,
        "narSize": entry.nar_size,
        "addressing": entry.addressing,
        "inputs": dict(entry.inputs),
        "references": list(entry.references),
        "created": entry.created,
    }


def run_ls(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        entries = store.entries()
    if args.json:
        context.out.print_json(json.dumps([_entry_json(e) for e in entries]))
        return 0
    if not entries:
        context.info(f"the store at {store.root} is empty")
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("kind", "entry", "NAR size", "NAR hash"):
        table.add_column(column, justify="right" if column == "NAR size" else "left")
    for entry in entries:
        table.add_row(entry.kind, entry.path_name, _size(entry.nar_size), entry.nar_hash.sri)
    context.out.print(table)
    return 0


def run_add(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        name = args.name or args.path.absolute().name
        entry = store.add_tree(args.path, name=name, kind=args.kind, root=args.root)
    context.print(str(entry.path))
    return 0


def run_verify(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        context.info(f"verifying {len(store.entries())} entries in {store.root}")
        report = store.verify()
        bad = len(report.corrupted) + len(report.missing)
        if bad and args.repair:
            removed = store.remove_corrupted([*(e for e, _ in report.corrupted), *report.missing])
    for entry, found in report.corrupted:
        context.error(f"{entry.path} is corrupted: recorded {entry.nar_hash}, found {found}")
    for entry in report.missing:
        context.error(f"{entry.path} is registered but missing")
    for path in report.unknown:
        context.warning(f"{path} is not something lockbox made; it was left alone")
    if report.unknown:
        context.warning(
            f"{len(report.unknown)} unknown files in the store; lockbox never removes them: "
            "move them out of the store"
        )
    if bad and args.repair:
        for entry in removed:
            context.print(f"removed {entry.path}")
        context.info(f"removed {len(removed)} entries: build again to make them anew")
        return 0
    if bad:
        context.error(
            f"{bad} of {report.checked} entries failed verification; remove them (and what "
            "needs them) with `lockbox store verify --repair`, and build again"
        )
        return 1
    context.info(f"all {report.checked} entries verified")
    return 0


def run_roots(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        for name, target in store.roots().items():
            context.print(f"{name} -> {store.root / target}")
    return 0


def run_root(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        store.add_root(args.name, store.resolve(args.entry))
    return 0


def run_unroot(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        store.remove_root(args.name)
    return 0


def run_gc(args: argparse.Namespace, context: Context) -> int:
    with context.open_store() as store:
        report = store.gc(dry_run=args.dry_run, timeout=args.timeout)
    verb = "would remove" if report.dry_run else "removed"
    for entry in report.removed:
        context.print(f"{verb} {entry.path}")
    context.info(
        f"{verb} {len(report.removed)} entries ({_size(report.freed_nar_bytes)}), "
        f"kept {report.kept}"
    )
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
