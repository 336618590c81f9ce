"""The dependency phase: uv.lock in, one pinned dependency layer out."""
