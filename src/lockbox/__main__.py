"""``python -m lockbox``."""

from lockbox.cli import entry

entry()
