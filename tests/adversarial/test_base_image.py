"""A hostile ``--base``: an OCI layout or archive whose documents, digests and blobs lie.

Whatever the base holds, ``lockbox image --base`` ends with the image of the documents the
base's index names, their blobs matching their digests, or with a precise error; it never
reads a file outside the base's ``blobs/sha256/`` nor writes one outside its work directory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockbox.image.oci import ImageError, read_base

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def lockbox(*args: str | Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockbox", "--store", str(store), *map(str, args)],
        capture_output=True,
        text=True,
    )


def _layer_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/base-marker")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"base\n"))
    return gzip.compress(raw.getvalue(), mtime=0)


class Base:
    """A small, valid OCI layout written by hand, for tests to spoil."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.layer_data = _layer_bytes()
        self.layer = self.blob(self.layer_data, LAYER)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(self.layer_data)).hexdigest()
        self.config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["FROM_BASE=yes"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        self.manifest: dict[str, object] = {}
        self.write()

    def blob(self, data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def write(self, layers: list[dict[str, object]] | None = None) -> None:
        """(Re)write config, manifest and index, the manifest with ``layers``."""
        config = self.blob(json.dumps(self.config).encode(), CONFIG)
        self.manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": layers if layers is not None else [self.layer],
        }
        self.write_index(self.blob(json.dumps(self.manifest).encode(), MANIFEST))

    def write_index(self, *manifests: dict[str, object]) -> None:
        index = {
            "schemaVersion": 2,
            "manifests": [
                {**m, "annotations": {"org.opencontainers.image.ref.name": "v1"}} for m in manifests
            ],
        }
        (self.root / "index.json").write_text(json.dumps(index))

    def archive(
        self, path: Path, replace: Callable[[tarfile.TarInfo], tarfile.TarInfo] | None = None
    ) -> Path:
        with tarfile.open(path, "w") as tar:
            for name in (
                "oci-layout",
                "index.json",
                "blobs",
                "blobs/sha256",
                *(f"blobs/sha256/{n}" for n in sorted(os.listdir(self.root / "blobs" / "sha256"))),
            ):
                info = tar.gettarinfo(self.root / name, name)
                if replace is not None:
                    info = replace(info)
                if info.isreg():
                    with open(self.root / name, "rb") as file:
                        tar.addfile(info, file)
                else:
                    tar.addfile(info)
        return path


@pytest.fixture
def base(tmp_path: Path) -> Base:
    return Base(tmp_path / "base")


def refused(reference: Path | str, *words: str) -> str:
    with pytest.raises(ImageError) as caught:
        read_base(str(reference))
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_the_valid_base_is_read(base: Base) -> None:
    image = read_base(f"{base.root}:v1")
    assert [layer.digest for layer in image.layers] == [base.layer["digest"]]
    assert image.config["Env"] == ["FROM_BASE=yes"]


def test_a_digest_that_climbs_out_of_the_blobs_is_refused(base: Base) -> None:
    climbing = {**base.layer, "digest": "sha256:../../../../etc/passwd"}
    base.write([climbing])
    refused(base.root, "is not a digest", "sha256: and 64 lowercase")


@pytest.mark.parametrize("digest", ["sha512:" + "a" * 128, "md5:" + "0" * 32])
def test_another_algorithm_is_named(base: Base, digest: str) -> None:
    base.write([{**base.layer, "digest": digest}])
    refused(base.root, "lockbox reads only sha256 digests", digest.split(":", 1)[0])


def test_uppercase_or_short_digests_are_refused(base: Base) -> None:
    hexdigits = str(base.layer["digest"]).split(":")[1]
    for digest in (
        f"sha256:{hexdigits.upper()}",
        f"sha256:{hexdigits[:-1]}",
        f"sha256:{hexdigits}\n",
    ):
        base.write([{**base.layer, "digest": digest}])
        refused(base.root, "is not a digest")


def test_a_blob_that_is_a_symbolic_link_is_refused(base: Base, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(base.layer_data)  # even with the bytes its digest names
    path = base.root / "blobs" / "sha256" / str(base.layer["digest"]).split(":")[1]
    path.unlink()
    path.symlink_to(secret)
    refused(base.root, "symbolic link")


def test_a_symlinked_blobs_directory_is_refused(base: Base, tmp_path: Path) -> None:
    (base.root / "blobs").rename(tmp_path / "elsewhere")
    (base.root / "blobs").symlink_to(tmp_path / "elsewhere")
    refused(base.root, "symbolic link")


def test_a_symlinked_index_is_refused(base: Base, tmp_path: Path) -> None:
    (base.root / "index.json").rename(tmp_path / "index.json")
    (base.root / "index.json").symlink_to(tmp_path / "index.json")
    refused(base.root, "symbolic link")


def test_a_fifo_for_a_blob_does_not_hang(base: Base) -> None:
    path = base.root / "blobs" / "sha256" / str(base.layer["digest"]).split(":")[1]
    path.unlink()
    os.mkfifo(path)
    refused(base.root, "not a regular file")


def test_a_document_whose_bytes_do_not_match_its_digest_is_refused(base: Base) -> None:
    config = base.manifest["config"]
    assert isinstance(config, dict)
    path = base.root / "blobs" / "sha256" / config["digest"].split(":")[1]
    data = path.read_bytes()
    path.write_bytes(data.replace(b"FROM_BASE=yes", b"FROM_BASE=no!"))
    refused(base.root, "does not match its digest")
    path.write_bytes(data + b" ")
    refused(base.root, "larger than")


def test_a_layer_of_another_size_is_refused_before_the_build(base: Base) -> None:
    base.write([{**base.layer, "size": int(base.layer["size"]) + 1}])  # type: ignore[call-overload]
    refused(base.root, "has", "its descriptor says")


def test_media_types_are_checked(base: Base) -> None:
    base.write([{**base.layer, "mediaType": "application/x-evil"}])
    refused(base.root, "media type", "application/x-evil")
    base.write()
    config = base.manifest["config"]
    base.manifest["config"] = {**config, "mediaType": LAYER}  # type: ignore[dict-item]
    base.write_index(base.blob(json.dumps(base.manifest).encode(), MANIFEST))
    refused(base.root, "media type")


def test_a_config_naming_fewer_layers_is_refused(base: Base) -> None:
    base.config["rootfs"] = {"type": "layers", "diff_ids": []}
    base.write()
    refused(base.root, "names 0 layers, its manifest 1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"manifests": 5}',
        '{"manifests": [5]}',
        '{"manifests": [{"digest": 5}]}',
        "[" * 100000,
    ],
)
def test_garbage_index_json_is_an_image_error(base: Base, text: str) -> None:
    (base.root / "index.json").write_text(text)
    refused(base.root, "index.json")


def test_an_archive_whose_blob_is_a_link_member_is_refused(base: Base, tmp_path: Path) -> None:
    digest = str(base.layer["digest"]).split(":")[1]

    def link(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.name.endswith(digest):
            info.type, info.linkname, info.size = tarfile.SYMTYPE, "/etc/shadow", 0
        return info

    refused(base.archive(tmp_path / "base.tar", link), "not a regular file")
    assert (
        read_base(str(base.archive(tmp_path / "good.tar"))).layers[0].digest == f"sha256:{digest}"
    )


def test_a_truncated_archive_is_an_image_error(base: Base, tmp_path: Path) -> None:
    archive = base.archive(tmp_path / "base.tar")
    archive.write_bytes(archive.read_bytes()[:1536])
    refused(archive)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 2**70)
    | st.text(max_size=8)
    | st.sampled_from(["sha256:" + "0" * 64, "sha256:../x", MANIFEST, CONFIG, LAYER]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "manifests",
                    "digest",
                    "size",
                    "mediaType",
                    "config",
                    "layers",
                    "rootfs",
                    "diff_ids",
                    "annotations",
                    "Env",
                    "Labels",
                    "platform",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=JSON)
def test_any_index_json_gives_a_base_or_an_image_error(base: Base, document: object) -> None:
    (base.root / "index.json").write_text(json.dumps(document))
    with contextlib.suppress(ImageError):
        read_base(str(base.root))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=JSON)
def test_any_manifest_gives_a_base_or_an_image_error(base: Base, document: object) -> None:
    base.write_index(base.blob(json.dumps(document).encode(), MANIFEST))
    with contextlib.suppress(ImageError):
        read_base(str(base.root))


# Through the command line, over a small project built once for the module.


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    project = root / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = []\n\n[tool.lockbox]\npython = "3.12"\n'
    )
    (project / "uv.lock").write_text(
        'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n\n[[package]]\nname = "demo"\n'
        'version = "0.1.0"\nsource = { virtual = "." }\n'
    )
    store = root / "store"
    built = lockbox("build", project, store=store)
    assert built.returncode == 0, built.stderr
    return project, store


def test_a_climbing_digest_writes_nothing_outside(demo: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = demo
    # The layer's digest climbs from the base's blobs to a payload beside the base and, from
    # the image's work directory, to the directory above tmp_path/t.
    top = tmp_path / "t"
    base = Base(top / "a" / "b" / "base")
    (top / "pwned").write_bytes(base.layer_data)
    base.write([{**base.layer, "digest": "sha256:../../../../../pwned"}])
    result = lockbox(
        "image", project, "--base", base.root, "--layout", top / "out" / "layout", store=store
    )
    assert result.returncode == 1, result.stderr
    assert "is not a digest" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_a_layer_whose_bytes_lie_is_refused_and_leaves_nothing(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    project, store = demo
    base = Base(tmp_path / "base")
    path = base.root / "blobs" / "sha256" / str(base.layer["digest"]).split(":")[1]
    path.write_bytes(bytes(len(base.layer_data)))
    result = lockbox(
        "image", project, "--base", base.root, "--layout", tmp_path / "out" / "layout", store=store
    )
    assert result.returncode == 1, result.stderr
    assert "does not match its digest" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path / "out") == []


def test_a_garbage_index_through_the_command_line(demo: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = demo
    base = Base(tmp_path / "base")
    (base.root / "index.json").write_bytes(b"\xff\xfe garbage")
    result = lockbox("image", project, "--base", base.root, "-o", tmp_path / "x.tar", store=store)
    assert result.returncode == 1
    assert "index.json is not JSON" in result.stderr and "Traceback" not in result.stderr


def test_a_valid_base_goes_under_the_closure(demo: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = demo
    base = Base(tmp_path / "base")
    result = lockbox(
        "image", project, "--base", f"{base.root}:v1", "--layout", tmp_path / "out", store=store
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((tmp_path / "out" / "blobs" / "sha256" / digest).read_bytes())
    assert manifest["layers"][0]["digest"] == base.layer["digest"]
    copied = tmp_path / "out" / "blobs" / "sha256" / str(base.layer["digest"]).split(":")[1]
    assert copied.read_bytes() == base.layer_data
