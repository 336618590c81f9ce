"""The downloader against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lockbox.deps.download import Download, download_all
from lockbox.errors import DownloadFailed, DownloadGone
from lockbox.progress import Recorder


@dataclass
class Server:
    url: str
    files: dict[str, bytes]
    ranges: bool = True
    delay: float = 0.0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server("", {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append((self.path, self.headers.get("Range")))
                state.active += 1
                state.most_active = max(state.most_active, state.active)
            try:
                time.sleep(state.delay)
                data = state.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                wanted = self.headers.get("Range")
                if wanted and state.ranges:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    data = data[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                with state.lock:
                    state.active -= 1

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def item(server: Server, name: str, data: bytes, *, sha256: str | None = None) -> Download:
    server.files[f"/{name}"] = data
    return Download(
        f"{server.url}/{name}",
        sha256 or hashlib.sha256(data).hexdigest(),
        name,
        len(data),
        f"{name} (test)",
    )


def test_files_arrive_verified_under_their_names(server: Server, tmp_path: Path) -> None:
    items = [item(server, f"f{n}.whl", bytes([n]) * 1000) for n in range(3)]
    progress = Recorder()
    found = download_all(items, tmp_path, progress)
    assert {sha: path.read_bytes() for sha, path in found.items()} == {
        i.sha256: bytes([n]) * 1000 for n, i in enumerate(items)
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.whl", "f1.whl", "f2.whl"]
    assert ("info", "fetching 3 files (0.0 MB); 0 of 3 were already there") in progress.messages


def test_a_hash_mismatch_fails_naming_both_hashes_and_leaves_no_file(
    server: Server, tmp_path: Path
) -> None:
    bad = item(server, "bad.tar.gz", b"served bytes", sha256="ab" * 32)
    good = item(server, "good.whl", b"good")
    with pytest.raises(DownloadFailed) as caught:
        download_all([bad, good], tmp_path)
    message = str(caught.value)
    assert "bad.tar.gz" in message and "expected sha256:" + "ab" * 32 in message
    assert "got sha256:" + hashlib.sha256(b"served bytes").hexdigest() in message
    assert [failed.name for failed, _ in caught.value.failures] == ["bad.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.whl"]


def test_every_404_is_collected_into_one_error(server: Server, tmp_path: Path) -> None:
    items = [
        Download(
            f"{server.url}/missing-{n}.whl", f"{n:064x}", f"missing-{n}.whl", label=f"missing {n}"
        )
        for n in range(3)
    ]
    present = item(server, "here.whl", b"here")
    with pytest.raises(DownloadGone) as caught:
        download_all([*items, present], tmp_path)
    assert sorted(gone.name for gone in caught.value.items) == [i.name for i in items]
    for gone in items:
        assert f"{gone.label}: {gone.url}" in str(caught.value)
    assert (tmp_path / "here.whl").read_bytes() == b"here"


def test_a_network_failure_is_a_download_failure(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = Download(f"http://127.0.0.1:{port}/x.whl", "00" * 32, "x.whl")
    with pytest.raises(DownloadFailed, match="could not download 1 files"):
        download_all([unreachable], tmp_path)


def test_a_kept_partial_file_is_continued_with_a_range_request(
    server: Server, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 400
    wanted = item(server, "big.whl", data)
    (tmp_path / f".{wanted.sha256[:16]}-big.whl.part").write_bytes(data[:30000])
    download_all([wanted], tmp_path)
    assert (tmp_path / "big.whl").read_bytes() == data
    assert server.requests == [("/big.whl", "bytes=30000-")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.whl"]


def test_without_range_support_a_partial_file_is_started_again(
    server: Server, tmp_path: Path
) -> None:
    server.ranges = False
    data = b"abc" * 5000
    wanted = item(server, "big.whl", data)
    (tmp_path / f".{wanted.sha256[:16]}-big.whl.part").write_bytes(b"abc" * 100)
    download_all([wanted], tmp_path)
    assert (tmp_path / "big.whl").read_bytes() == data


def test_a_wrong_kept_part_is_fetched_whole_again(server: Server, tmp_path: Path) -> None:
    data = b"right bytes " * 1000
    wanted = item(server, "big.whl", data)
    (tmp_path / f".{wanted.sha256[:16]}-big.whl.part").write_bytes(b"WRONG" * 10)
    download_all([wanted], tmp_path)
    assert (tmp_path / "big.whl").read_bytes() == data
    assert server.requests == [("/big.whl", "bytes=50-"), ("/big.whl", None)]


def test_a_file_already_there_is_not_fetched_and_a_changed_one_is(
    server: Server, tmp_path: Path
) -> None:
    kept = item(server, "kept.whl", b"kept")
    changed = item(server, "changed.whl", b"original")
    (tmp_path / "kept.whl").write_bytes(b"kept")
    (tmp_path / "changed.whl").write_bytes(b"tampered")
    progress = Recorder()
    found = download_all([kept, changed], tmp_path, progress)
    assert server.requests == [("/changed.whl", None)]
    assert found[changed.sha256].read_bytes() == b"original"
    assert ("info", "fetching 1 files (0.0 MB); 1 of 2 were already there") in progress.messages


def test_downloads_run_in_parallel(server: Server, tmp_path: Path) -> None:
    server.delay = 0.3
    items = [item(server, f"p{n}.whl", b"x" * n) for n in range(1, 9)]
    started = time.monotonic()
    download_all(items, tmp_path, jobs=8)
    assert server.most_active >= 4
    assert time.monotonic() - started < 8 * 0.3


def test_a_name_that_is_not_a_file_name_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match="not a file name"):
        download_all([Download(f"{server.url}/x", "00" * 32, "../escape.whl")], tmp_path)
    assert not (tmp_path.parent / "escape.whl").exists()
