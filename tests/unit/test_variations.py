"""Each variation of ``lockbox check`` changes what it claims to, seen from a process
started in the varied world the way the rebuild is started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lockbox.check.variations import (
    CLOCK_OFFSET,
    EXTRA_ENV,
    HOSTNAME,
    UID,
    USER,
    VARIATIONS,
    parse_variations,
    varied_world,
)
from lockbox.environment import CHECK_ENV, Environment
from lockbox.errors import LockboxError
from lockbox.tools.toolbox import Toolbox

# What a process sees of the world, as JSON.
PROBE = r"""
import json, os, socket, sys, time
listing = sys.argv[1]
umask = os.umask(0); os.umask(umask)
print(json.dumps({
    "year": time.localtime().tm_year, "utc": time.time(),
    "umask": umask, "tz": os.environ.get("TZ"), "lang": os.environ.get("LC_ALL"),
    "hostname": socket.gethostname(), "uid": os.getuid(), "user": os.environ.get("USER"),
    "home": os.environ.get("HOME"), "env": list(os.environ),
    "cpus": len(os.sched_getaffinity(0)), "listing": os.listdir(listing),
    "check_env": os.environ.get("LOCKBOX_CHECK_ENV"),
}))
"""


def probe(tmp_path: Path, enabled: tuple[str, ...]) -> tuple[dict, dict, dict[str, str]]:
    """(what a plain process sees, what a process in the world sees, what was skipped)."""
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": "/root",
        "USER": "root",
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "A_FIRST": "1",
        "Z_LAST": "2",
    }
    work = tmp_path / "work"
    with varied_world(enabled, work, Toolbox(Environment(environ))) as world:
        # Files written through the world's directory land in its backing directory.
        for index in range(40):
            (world.directory / f"file-{index:02d}").write_text("x")
        plain = subprocess.run(
            [sys.executable, "-c", PROBE, str(world.backing)],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        )
        # The clock is varied for the commands lockbox starts to build (check_variables).
        inner = world.argv([sys.executable, "-c", PROBE, str(world.directory)])
        clock = json.loads(world.env.get(CHECK_ENV, "{}"))
        varied = subprocess.run(
            inner,
            env={**world.env, **clock},
            preexec_fn=world.preexec,
            capture_output=True,
            text=True,
            check=True,
        )
        skipped = dict(world.skipped)
    assert sorted(os.listdir(world.backing)) == [f"file-{i:02d}" for i in range(40)]
    return json.loads(plain.stdout), json.loads(varied.stdout), skipped


def test_every_variation_changes_what_it_claims(tmp_path: Path) -> None:
    before, after, skipped = probe(tmp_path, VARIATIONS)
    assert skipped == {} or set(skipped) <= {"cpus"}, skipped
    # time: a clock a year and a month ahead (not the same year), passed on for builds
    assert after["utc"] - before["utc"] > 390 * 86400
    assert after["year"] != before["year"]
    assert json.loads(after["check_env"])["FAKETIME"] == CLOCK_OFFSET
    assert before["check_env"] is None
    assert after["umask"] != before["umask"]
    assert (before["tz"], after["tz"]) == ("UTC", "GMT+12")
    assert after["lang"] == "fr_CH.UTF-8"
    assert after["hostname"] == HOSTNAME != before["hostname"]
    assert (after["uid"], after["user"]) == (UID, USER) and before["uid"] != UID
    assert after["home"] != before["home"] and not os.listdir(after["home"])
    # env: extra variables, and the caller's variables in another order
    assert set(EXTRA_ENV) <= set(after["env"]) and not set(EXTRA_ENV) & set(before["env"])
    assert after["env"].index("A_FIRST") > after["env"].index("Z_LAST")
    assert before["env"].index("A_FIRST") < before["env"].index("Z_LAST")
    if "cpus" not in skipped:
        assert after["cpus"] == 1 < before["cpus"]
    # file-order: the same names, listed in another order than the directory's own
    assert sorted(after["listing"]) == sorted(before["listing"])
    assert after["listing"] != before["listing"]


def test_switched_off_variations_leave_the_world_alone(tmp_path: Path) -> None:
    before, after, skipped = probe(tmp_path, ())
    assert skipped == {}
    for key in (
        "year",
        "umask",
        "tz",
        "lang",
        "hostname",
        "uid",
        "user",
        "home",
        "env",
        "cpus",
        "listing",
        "check_env",
    ):
        assert after[key] == before[key], key


def test_one_variation_alone(tmp_path: Path) -> None:
    before, after, _ = probe(tmp_path, ("tz",))
    assert after["tz"] == "GMT+12"
    assert (after["hostname"], after["umask"], after["env"][:-1]) == (
        before["hostname"],
        before["umask"],
        before["env"][:-1],
    )


def test_variation_names_are_checked() -> None:
    assert parse_variations(["time,umask", "cpus"]) == tuple(
        v for v in VARIATIONS if v not in {"time", "umask", "cpus"}
    )
    with pytest.raises(
        LockboxError, match="no variation named bogus; the variations are build-path"
    ):
        parse_variations(["bogus"])


def test_the_clock_channel_is_only_set_by_the_time_variation(tmp_path: Path) -> None:
    with varied_world(("time",), tmp_path / "w", Toolbox(Environment())) as world:
        assert CHECK_ENV in world.env and "LD_PRELOAD" not in world.env
    with varied_world(("tz",), tmp_path / "v", Toolbox(Environment())) as world:
        assert CHECK_ENV not in world.env
