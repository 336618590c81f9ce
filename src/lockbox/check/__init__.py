"""``lockbox check``: rebuilding in a varied world and comparing."""
