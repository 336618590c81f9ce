"""The `gatekeeper-admin` console script: manage.py, installed on PATH."""

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatekeeper.settings")
    from django.core.management import execute_from_command_line

    # Commands report failure by raising SystemExit themselves.
    execute_from_command_line(sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
