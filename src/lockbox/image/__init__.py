"""OCI images made from a built closure."""
