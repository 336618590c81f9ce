"""Locating keys in TOML text."""

from __future__ import annotations

from lockbox.inputs.tomlpos import locate

TEXT = """\
# comment
name = "x"
"quoted.key" = 1

[deps]
hash = "sha256-..."
groups = [
  "dev",
]
build.psycopg-c.path = ["/usr/bin"]

[[app.substitute]]
file = "a"

[[app.substitute]]
file = "b"
with = "c = d"
description = '''
line = not a key
'''
after = 1

[tool.lockbox.verify]
imports = ["x"]
"""


def test_locates_plain_quoted_and_dotted_keys() -> None:
    assert locate(TEXT, ["name"]) == 2
    assert locate(TEXT, ["quoted.key"]) == 3
    assert locate(TEXT, ["deps"]) == 5
    assert locate(TEXT, ["deps", "hash"]) == 6
    assert locate(TEXT, ["deps", "build", "psycopg-c", "path"]) == 10
    assert locate(TEXT, ["tool", "lockbox", "verify", "imports"]) == 24


def test_array_elements_of_tables_are_counted() -> None:
    assert locate(TEXT, ["app", "substitute", 0, "file"]) == 13
    assert locate(TEXT, ["app", "substitute", 1, "file"]) == 16
    assert locate(TEXT, ["app", "substitute", 1, "with"]) == 17


def test_falls_back_to_the_nearest_located_ancestor() -> None:
    assert locate(TEXT, ["deps", "groups", 0]) == 7
    assert locate(TEXT, ["deps", "missing"]) == 5
    assert locate(TEXT, ["app", "substitute", 1, "nothing"]) == 15
    assert locate(TEXT, ["absent"]) is None


def test_multiline_strings_are_skipped() -> None:
    assert locate(TEXT, ["app", "substitute", 1, "line"]) == 15
    assert locate(TEXT, ["app", "substitute", 1, "after"]) == 21
