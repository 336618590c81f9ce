"""Blueprints: YAML files, shipped with the app, describing groups and roles.

A blueprint looks like

    version: 1
    metadata: {name: default-groups}
    groups:
      - name: admins
    roles:
      - name: superuser
        groups: [admins]

`apply_blueprints` (gatekeeper.accounts) turns them into database rows.
"""

from pathlib import Path

import yaml
from django.conf import settings


class BlueprintError(Exception):
    """A blueprint directory or file that cannot be used."""


def load_blueprints(directory: str | Path | None = None) -> list[dict]:
    """Every *.yaml in `directory` (default settings.BLUEPRINTS_DIR), parsed,
    in file-name order so that applying them is deterministic."""
    root = Path(directory if directory is not None else settings.BLUEPRINTS_DIR)
    if not root.is_dir():
        # The usual cause: BLUEPRINTS_DIR still points at the source default
        # instead of the installed app's output root.
        raise BlueprintError(
            f"blueprints directory {root} does not exist (check BLUEPRINTS_DIR)"
        )
    blueprints = []
    for path in sorted(root.glob("*.yaml"), key=lambda p: p.name):
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise BlueprintError(f"{path}: a blueprint must be a YAML mapping")
        blueprints.append(data)
    return blueprints
