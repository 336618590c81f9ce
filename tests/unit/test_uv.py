"""The uv wrapper: the exact sync command line, and reading uv's failures."""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version

from lockbox.errors import BuildFailed, LockOutdated, NetworkError, ToolFailed
from lockbox.tools.uv import OfflineInstall, SyncRequest, Uv, explain_failure, explain_lock_check

UV = Uv(Path("/opt/uv"), Version("0.13.9"))


def test_sync_installs_no_member_and_no_dev_group_unless_asked() -> None:
    argv = UV.sync_argv(SyncRequest(python=Path("/py/bin/python3.13")))
    assert argv == [
        "/opt/uv",
        "sync",
        "--locked",
        "--no-install-project",
        "--no-install-workspace",
        "--python",
        "/py/bin/python3.13",
        "--no-dev",
    ]


def test_sync_passes_groups_extras_exclusions_and_config() -> None:
    argv = UV.sync_argv(
        SyncRequest(
            python=Path("/py"),
            groups=("dev", "docs"),
            extras=("s3",),
            exclude=("opencontainers",),
            config_file=Path("/b/uv.toml"),
        )
    )
    assert argv[7:] == [
        "--group",
        "dev",
        "--group",
        "docs",
        "--extra",
        "s3",
        "--no-install-package",
        "opencontainers",
        "--config-file",
        "/b/uv.toml",
    ]


PSYCOPG_C_FAILURE = """\
Resolved 3 packages in 2ms
   Building psycopg-c==3.2.9
  × Failed to build `psycopg-c==3.2.9`
  ├─▶ The build backend returned an error
  ╰─▶ Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)

      [stderr]
      error: pg_config executable not found.

      hint: This usually indicates a problem with the package or the build environment.
"""


def test_a_build_failure_names_the_package_and_the_debian_package() -> None:
    error = explain_failure(PSYCOPG_C_FAILURE)
    assert isinstance(error, BuildFailed)
    assert error.package == "psycopg-c"
    assert "pg_config executable not found" in error.log_tail
    assert "Resolved 3 packages" not in error.log_tail
    assert any("libpq-dev" in hint for hint in error.hints)
    assert str(error).startswith("building psycopg-c from source failed")


def test_an_unknown_missing_header_gets_a_generic_hint() -> None:
    error = explain_failure(
        "  × Failed to build `foo @ https://x/foo-1.tar.gz`\n"
        "      foo.c:1:10: fatal error: bar/baz.h: No such file or directory\n"
    )
    assert isinstance(error, BuildFailed) and error.package == "foo"
    assert error.hints == (
        "the header bar/baz.h is missing: install the Debian -dev package "
        "that provides it (`apt-file search` finds it)",
    )


def test_gssapi_impersonation_hint_is_the_recipe_fix() -> None:
    error = explain_failure(
        "× Failed to build `gssapi==1.9.0`\n"
        "gssapi/raw/ext_s4u.c: error: implicit declaration of function "
        "'gss_acquire_cred_impersonate_name'\n"
    )
    assert isinstance(error, BuildFailed)
    assert any("-include gssapi/gssapi_ext.h" in hint for hint in error.hints)


def test_stale_lock_and_network_failures() -> None:
    assert isinstance(
        explain_failure(
            "error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided.\n"
        ),
        LockOutdated,
    )
    network = explain_failure(
        "error: Failed to fetch: `http://127.0.0.1:9/six-1.17.0-py2.py3-none-any.whl`\n"
        "  Caused by: error sending request for url\n  Caused by: Connection refused (os error 111)\n"
    )
    assert isinstance(network, NetworkError)
    assert "127.0.0.1:9" in str(network)
    other = explain_failure("error: something new\n")
    assert isinstance(other, ToolFailed) and "something new" in str(other)


def test_the_offline_build_checks_exports_and_syncs_from_the_fetched_files_only() -> None:
    request = SyncRequest(
        python=Path("/py"),
        groups=("docs",),
        extras=("s3",),
        exclude=("opencontainers",),
        config_file=Path("/b/uv.toml"),
    )
    assert UV.lock_check_argv(request) == [
        "/opt/uv",
        "lock",
        "--check",
        "--offline",
        "--python",
        "/py",
        "--config-file",
        "/b/uv.toml",
    ]
    assert UV.export_argv(request, Path("/b/out.txt")) == [
        "/opt/uv",
        "export",
        "--frozen",
        "--offline",
        "--no-emit-project",
        "--no-emit-workspace",
        "--no-header",
        "--no-annotate",
        "--output-file",
        "/b/out.txt",
        "--no-dev",
        "--group",
        "docs",
        "--extra",
        "s3",
        "--no-emit-package",
        "opencontainers",
    ]
    offline = OfflineInstall(Path("/b/fetched"), Path("/b/offline.toml"), Path("/b/bc.txt"), True)
    assert UV.pip_sync_argv(Path("/b/venv/bin/python"), Path("/b/req.txt"), offline) == [
        "/opt/uv",
        "pip",
        "sync",
        "--python",
        "/b/venv/bin/python",
        "--offline",
        "--no-index",
        "--find-links",
        "/b/fetched",
        "--config-file",
        "/b/offline.toml",
        "--build-constraints",
        "/b/bc.txt",
        "--require-build-hashes",
        "--preview-features",
        "build-dependency-hashes",
        "/b/req.txt",
    ]


UNFETCHED_BUILD_DEPENDENCY = """\
   Building lbt-gamma @ file:///tmp/exp/gco
error: Failed to build `lbt-gamma @ file:///tmp/exp/gco`
  cause: Failed to resolve requirements from `build-system.requires`
  cause: No solution found when resolving: `setuptools>=68`
  cause: Because setuptools was not found in the provided package locations and you require setuptools==80.9.0, we can conclude that your requirements are unsatisfiable.
"""


def test_a_build_dependency_that_was_not_fetched_names_lock_build() -> None:
    from lockbox.errors import BuildPinsMissing

    error = explain_failure(UNFETCHED_BUILD_DEPENDENCY)
    assert isinstance(error, BuildPinsMissing)
    assert "setuptools of lbt-gamma was not fetched" in str(error)
    assert "no network" in str(error) and "lockbox lock-build" in str(error)


def test_an_offline_lock_check_that_must_resolve_means_a_stale_lock() -> None:
    output = (
        "error: No solution found when resolving dependencies\n  cause: Because "
        "lbt-alpha was not found in the cache and your project depends on lbt-alpha, "
        "we can conclude that your project's requirements are unsatisfiable.\n\nhint: "
        "Packages were unavailable because the network was disabled.\n"
    )
    assert isinstance(explain_lock_check(output), LockOutdated)
    assert not isinstance(explain_lock_check("error: something new\n"), LockOutdated)
