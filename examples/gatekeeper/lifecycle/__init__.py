"""Start-up tasks run before the server (authentik's lifecycle package in miniature)."""
