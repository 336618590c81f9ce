"""Django settings for gatekeeper, a miniature of authentik's backend."""

import os
from pathlib import Path

# A fixed key: this is an example, not a deployment. Real deployments would
# read it from the environment.
SECRET_KEY = "gatekeeper-example-not-a-secret-9f3c1a7e"

DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    # The two in-tree workspace members, each a (minimal) Django app.
    "gatekeeper_guardian",
    "gatekeeper_cache",
    "gatekeeper.accounts",
    "gatekeeper.directory",
]

# Mutable state lives outside the (read-only) installed tree.
DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA", "/var/lib/gatekeeper"))

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "gatekeeper.sqlite3",
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "gatekeeper",
    }
}

# The installed app's blueprints live in its output root: the build tool's
# recipe replaces this absolute path with @out@/blueprints.
BLUEPRINTS_DIR = Path("/blueprints")

USE_TZ = True
TIME_ZONE = "UTC"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
