"""Workspace member of the gatekeeper example."""
