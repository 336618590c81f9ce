"""``lockbox hash`` and ``lockbox nar``: the NAR hash of a path, and the NAR itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lockbox.cli.context import Context
from lockbox.store import nar


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hash_parser = subparsers.add_parser(
        "hash",
        help="print the SHA-256 of a path's Nix Archive serialisation",
        description=(
            "Print the SHA-256 of PATH's Nix Archive (NAR) serialisation, the same hash as "
            "`nix-hash --type sha256 PATH` (hex) or `nix hash path PATH` (SRI)."
        ),
    )
    hash_parser.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    form = hash_parser.add_mutually_exclusive_group()
    form.add_argument(
        "--sri",
        dest="form",
        action="store_const",
        const="sri",
        help="SRI form, sha256-<base64> (the default)",
    )
    form.add_argument(
        "--base32",
        dest="form",
        action="store_const",
        const="base32",
        help="Nix base-32, as `nix-hash --type sha256 --base32`",
    )
    form.add_argument(
        "--hex",
        dest="form",
        action="store_const",
        const="hex",
        help="hexadecimal, as `nix-hash --type sha256`",
    )
    hash_parser.set_defaults(handler=run_hash, form="sri")

    nar_parser = subparsers.add_parser(
        "nar",
        help="write a path's Nix Archive to stdout",
        description="Write PATH's Nix Archive (NAR) to stdout, byte-equal to `nix-store --dump`.",
    )
    nar_parser.add_argument("path", metavar="PATH", type=Path)
    nar_parser.set_defaults(handler=run_nar)


def run_hash(args: argparse.Namespace, context: Context) -> int:
    for path in args.paths:
        digest = nar.nar_hash(path).sha256
        text = getattr(digest, args.form)
        context.print(text if len(args.paths) == 1 else f"{text}  {path}")
    return 0


def run_nar(args: argparse.Namespace, context: Context) -> int:
    if sys.stdout.isatty():
        context.error("refusing to write a binary archive to a terminal; redirect stdout")
        return 2
    nar.write_nar(args.path, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0
