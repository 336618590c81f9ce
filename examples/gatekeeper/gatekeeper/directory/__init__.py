"""Directory: which role is held through which group (authentik's core app in miniature)."""
