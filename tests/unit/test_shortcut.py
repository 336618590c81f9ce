"""The record that answers a repeated build: which commands it takes, what it notices."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lockbox.cli.shortcut import FORMAT, Request, signature
from lockbox.store import records

LATER = 10**18 * 4  # a start time far after every file written here: all of them settled


def request(
    argv: list[str], environ: dict[str, str] | None = None, started: int = LATER
) -> Request | None:
    return Request.parse(argv, {"HOME": "/home/u", **(environ or {})}, started)


@pytest.mark.parametrize(
    "argv, command, options, project, quiet",
    [
        (["build"], "build", [], ".", False),
        (["build", "proj"], "build", [], "proj", False),
        (["-q", "build", "--deps-only", "proj"], "build", ["--deps-only"], "proj", True),
        (
            ["--store", "/s", "build", "proj", "--no-bundle"],
            "build",
            ["--no-bundle"],
            "proj",
            False,
        ),
        (["run", "proj", "--", "python", "-V"], "run", [], "proj", False),
        (["run", "--", "python"], "run", [], ".", False),
    ],
)
def test_the_commands_it_answers(
    argv: list[str], command: str, options: list[str], project: str, quiet: bool
) -> None:
    parsed = request(argv)
    assert parsed is not None
    assert (parsed.command, parsed.options, parsed.project, parsed.quiet) == (
        command,
        options,
        project,
        quiet,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-v", "build"],
        ["build", "-v"],
        ["--help"],
        ["build", "--help"],
        ["plan", "."],
        ["build", "a", "b"],
        ["build", "--to", "x"],
        ["run", "proj", "python"],
        ["run", "--"],
        ["run", "--deps-only", "--", "python"],
        ["--store"],
        ["image", "-o", "x"],
    ],
)
def test_everything_else_goes_to_the_full_command_line(argv: list[str]) -> None:
    assert request(argv) is None


def test_the_store_comes_from_the_option_the_variable_or_the_default(tmp_path: Path) -> None:
    assert request(["--store", "s", "build"]).store == os.path.abspath("s")  # type: ignore[union-attr]
    assert request(["--store=/x", "build"]).store == "/x"  # type: ignore[union-attr]
    assert request(["build"], {"LOCKBOX_STORE": "/y"}).store == "/y"  # type: ignore[union-attr]
    assert request(["build"], {"XDG_DATA_HOME": "/d"}).store == "/d/lockbox/store"  # type: ignore[union-attr]
    assert request(["build"]).store == "/home/u/.local/share/lockbox/store"  # type: ignore[union-attr]


def test_arguments_directory_store_and_environment_make_the_key() -> None:
    base = request(["build", "p"])
    assert base is not None
    others = [
        request(["build", "q"]),
        request(["build", "--deps-only", "p"]),
        request(["build", "p"], {"PATH": "/opt/bin"}),
        request(["run", "p", "--", "x"]),
        request(["--store", "/elsewhere", "build", "p"]),
    ]
    assert len({base.path, *(other.path for other in others if other)}) == 6
    assert request(["-q", "build", "p"]).path == base.path  # type: ignore[union-attr]


def recorded(tmp_path: Path, started: int = LATER) -> tuple[Request, Path, Path]:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    source = project / "pkg" / "mod.py"
    source.write_text("x = 1\n")
    entry = tmp_path / "store" / "entry"
    entry.mkdir(parents=True)
    parsed = request(["--store", str(tmp_path / "store"), "build", str(project)], started=started)
    assert parsed is not None
    said = [("info", "the application is in the store"), ("say", str(entry))]
    written = parsed.record(
        [str(project), str(project / "pkg"), str(source), str(project / "absent.toml")],
        [str(entry)],
        said,
        str(entry),
    )
    assert written == (started == LATER)
    return parsed, source, entry


def test_an_unchanged_world_is_answered_with_what_was_said(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    parsed, _, entry = recorded(tmp_path)
    assert parsed.answer() == str(entry)
    out, err = capfd.readouterr()
    assert out == f"{entry}\n"
    assert err == "the application is in the store\n"
    parsed.quiet = True
    assert parsed.answer() == str(entry)
    assert capfd.readouterr() == (f"{entry}\n", "")


@pytest.mark.parametrize("change", ["content", "touch", "new file", "created", "entry gone"])
def test_any_change_to_what_it_consulted_is_noticed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], change: str
) -> None:
    parsed, source, entry = recorded(tmp_path)
    if change == "content":
        source.write_text("x = 2\n")  # same size
    elif change == "touch":
        os.utime(source, ns=(time.time_ns(), time.time_ns()))
    elif change == "new file":
        (source.parent / "new.py").write_text("")
    elif change == "created":
        (source.parent.parent / "absent.toml").write_text("")
    else:
        entry.rmdir()
    assert parsed.answer() is None
    assert capfd.readouterr() == ("", "")


def test_a_path_changed_just_before_the_run_is_not_trusted(tmp_path: Path) -> None:
    parsed, _, _ = recorded(tmp_path, started=time.time_ns())
    assert not Path(parsed.path).exists()
    assert parsed.answer() is None


def test_a_cut_short_or_foreign_record_answers_nothing(tmp_path: Path) -> None:
    parsed, _, _ = recorded(tmp_path)
    key = records.read_key(parsed.meta)
    body = records.verified(key, parsed.place, Path(parsed.path).read_bytes())
    assert key is not None and body is not None
    text = body.decode()
    assert text.startswith(FORMAT + "\n") and text.endswith("\nend\n")
    # Signed by the store, and still no answer: the record itself says it is incomplete.
    for damaged in (
        text[: text.index("result ")],
        text.replace(FORMAT, "lockbox-shortcut 0"),
        text.replace("\nin ", "\nmaybe ", 1),
    ):
        Path(parsed.path).write_bytes(records.sign(key, parsed.place, damaged.encode()))
        assert parsed.answer() is None


def test_a_signature_follows_symbolic_links(tmp_path: Path) -> None:
    target = tmp_path / "a"
    target.write_text("1")
    link = tmp_path / "link"
    link.symlink_to(target)
    before = signature(str(link))
    assert ">" in before and signature(str(tmp_path / "missing")) == "-"
    target.write_text("22")
    assert signature(str(link)) != before


def test_another_command_looks_up_without_saying_and_has_its_own_key(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    parsed, _, entry = recorded(tmp_path)
    image = Request.make("image", parsed.project, parsed.store, {"HOME": "/home/u"}, LATER)
    assert image is not None and image.path != parsed.path
    assert image.lookup() is None  # nothing recorded for it yet
    found = parsed.lookup()
    assert found == (str(entry), [("info", "the application is in the store"), ("say", str(entry))])
    assert capfd.readouterr() == ("", "")
