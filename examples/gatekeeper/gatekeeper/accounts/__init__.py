"""Roles: named bundles of permissions (authentik's rbac app in miniature)."""
