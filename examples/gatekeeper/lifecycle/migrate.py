"""`python -m lifecycle.migrate`: bring the database schema up to date."""

import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatekeeper.settings")
    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command

    # SQLite creates the file but not its directory; on a first start the
    # data directory may not exist yet.
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    call_command("migrate")


if __name__ == "__main__":
    main()
