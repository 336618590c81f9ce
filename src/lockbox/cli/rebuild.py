"""``python -m lockbox.cli.rebuild SPEC``: the entry point of ``lockbox check``'s rebuild.

A command line of its own: it reads its environment once, rebuilds what the spec names
(:func:`lockbox.check.rebuild.rebuild`) and writes ``result.json`` beside the spec. Its
progress goes to standard error, a line each, which the check reads and forwards.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lockbox.check.rebuild import WARNING, rebuild
from lockbox.environment import Environment


class _Stderr:
    """Progress of the rebuild, a line each on its standard error, which the check reads."""

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        for line in message.splitlines():
            print(line, file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        print(WARNING + message.replace("\n", "\n  "), file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    """Read the spec, rebuild, write ``result.json`` beside it."""
    spec_file = Path(argv[0])
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    results = rebuild(spec, Environment.from_process(), _Stderr())
    (spec_file.parent / "result.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
