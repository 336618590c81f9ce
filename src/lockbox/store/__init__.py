"""The store: immutable, content-addressed entries, their database and signed records."""
